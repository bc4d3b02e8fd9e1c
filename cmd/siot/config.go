package main

// serve's settings come from three sources: the command line, the
// environment and a configuration file (--config). A flag beats its
// environment variable, which beats the file; a flag set by none keeps its
// default. The file and the environment name the same settings as the
// flags: a flag --min-free is "min-free" in the file and SIOT_MIN_FREE in
// the environment (but --creds is SIOT_LINK_CREDS: SIOT_CREDS is the client
// commands' credential file).

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/bits"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// serveEnv returns the environment variable of serve's flag name.
func serveEnv(name string) string {
	if name == "creds" {
		return "SIOT_LINK_CREDS" // SIOT_CREDS is the client commands' --creds
	}
	return "SIOT_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// isRepeatable reports whether fl may be given more than once.
func isRepeatable(fl *flag.Flag) bool {
	_, ok := fl.Value.(*stringList)
	return ok
}

// isBoolFlag reports whether fl is a boolean flag (given without a value).
func isBoolFlag(fl *flag.Flag) bool {
	b, ok := fl.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// configSetting is one "name = value" line of a configuration file.
type configSetting struct {
	line        int
	name, value string
}

// parseConfig parses a configuration file's text; path only names it in
// errors. Each line is blank, a comment (its first non-blank character is
// #), or "name = value": name is a flag of fs without its dashes, value
// the rest of the line with surrounding blanks removed, or a Go-quoted
// string ("" for an empty value). A boolean flag may be given by its name
// alone (true). A repeatable flag may be repeated; any other may not.
// Names are checked against fs, values are not (applyConfig sets them).
func parseConfig(path string, data []byte, fs *flag.FlagSet) ([]configSetting, error) {
	var out []configSetting
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, hasValue := strings.Cut(line, "=")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		where := fmt.Sprintf("%s:%d", path, n)
		name = strings.TrimPrefix(name, "--")
		if name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("%s: %q: want name = value", where, line)
		}
		fl := fs.Lookup(name)
		switch {
		case fl == nil:
			return nil, fmt.Errorf("%s: unknown setting %q (the settings are serve's flags without their dashes)", where, name)
		case name == "config":
			return nil, fmt.Errorf("%s: a configuration file cannot name another", where)
		case !hasValue && isBoolFlag(fl):
			value = "true"
		case !hasValue:
			return nil, fmt.Errorf("%s: %q: want %s = value", where, line, name)
		}
		if strings.HasPrefix(value, `"`) {
			v, err := strconv.Unquote(value)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: bad quoted value %s", where, name, value)
			}
			value = v
		}
		if prev, ok := seen[name]; ok && !isRepeatable(fl) {
			return nil, fmt.Errorf("%s: %s is already set on line %d (only repeatable settings may be repeated)", where, name, prev)
		}
		seen[name] = n
		out = append(out, configSetting{line: n, name: name, value: value})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// applySources sets every flag of fs that is not in cmdline from the
// environment (getenv) or else from the settings of the file at path.
// An empty variable counts as unset. A repeatable flag's variable holds
// its values separated by blanks (each one what the flag takes); in the
// file it is repeated. Errors name the variable or the file and line; none
// is a *UsageError, the caller decides.
func applySources(fs *flag.FlagSet, cmdline map[string]bool, getenv func(string) string, path string, file []configSetting) error {
	fromEnv := map[string]bool{}
	var err error
	fs.VisitAll(func(fl *flag.Flag) {
		if err != nil || cmdline[fl.Name] || fl.Name == "config" {
			return
		}
		env := serveEnv(fl.Name)
		v := getenv(env)
		if v == "" {
			return
		}
		fromEnv[fl.Name] = true
		values := []string{v}
		if isRepeatable(fl) {
			values = strings.Fields(v)
		}
		for _, v := range values {
			if e := fl.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%s: %v", env, v, e)
				return
			}
		}
	})
	if err != nil {
		return err
	}
	for _, s := range file {
		if cmdline[s.name] || fromEnv[s.name] {
			continue
		}
		if e := fs.Lookup(s.name).Value.Set(s.value); e != nil {
			return fmt.Errorf("%s:%d: %s = %s: %v", path, s.line, s.name, s.value, e)
		}
	}
	return nil
}

// readConfig reads and parses the configuration file at path ("" for
// none); origin names where path came from, for an error.
func readConfig(origin, path string, fs *flag.FlagSet) ([]configSetting, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", origin, err)
	}
	return parseConfig(path, b, fs)
}

// byteSize is a size flag: a number of bytes, with an optional unit.
type byteSize uint64

var sizeUnits = []struct {
	name string
	mult uint64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3}, {"B", 1},
}

// parseSize parses a byte size: a whole number, optionally followed (with
// or without a space) by a unit: B; KiB, MiB, GiB, TiB (powers of 1024);
// kB, MB, GB, TB (powers of 1000). Units are matched without regard to
// case. A unit without its B ("512k", "1G") is refused as ambiguous, as
// are fractions, signs and sizes over 2^64-1 bytes.
func parseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	switch {
	case strings.HasPrefix(t, "-"):
		return 0, fmt.Errorf("size %q: negative", s)
	case num == "":
		return 0, fmt.Errorf("size %q: want a whole number of bytes, with an optional unit (256MiB, 1GB)", s)
	case strings.HasPrefix(unit, "."):
		return 0, fmt.Errorf("size %q: want a whole number (use a smaller unit: 1536MiB, not 1.5GiB)", s)
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: over %d bytes", s, uint64(math.MaxUint64))
	}
	if unit == "" {
		return n, nil
	}
	for _, u := range sizeUnits {
		if strings.EqualFold(unit, u.name) {
			hi, lo := bits.Mul64(n, u.mult)
			if hi != 0 {
				return 0, fmt.Errorf("size %q: over %d bytes", s, uint64(math.MaxUint64))
			}
			return lo, nil
		}
	}
	switch strings.ToLower(unit) {
	case "k", "m", "g", "t", "ki", "mi", "gi", "ti":
		return 0, fmt.Errorf("size %q: ambiguous unit %q: write %sB (powers of 1000) or %siB (powers of 1024)",
			s, unit, strings.ToUpper(unit[:1]), strings.ToUpper(unit[:1]))
	}
	return 0, fmt.Errorf("size %q: unknown unit %q: want B, KiB, MiB, GiB, TiB, kB, MB, GB or TB", s, unit)
}

// formatSize writes n with the largest unit that divides it: binary units
// first, then decimal ones, else bytes ("256MiB", "1GB", "1000B").
func formatSize(n uint64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range sizeUnits {
		if n%u.mult == 0 {
			return strconv.FormatUint(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}

func (b *byteSize) String() string { return formatSize(uint64(*b)) }

func (b *byteSize) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

// checkHostPort checks that addr is host:port with a numeric port
// (0 to 65535; 0 picks a free one). The host may be empty (every
// interface).
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port", addr)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("%q: bad host %q", addr, host)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: port %q: want a number from 0 to 65535", addr, port)
	}
	return nil
}

// checkRoute checks a --route URL: nats://host:port, without credentials.
func checkRoute(r string) error {
	u, err := url.Parse(r)
	if err != nil || (u.Scheme != "nats" && u.Scheme != "nats-route") || u.User != nil || (u.Path != "" && u.Path != "/") {
		return errors.New("want nats://host:port (the cluster secret signs routes in, never the URL)")
	}
	return checkHostPort(u.Host)
}
