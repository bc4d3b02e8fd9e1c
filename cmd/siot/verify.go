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

	"siot/store"
)

const verifyUsage = `Usage: siot verify [--data DIR] [--json]

Check a stopped server's data directory. Every table the store lists is
read in full and its index and block checksums verified (a damaged file is
named); then every index and digest the store maintains is recomputed from
the points and compared (store.Verify). Exit status 0 with a short summary
(counts) when all is well; 1 when a file is damaged or something does not
match, naming what is wrong; 2 on a usage error. See "Recovery" in
docs/operations.md for what to do then.

verify runs offline only: it refuses a directory a running server holds
(stop the server first). A running server needs no online form for
damage: it checks every table's checksums the same way each time it
starts and refuses to start on a damaged file, and a read that fails on a
table damaged since names it. The recomputation would be safe on a live
store (it reads one snapshot), but it scans every point and holds a
summary of the whole tree in memory (about 100 bytes per node and edge)
on the serving instance, and Badger's memory maps must not be read
directly while it merges and deletes tables; it is not offered as a
request to a running server.

verify opens the store as serve does (Badger may replay its write-ahead
logs into tables) and writes nothing else.

Examples:
  siot verify --data /var/lib/siot
  siot verify --json

Flags:
`

type verifyCmd struct {
	m      *Main
	data   string
	asJSON bool
}

func (c *verifyCmd) usage() string { return verifyUsage }

func (c *verifyCmd) flags(fs *flag.FlagSet) {
	def := "./siot-data"
	if c.m.Getenv != nil && c.m.Getenv("SIOT_DATA") != "" {
		def = c.m.Getenv("SIOT_DATA")
	}
	fs.StringVar(&c.data, "data", def, "data directory (env SIOT_DATA)")
	fs.BoolVar(&c.asJSON, "json", false, "print a JSON object")
}

// verifyReport is what verify prints with --json.
type verifyReport struct {
	OK         bool   `json:"ok"`
	Dir        string `json:"dir"`
	Tables     int    `json:"tables"`
	TableBytes int64  `json:"tableBytes"`
	Registers  int    `json:"registers"`
	Nodes      int    `json:"nodes"`
	Edges      int    `json:"edges"`
	Problems   int    `json:"problems"`
	Error      string `json:"error,omitempty"`
}

func (c *verifyCmd) run(_ context.Context, args []string) error {
	if len(args) > 0 {
		return &UsageError{Msg: "verify takes no arguments"}
	}
	rep := verifyReport{Dir: c.data}
	err := c.check(&rep)
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
	} else if err == nil {
		fmt.Fprintf(c.m.Stdout, "%s: ok: %d tables (%d bytes) checksums verified; %d registers, %d nodes, %d edges; indexes and digests match\n",
			c.data, rep.Tables, rep.TableBytes, rep.Registers, rep.Nodes, rep.Edges)
	}
	return err
}

// check opens the store in c.data and verifies it, filling rep.
func (c *verifyCmd) check(rep *verifyReport) error {
	// Open would create a store in an empty or missing directory.
	if _, err := os.Stat(filepath.Join(c.data, "MANIFEST")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("verify: no store in %s (no MANIFEST)", c.data)
		}
		return fmt.Errorf("verify: %w", err)
	}
	cfg := store.DefaultConfig(c.data)
	cfg.NoBallast = true
	st, err := store.Open(cfg)
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("verify: %s is in use by a running server: stop it first (verify runs offline only; see siot verify --help)", c.data)
	}
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	checked := st.Checked()
	rep.Tables, rep.TableBytes = checked.Tables, checked.Bytes
	sum, verr := st.VerifyCount()
	rep.Registers, rep.Nodes, rep.Edges, rep.Problems = sum.Registers, sum.Nodes, sum.Edges, sum.Problems
	if err := st.Close(); err != nil && verr == nil {
		verr = err
	}
	if verr != nil {
		if errors.Is(verr, store.ErrMismatch) {
			return fmt.Errorf("verify: %s: %d mismatches: %w", c.data, sum.Problems, verr)
		}
		return fmt.Errorf("verify: %s: %w", c.data, verr)
	}
	return nil
}
