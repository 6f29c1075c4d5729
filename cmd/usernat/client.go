package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/usernat/usernat/internal/api"
)

// clientFlags are the flags every client command takes.
type clientFlags struct {
	socket string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.socket, "api-socket", "", "")
}

func (c *clientFlags) client() (*api.Client, error) {
	path := c.socket
	if path == "" {
		var err error
		if path, err = defaultSocket(); err != nil {
			return nil, usageError{err}
		}
	}
	return &api.Client{Path: path}, nil
}

// runConntrack is `usernat conntrack -L|-F`.
func runConntrack(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("usernat conntrack", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var list, flush bool
	fs.BoolVar(&list, "L", false, "")
	fs.BoolVar(&list, "dump", false, "")
	fs.BoolVar(&flush, "F", false, "")
	fs.BoolVar(&flush, "flush", false, "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if list == flush {
		return usagef("give one of -L (list) and -F (flush)")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	if flush {
		n, err := c.ConntrackFlush(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "usernat: connection tracking table has been emptied (%d entries).\n", n)
		return nil
	}
	text, err := c.ConntrackList(ctx)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(stdout, text); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "usernat: %d flow entries have been shown.\n", countLines(text))
	return nil
}

// runNAT is `usernat nat -L`.
func runNAT(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("usernat nat", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var list bool
	fs.BoolVar(&list, "L", false, "")
	fs.Bool("n", true, "") // accepted as iptables -n: addresses are always numeric
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if !list {
		return usagef("give -L to list the rules")
	}
	return printText(ctx, cf, stdout, (*api.Client).NATList)
}

// runFDB is `usernat fdb`.
func runFDB(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("usernat fdb", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 && pos[0] == "show" { // as bridge fdb show
		pos = pos[1:]
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	return printText(ctx, cf, stdout, (*api.Client).FDBList)
}

func printText(ctx context.Context, cf clientFlags, stdout io.Writer, call func(*api.Client, context.Context) (string, error)) error {
	c, err := cf.client()
	if err != nil {
		return err
	}
	text, err := call(c, ctx)
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, text)
	return err
}

// runPublish is `usernat publish SPEC` and `usernat publish --list`.
func runPublish(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("usernat publish", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var list bool
	fs.BoolVar(&list, "l", false, "")
	fs.BoolVar(&list, "list", false, "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case list && len(pos) > 0:
		return usagef("--list takes no SPEC")
	case !list && len(pos) != 1:
		return usagef("want one SPEC: [HOSTADDR:]HOSTPORT[-END]:CONTAINERADDR:CONTAINERPORT[-END][/tcp|/udp]")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	if list {
		fwds, err := c.ListHostFwd(ctx)
		if err != nil {
			return err
		}
		for _, f := range fwds {
			fmt.Fprintf(stdout, "%d\t%s\n", f.ID, formatPublish(f))
		}
		return nil
	}
	f, err := parsePublish(pos[0])
	if err != nil {
		return usageError{err}
	}
	id, err := c.AddHostFwd(ctx, f)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, id)
	return nil
}

// runUnpublish is `usernat unpublish ID`.
func runUnpublish(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("usernat unpublish", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one ID, as usernat publish printed it")
	}
	id, err := strconv.Atoi(pos[0])
	if err != nil || id < 1 {
		return usagef("%q is not an id", pos[0])
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	return c.RemoveHostFwd(ctx, id)
}

// runStats is `usernat stats`.
func runStats(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("usernat stats", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	m, err := c.Stats(ctx)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		fmt.Fprintf(stdout, "%s %d\n", k, m[k])
	}
	return nil
}

func countLines(s string) int {
	n := 0
	for i := range len(s) {
		if s[i] == '\n' {
			n++
		}
	}
	if len(s) > 0 && s[len(s)-1] != '\n' {
		n++
	}
	return n
}
