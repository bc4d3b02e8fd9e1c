package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
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
	// Hangup, when set, delivers SIGHUP to serve, which reloads its
	// settings; nil never delivers.
	Hangup <-chan os.Signal
}

const mainUsage = `siot: a replication engine for IoT systems.

Usage:
  siot [--server URL] [--creds FILE] [--tls-ca FILE] [--timeout D] [--json] <command> [flags] [arguments]
  siot --version
  siot help <command>

Commands:
  serve       run an instance: NATS server, store, links, local API
  status      print a running server's status and links (--watch: live)
  node        add, remove, move and list nodes (node add|rm|mv|ls)
  set         write points of a node: siot set NODE TYPE[.KEY]=VALUE...
  get         print a node's points
  watch       print changes as they arrive, with their origin
  history     print the values a point took, or per step their min/max/mean (--step)
  rule        add and list rules: conditions on points, and what to do then (rule add|ls)
  import      write point records (JSON Lines) into a running server
  export      print a running server's points as JSON Lines
  verify      check a store: a stopped server's data directory, or --online a running server's
  device      provision and revoke devices (device add|rm)
  user        add and revoke users (user add|rm)
  peer        create and revoke peer credentials (peer add|rm)
  login       sign in as a user: a short-lived credential
  version     print the version of this build

Every command but serve, verify (unless --online) and version talks to a
running server: --server URL (default nats://127.0.0.1:4222, or the
SIOT_SERVER environment variable), --creds FILE (env SIOT_CREDS; default
./siot-data/admin.creds when it exists: servers refuse anonymous
clients), --tls-ca FILE for a server with TLS, and --timeout (how long
to wait for each reply).
Every command but serve (--log-format json) and export (JSON Lines
always) takes --json for output a program can read. The client flags and
--json may also come before the command ("siot --server URL status"),
for the commands that have them; an unknown flag there is a usage error.
Flags may come before or after the arguments.

Run "siot <command> --help" or "siot help <command>" for a command's flags
and examples; "siot --version" is "siot version".
Exit status: 0 on success (and when watch or status --watch are
interrupted), 1 on an error, 2 on a usage error.
`

// command is one subcommand. flags defines its flags on a flag set and
// usage returns its help text, so a test can check one against the other
// without running anything; run runs it with the arguments that remain.
type command interface {
	usage() string
	flags(fs *flag.FlagSet)
	run(ctx context.Context, args []string) error
}

// commandNames lists every command as it is typed, sub-commands included.
var commandNames = []string{
	"serve", "status", "node add", "node rm", "node mv", "node ls", "set", "get", "watch", "history",
	"rule add", "rule ls", "import", "export", "device add", "device rm", "user add", "user rm", "peer add", "peer rm",
	"login", "version", "verify",
}

// groups are the commands that take a sub-command, with their usage.
var groups = map[string]string{"node": nodeUsage, "rule": ruleUsage, "device": deviceUsage, "user": userUsage, "peer": peerUsage}

const deviceUsage = `Usage: siot device add|rm ...

  device add   provision a device: its node and a credential file
  device rm    revoke a device's credentials

Run "siot device add --help" for its flags and examples.
`

const userUsage = `Usage: siot user add|rm ...

  user add     add a user who signs in with an email address and a password
  user rm      revoke a user

Run "siot user add --help" for its flags and examples.
`

const peerUsage = `Usage: siot peer add|rm ...

  peer add     create a credential another instance links as a peer with
  peer rm      revoke a peer credential

Run "siot peer add --help" for its flags and examples.
`

