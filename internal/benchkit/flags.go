package benchkit

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

const (
	maxDuration = time.Minute
	maxRounds   = 10
	maxParallel = 64
)

// Flags are the flags every bench program takes.
type Flags struct {
	Duration time.Duration // of each measurement
	Rounds   int
	Parallel int    // clients opening connections at once, for connections/s
	Usernat  string // the usernat binary; empty builds ./cmd/usernat
	Tags     string // build tags for building it
	JSON     bool   // print JSON instead of tables
	Install  bool   // apt-get install missing tools
}

// Register defines the flags on fs with their defaults. rounds says what
// a round runs ("kernel then usernat"), packages which Debian packages
// -install installs.
func (f *Flags) Register(fs *flag.FlagSet, rounds, packages string) {
	fs.DurationVar(&f.Duration, "duration", 5*time.Second, "length of each measurement (at most 60s)")
	fs.IntVar(&f.Rounds, "rounds", 1, "rounds of "+rounds+" (at most 10)")
	fs.IntVar(&f.Parallel, "parallel", 4, "concurrent clients opening connections in the connections/s measurement")
	fs.StringVar(&f.Usernat, "usernat", "", "usernat binary (default: go build ./cmd/usernat into a temporary directory)")
	fs.StringVar(&f.Tags, "tags", "", "build tags for building ./cmd/usernat (go build -tags)")
	fs.BoolVar(&f.JSON, "json", false, "print the results as JSON instead of tables")
	fs.BoolVar(&f.Install, "install", true, "apt-get install the Debian packages of missing tools ("+packages+")")
}

// Check says what is wrong with the values, the first problem only.
func (f *Flags) Check() error {
	switch {
	case f.Duration <= 0 || f.Duration > maxDuration:
		return errors.New("-duration must be in (0, 60s]")
	case f.Rounds < 1 || f.Rounds > maxRounds:
		return errors.New("-rounds must be in [1, 10]")
	case f.Parallel < 1 || f.Parallel > maxParallel:
		return fmt.Errorf("-parallel must be in [1, %d]", maxParallel)
	}
	return nil
}
