package benchkit

import (
	"context"
	"io"
	"log"
	"os"
)

// Report is a program's report: it holds the rounds measured so far and
// prints them as tables.
type Report interface {
	PrintHeader(w io.Writer)
	PrintRound(w io.Writer, i int)
	PrintSummary(w io.Writer)
	// Failed says whether a reference setup failed: the harness, or the
	// machine, not usernat, is then at fault.
	Failed() bool
}

// RunRounds runs f.Rounds rounds — round measures round r and adds it to
// rep — and prints rep to standard output, each round's table as it is
// done and a summary of several, or all of it as JSON at the end with
// f.JSON. It returns the exit status: ExitInterrupt when ctx ended, 1
// when rep failed.
func RunRounds(ctx context.Context, f Flags, rep Report, round func(r int)) int {
	if !f.JSON {
		rep.PrintHeader(os.Stdout)
	}
	for r := range f.Rounds {
		round(r)
		if ctx.Err() != nil {
			log.Print("interrupted; cleaned up")
			return ExitInterrupt
		}
		if !f.JSON {
			rep.PrintRound(os.Stdout, r)
		}
	}
	if f.JSON {
		if err := WriteJSON(os.Stdout, rep); err != nil {
			log.Print(err)
			return 1
		}
	} else if f.Rounds > 1 {
		rep.PrintSummary(os.Stdout)
	}
	if rep.Failed() {
		return 1
	}
	return 0
}
