package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/siot-io/siot/store"
	"github.com/siot-io/siot/transport"
)

const verifyUsage = `Usage: siot verify [--data DIR] [--json]
       siot verify --online [--server URL] [--creds FILE] [--json]

Check a store. Every table is read in full and its index and block
checksums verified (a damaged file is named); then every index and digest
the store maintains is recomputed from the points and compared. Exit status
0 with a short summary (counts) when all is well; 1 when a file is damaged
or something does not match, naming what is wrong, or when the check could
not run; 2 on a usage error. See "Recovery" in docs/operations.md for what
to do then.

Offline (the default), verify checks a stopped server's data directory,
--data. It refuses a directory a running server holds (stop the server,
or use --online). It opens the store as serve does (Badger may replay its
write-ahead logs into tables) and writes nothing else.

--online asks the running server at --server to check its own store,
without stopping it: the local administrator only (its admin.creds), one
check at a time. The server reads every table's checksums (holding each
table while it reads it) and recomputes over one snapshot of the points,
so writes and links go on; the recomputation holds a summary of the tree
in the server's memory (about 100 bytes per node and edge) while it runs,
and reads every point. --timeout bounds the wait for its answer (default
here 10m).

Examples:
  siot verify --data /var/lib/siot
  siot verify --json
  siot verify --online --server nats://127.0.0.1:4222 --creds /var/lib/siot/admin.creds

Flags:
`

type verifyCmd struct {
	m      *Main
	data   setString
	asJSON bool
	online bool
	cf     clientFlags
}

// setString is a string flag that records whether it was given.
type setString struct {
	val string
	set bool
}

func (s *setString) String() string { return s.val }
func (s *setString) Set(v string) error {
	s.val, s.set = v, true
	return nil
}

func (c *verifyCmd) usage() string { return verifyUsage }

func (c *verifyCmd) flags(fs *flag.FlagSet) {
	c.data.val = "./siot-data"
	if c.m.Getenv != nil && c.m.Getenv("SIOT_DATA") != "" {
		c.data.val = c.m.Getenv("SIOT_DATA")
	}
	fs.Var(&c.data, "data", "data directory of a stopped server (env SIOT_DATA)")
	fs.BoolVar(&c.asJSON, "json", false, "print a JSON object")
	fs.BoolVar(&c.online, "online", false, "ask the running server at --server to check its store")
	c.cf.register(fs, c.m.Getenv)
	fs.Lookup("timeout").DefValue = "10m0s"
	c.cf.timeout = 10 * time.Minute
}

// verifyReport is what verify prints with --json.
type verifyReport struct {
	OK         bool    `json:"ok"`
	Dir        string  `json:"dir"`
	Tables     int     `json:"tables"`
	TableBytes int64   `json:"tableBytes"`
	Registers  int     `json:"registers"`
	Nodes      int     `json:"nodes"`
	Edges      int     `json:"edges"`
	Problems   int     `json:"problems"`
	Server     string  `json:"server,omitempty"`  // --online: the server asked
	Seconds    float64 `json:"seconds,omitempty"` // --online: how long the server took
	Error      string  `json:"error,omitempty"`
}

func (c *verifyCmd) run(ctx context.Context, args []string) error {
	if len(args) > 0 {
		return &UsageError{Msg: "verify takes no arguments"}
	}
	if c.online && c.data.set {
		return &UsageError{Msg: "verify: --data and --online: a running server checks its own data directory"}
	}
	rep := verifyReport{Dir: c.data.val}
	var err error
	if c.online {
		rep.Dir = ""
		err = c.checkOnline(ctx, &rep)
	} else {
		err = c.check(&rep)
	}
	if err != nil {
		rep.Error = err.Error()
	}
	rep.OK = err == nil
	if c.asJSON {
		b, jerr := json.Marshal(rep)
		if jerr != nil {
			return fmt.Errorf("verify: %w", jerr)
		}
		fmt.Fprintf(c.m.Stdout, "%s\n", b)
	} else if err == nil && c.online {
		fmt.Fprintf(c.m.Stdout, "%s: ok: table checksums verified; %d registers, %d nodes, %d edges; indexes and digests match (%.1fs)\n",
			rep.Server, rep.Registers, rep.Nodes, rep.Edges, rep.Seconds)
	} else if err == nil {
		fmt.Fprintf(c.m.Stdout, "%s: ok: %d tables (%d bytes) checksums verified; %d registers, %d nodes, %d edges; indexes and digests match\n",
			rep.Dir, rep.Tables, rep.TableBytes, rep.Registers, rep.Nodes, rep.Edges)
	}
	return err
}

// checkOnline asks the server at --server to verify its store, filling rep.
func (c *verifyCmd) checkOnline(ctx context.Context, rep *verifyReport) error {
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	rep.Server = cl.URL()
	var res transport.VerifyReply
	if err := cl.Request(ctx, transport.NameVerify, transport.VerifyRequest{}, &res); err != nil {
		return err
	}
	rep.Registers, rep.Nodes, rep.Edges, rep.Problems, rep.Seconds = res.Registers, res.Nodes, res.Edges, res.Problems, res.Seconds
	if res.Error != "" {
		return fmt.Errorf("verify: the server at %s found %d problems: %s", cl.URL(), res.Problems, res.Error)
	}
	return nil
}

// check opens the store in --data and verifies it, filling rep.
func (c *verifyCmd) check(rep *verifyReport) error {
	dir := rep.Dir
	// Open would create a store in an empty or missing directory.
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("verify: no store in %s (no MANIFEST)", dir)
		}
		return fmt.Errorf("verify: %w", err)
	}
	cfg := store.DefaultConfig(dir)
	cfg.NoBallast = true
	st, err := store.Open(cfg)
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("verify: %s is in use by a running server: stop it first, or ask it with siot verify --online", dir)
	}
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	checked := st.Checked()
	rep.Tables, rep.TableBytes = checked.Tables, checked.Bytes
	sum, verr := st.VerifyCount(context.Background())
	rep.Registers, rep.Nodes, rep.Edges, rep.Problems = sum.Registers, sum.Nodes, sum.Edges, sum.Problems
	if err := st.Close(); err != nil && verr == nil {
		verr = err
	}
	if verr != nil {
		if errors.Is(verr, store.ErrMismatch) {
			return fmt.Errorf("verify: %s: %d mismatches: %w", dir, sum.Problems, verr)
		}
		return fmt.Errorf("verify: %s: %w", dir, verr)
	}
	return nil
}
