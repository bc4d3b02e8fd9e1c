package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// UsageError reports a command line that could not be understood. main exits
// with status 2 for it and 1 for every other error.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Main is the siot command. Its fields are the process's streams and
// environment, injected so that tests can drive it.
type Main struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

const mainUsage = `siot: a replication engine for IoT systems.

Usage:
  siot <command> [flags]

Commands:
  serve       run an instance: NATS server, store, links, local API
  status      print a running server's status and links
  import      write point records (JSON Lines) into a running server
  export      print a running server's points as JSON Lines
  version     print the version of this build

Clients reach the server at --server (default nats://127.0.0.1:4222, or the
SIOT_SERVER environment variable).

Run "siot <command> --help" for a command's flags and examples.
Exit status: 0 on success, 1 on an error, 2 on a usage error.
`

// Run runs the command line args (without the program name).
func (m *Main) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, mainUsage)
		return &UsageError{Msg: "no command given"}
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "-h", "--help", "-help", "help":
		fmt.Fprint(m.Stdout, mainUsage)
		return nil
	case "serve":
		return (&serveCmd{m: m}).Run(ctx, rest)
	case "status":
		return (&statusCmd{m: m}).Run(ctx, rest)
	case "import":
		return (&importCmd{m: m}).Run(ctx, rest)
	case "export":
		return (&exportCmd{m: m}).Run(ctx, rest)
	case "version":
		return (&versionCmd{m: m}).Run(ctx, rest)
	default:
		fmt.Fprint(m.Stderr, mainUsage)
		return &UsageError{Msg: fmt.Sprintf("unknown command %q", cmd)}
	}
}

// parseFlags parses args with fs, printing usage on --help. It returns
// errHelp when help was printed, which callers turn into success.
func parseFlags(fs *flag.FlagSet, args []string, out io.Writer) error {
	fs.SetOutput(out)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return &UsageError{Msg: err.Error()}
	}
	return nil
}

var errHelp = errors.New("help printed")

type versionCmd struct{ m *Main }

const versionUsage = `Usage: siot version [--json]

Print the version of this build: the module version (or "devel"), the VCS
revision it was built from when known, and the Go version.

Examples:
  siot version
  siot version --json
`

func (c *versionCmd) Run(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print a JSON object")
	fs.Usage = func() { fmt.Fprint(c.m.Stdout, versionUsage); fs.PrintDefaults() }
	if err := parseFlags(fs, args, c.m.Stdout); err != nil {
		if err == errHelp {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return &UsageError{Msg: "version takes no arguments"}
	}
	v := buildVersion()
	if *asJSON {
		fmt.Fprintf(c.m.Stdout, "{\"version\":%q,\"revision\":%q,\"go\":%q}\n", v.version, v.revision, v.goVersion)
		return nil
	}
	rev := ""
	if v.revision != "" {
		rev = " (" + v.revision + ")"
	}
	fmt.Fprintf(c.m.Stdout, "siot %s%s %s\n", v.version, rev, v.goVersion)
	return nil
}

type versionInfo struct{ version, revision, goVersion string }

func buildVersion() versionInfo {
	v := versionInfo{version: "devel", goVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v.version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.revision = s.Value
			if len(v.revision) > 12 {
				v.revision = v.revision[:12]
			}
		case "vcs.modified":
			if s.Value == "true" && v.revision != "" {
				v.revision += "-dirty"
			}
		}
	}
	v.revision = strings.TrimSpace(v.revision)
	return v
}