// command returns the command called name, or nil.
func (m *Main) command(name string) command {
	cc := clientCmd{m: m}
	switch name {
	case "serve":
		return &serveCmd{m: m}
	case "status":
		return &statusCmd{clientCmd: cc}
	case "import":
		return &importCmd{m: m}
	case "export":
		return &exportCmd{m: m}
	case "version":
		return &versionCmd{m: m}
	case "node add":
		return &nodeAddCmd{clientCmd: cc}
	case "node rm":
		return &nodeRmCmd{clientCmd: cc}
	case "node mv":
		return &nodeMvCmd{clientCmd: cc}
	case "node ls":
		return &nodeLsCmd{clientCmd: cc}
	case "set":
		return &setCmd{clientCmd: cc}
	case "get":
		return &getCmd{clientCmd: cc}
	case "watch":
		return &watchCmd{clientCmd: cc}
	case "history":
		return &historyCmd{clientCmd: cc}
	case "rule add":
		return &ruleAddCmd{clientCmd: cc}
	case "rule ls":
		return &ruleLsCmd{clientCmd: cc}
	case "device add":
		return &deviceAddCmd{clientCmd: cc}
	case "device rm":
		return &keyRmCmd{clientCmd: cc, what: "device"}
	case "peer add":
		return &peerAddCmd{clientCmd: cc}
	case "peer rm":
		return &keyRmCmd{clientCmd: cc, what: "peer"}
	case "user add":
		return &userAddCmd{clientCmd: cc}
	case "user rm":
		return &userRmCmd{clientCmd: cc}
	case "login":
		return &loginCmd{m: m}
	case "verify":
		return &verifyCmd{m: m}
	}
	return nil
}

// newFlagSet returns c's flag set, its flags bound to c's fields.
func newFlagSet(name string, c command) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c.flags(fs)
	return fs
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "-help" || arg == "help"
}

// globalFlags are the flags "siot" takes before the command name; each is
// handed to the command, which must have it ("siot --server X status" is
// "siot status --server X"). The bool ones take no value.
var globalFlags = map[string]bool{"server": false, "creds": false, "tls-ca": false, "timeout": false, "json": true}

// splitGlobal splits the flags before the command name from args: it
// returns them (as "--name", "value" pairs or lone "--json"), the
// remaining arguments, and whether --version was given. An unknown flag
// or one without its value is a usage error.
func splitGlobal(args []string) (global, rest []string, version bool, err error) {
	for len(args) > 0 && strings.HasPrefix(args[0], "-") && args[0] != "-" {
		a := args[0]
		if isHelp(a) {
			return global, args, version, nil
		}
		if a == "--" {
			return global, args[1:], version, nil
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "version" && !hasVal {
			version, args = true, args[1:]
			continue
		}
		isBool, ok := globalFlags[name]
		switch {
		case !ok:
			return nil, nil, false, &UsageError{Msg: fmt.Sprintf("unknown flag %s before the command (siot takes --server, --creds, --tls-ca, --timeout, --json and --version there)", a)}
		case isBool:
			global, args = append(global, a), args[1:]
		case hasVal:
			global, args = append(global, "--"+name, val), args[1:]
		case len(args) < 2:
			return nil, nil, false, &UsageError{Msg: fmt.Sprintf("flag %s needs a value", a)}
		default:
			global, args = append(global, "--"+name, args[1]), args[2:]
		}
	}
	return global, args, version, nil
}

// Run runs the command line args (without the program name).
func (m *Main) Run(ctx context.Context, args []string) error {
	global, args, version, err := splitGlobal(args)
	if err != nil {
		fmt.Fprint(m.Stderr, mainUsage)
		return err
	}
	if version {
		args = append([]string{"version"}, args...)
	}
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, mainUsage)
		return &UsageError{Msg: "no command given"}
	}
	name, rest := args[0], args[1:]
	if name == "help" && len(rest) > 0 && !isHelp(rest[0]) {
		// "siot help CMD [SUB]" is "siot CMD [SUB] --help".
		name, rest = rest[0], append(rest[1:len(rest):len(rest)], "--help")
	} else if isHelp(name) {
		fmt.Fprint(m.Stdout, mainUsage)
		return nil
	}
	group := ""
	if gu, ok := groups[name]; ok {
		group = name
		if len(rest) == 0 || isHelp(rest[0]) {
			if len(rest) == 0 {
				fmt.Fprint(m.Stderr, gu)
				return &UsageError{Msg: name + ": no sub-command given"}
			}
			fmt.Fprint(m.Stdout, gu)
			return nil
		}
		name, rest = name+" "+rest[0], rest[1:]
	}
	c := m.command(name)
	if c == nil {
		if group != "" {
			fmt.Fprint(m.Stderr, groups[group])
		} else {
			fmt.Fprint(m.Stderr, mainUsage)
		}
		return &UsageError{Msg: fmt.Sprintf("unknown command %q", name)}
	}
	fs := newFlagSet(name, c)
	if name == "serve" && len(global) > 0 {
		// serve's --creds and --tls-ca are its links', not a client's.
		return &UsageError{Msg: "siot serve takes its flags after \"serve\", not before"}
	}
	for i := 0; i < len(global); i++ {
		f, _, _ := strings.Cut(strings.TrimLeft(global[i], "-"), "=")
		if fs.Lookup(f) == nil {
			return &UsageError{Msg: fmt.Sprintf("siot %s has no flag --%s (given before the command)", name, f)}
		}
		if !globalFlags[f] {
			i++ // its value
		}
	}
	fs.Usage = func() {
		fmt.Fprint(m.Stdout, c.usage())
		if !strings.HasSuffix(c.usage(), "Flags:\n") {
			fmt.Fprint(m.Stdout, "\nFlags:\n")
		}
		fs.PrintDefaults()
	}
	// The global flags come first: the command's own, after, win.
	pos, err := parseArgs(fs, append(global, rest...), m.Stdout)
	if err == errHelp {
		return nil
	}
	if err != nil {
		return err
	}
	if err := c.run(ctx, pos); err != nil {
		return named(name, err)
	}
	return nil
}

// named prefixes err with the command's name, unless it is a usage error
// or names it already: every error a command returns says which
// operation failed.
func named(name string, err error) error {
	var ue *UsageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), name+":") {
		return err
	}
	return fmt.Errorf("%s: %w", name, err)
}

// parseArgs parses args with fs, allowing flags after the arguments
// ("siot get NODE --json"); "--" ends the flags. It returns the arguments,
// or errHelp when --help printed the usage.
func parseArgs(fs *flag.FlagSet, args []string, out io.Writer) ([]string, error) {
	fs.SetOutput(out)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, &UsageError{Msg: fs.Name() + ": " + err.Error()}
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

var errHelp = errors.New("help printed")

type versionCmd struct {
	m      *Main
	asJSON bool
}

const versionUsage = `Usage: siot version [--json]

Print the version of this build: the version stamped by the release build
(make release), else the module version (or "devel"); the VCS revision it
was built from when known; the Go version; and, for a lean edge build
(make lean), "lean". --json prints them as one object with "lean" true or
false.

Examples:
  siot version
  siot version --json
`

func (c *versionCmd) usage() string { return versionUsage }

func (c *versionCmd) flags(fs *flag.FlagSet) {
	fs.BoolVar(&c.asJSON, "json", false, "print a JSON object")
}

func (c *versionCmd) run(_ context.Context, args []string) error {
	if len(args) > 0 {
		return &UsageError{Msg: "version takes no arguments"}
	}
	v := buildVersion()
	if c.asJSON {
		fmt.Fprintf(c.m.Stdout, "{\"version\":%q,\"revision\":%q,\"go\":%q,\"lean\":%t}\n", v.version, v.revision, v.goVersion, v.lean)
		return nil
	}
	fmt.Fprintf(c.m.Stdout, "siot %s\n", v)
	return nil
}

// stampedVersion is the version a release build stamps into the binary
// with -ldflags "-X main.stampedVersion=v1.2.3" (make release, make lean:
// git describe --tags --always --dirty, or VERSION=); empty otherwise. The
// linker sets it before main runs; nothing assigns it.
var stampedVersion string

type versionInfo struct {
	version, revision, goVersion string
	lean                         bool // built with -tags lean
}

// String is the version as siot version prints it after "siot ", and as
// the "siot serving" log line carries it: "devel (0123456789ab) go1.26.0",
// with " lean" at the end for a lean build.
func (v versionInfo) String() string {
	rev := ""
	if v.revision != "" {
		rev = " (" + v.revision + ")"
	}
	s := v.version + rev + " " + v.goVersion
	if v.lean {
		s += " lean"
	}
	return s
}

func buildVersion() versionInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return versionOf(stampedVersion, bi, leanBuild)
}

// versionOf is the version of a build stamped with stamped (may be empty)
// and described by bi (nil when the binary carries no build information):
// the stamped version wins, then the module version, then "devel".
func versionOf(stamped string, bi *debug.BuildInfo, lean bool) versionInfo {
	v := versionInfo{version: "devel", goVersion: runtime.Version(), lean: lean}
	if bi == nil {
		if s := strings.TrimSpace(stamped); s != "" {
			v.version = s
		}
		return v
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v.version = bi.Main.Version
	}
	if s := strings.TrimSpace(stamped); s != "" {
		v.version = s
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
