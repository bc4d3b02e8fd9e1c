package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveWithEnv runs `siot serve args...` in-process like serve, with env
// as its environment and hup as its SIGHUP channel (may be nil).
func serveWithEnv(t *testing.T, env map[string]string, hup <-chan os.Signal, args ...string) *instance {
	t.Helper()
	return runServe(t, env, hup, args...)
}

func writeFile(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// servingData returns the data directory of the "siot serving" line.
func servingData(t *testing.T, inst *instance) string {
	t.Helper()
	recs := logRecords(inst, "siot serving")
	if len(recs) != 1 {
		t.Fatalf("%d serving lines", len(recs))
	}
	return recs[0]["data"].(string)
}

// TestServeSettingsSources: each of the three sources alone sets serve's
// listen, HTTP and data settings, and together a flag beats the
// environment, which beats the file.
func TestServeSettingsSources(t *testing.T) {
	addr := func() string { return "127.0.0.1:" + strconv.Itoa(freePort(t)) }
	t.Run("env", func(t *testing.T) {
		listen, web, data := addr(), addr(), t.TempDir()
		inst := serveWithEnv(t, map[string]string{"SIOT_LISTEN": listen, "SIOT_HTTP": web, "SIOT_DATA": data, "SIOT_MIN_FREE": "0"}, nil)
		if inst.nats != "nats://"+listen || inst.http != web || servingData(t, inst) != data {
			t.Errorf("serving on %s, http %s, data %s; want %s, %s, %s", inst.nats, inst.http, servingData(t, inst), listen, web, data)
		}
	})
	t.Run("file", func(t *testing.T) {
		listen, web, data := addr(), addr(), t.TempDir()
		conf := writeFile(t, filepath.Join(t.TempDir(), "siot.conf"), "# a cloud\n\nlisten = "+listen+"\n  http=\""+web+"\"\ndata = "+data+"\nmin-free = 0\n")
		inst := serveWithEnv(t, nil, nil, "--config", conf)
		if inst.nats != "nats://"+listen || inst.http != web || servingData(t, inst) != data {
			t.Errorf("serving on %s, http %s, data %s; want %s, %s, %s", inst.nats, inst.http, servingData(t, inst), listen, web, data)
		}
	})
	t.Run("precedence", func(t *testing.T) {
		listen, web, data := addr(), addr(), t.TempDir()
		conf := writeFile(t, filepath.Join(t.TempDir(), "siot.conf"),
			"listen = "+listen+"\nhttp = 127.0.0.1:1\ndata = /nonexistent/file\nmin-free = 1000000TB\n")
		inst := serveWithEnv(t, map[string]string{"SIOT_CONFIG": conf, "SIOT_HTTP": web, "SIOT_DATA": "/nonexistent/env", "SIOT_MIN_FREE": "0"},
			nil, "--data", data)
		if inst.nats != "nats://"+listen || inst.http != web || servingData(t, inst) != data {
			t.Errorf("serving on %s, http %s, data %s; want %s (file), %s (env), %s (flag)", inst.nats, inst.http, servingData(t, inst), listen, web, data)
		}
	})
}

// TestServeRepeatedSettings: repeatable flags come from the environment
// separated by blanks (a comma keeps joining a cluster's members into one
// link) and from the file by repeating the key.
func TestServeRepeatedSettings(t *testing.T) {
	resolve := func(env map[string]string, conf string, args ...string) serveFlags {
		t.Helper()
		c := &serveCmd{m: &Main{Getenv: func(k string) string { return env[k] }}}
		if conf != "" {
			args = append(args, "--config", writeFile(t, filepath.Join(t.TempDir(), "siot.conf"), conf))
		}
		fs := newFlagSet("serve", c)
		if _, err := parseArgs(fs, args, io.Discard); err != nil {
			t.Fatal(err)
		}
		if err := c.loadSources(); err != nil {
			t.Fatal(err)
		}
		return c.f
	}
	f := resolve(map[string]string{"SIOT_UPSTREAM": "nats://a:1,nats://b:1  nats://c:1", "SIOT_ROUTE": "nats://r:6222"},
		"peer = nats://p:1\npeer = nats://q:1\nroute = nats://file:6222\ninsecure\n")
	if got := strings.Join(f.upstreams, " "); got != "nats://a:1,nats://b:1 nats://c:1" {
		t.Errorf("upstreams from the environment: %q", got)
	}
	if got := strings.Join(f.peers, " "); got != "nats://p:1 nats://q:1" {
		t.Errorf("peers from the file: %q", got)
	}
	if got := strings.Join(f.routes, " "); got != "nats://r:6222" {
		t.Errorf("routes: %q, want the environment's only", got)
	}
	if !f.insecure {
		t.Error("a bare boolean key in the file did not set it")
	}
	f = resolve(map[string]string{"SIOT_PEER": "nats://env:1"}, "peer = nats://file:1\n", "--peer", "nats://flag:1")
	if got := strings.Join(f.peers, " "); got != "nats://flag:1" {
		t.Errorf("peers: %q, want the flag's only", got)
	}
}

// TestServeSettingsErrors: an unknown key, a bad value in the file or the
// environment, a malformed address and a bad size are usage errors that
// name where they are, and nothing is created.
func TestServeSettingsErrors(t *testing.T) {
	dir := t.TempDir()
	conf := func(text string) string { return writeFile(t, filepath.Join(dir, "siot.conf"), text) }
	for _, tc := range []struct {
		env  map[string]string
		file string
		args []string
		want string
	}{
		{file: "# ok\nlisten = 127.0.0.1:0\nlisen = 127.0.0.1:1\n", want: "siot.conf:3: unknown setting \"lisen\""},
		{file: "min-free = lots\n", want: "siot.conf:1: min-free = lots: size \"lots\""},
		{file: "min-free = -1MiB\n", want: "siot.conf:1: min-free = -1MiB: size \"-1MiB\": negative"},
		{file: "keepalive = soon\n", want: "siot.conf:1: keepalive = soon"},
		{file: "\nlog-level = loud\n", want: "siot.conf:2: log-level \"loud\""},
		{file: "listen = 127.0.0.1\n", want: "siot.conf:1: listen: \"127.0.0.1\": want host:port"},
		{file: "data = a\ndata = b\n", want: "siot.conf:2: data is already set on line 1"},
		{file: "data\n", want: "siot.conf:1: \"data\": want data = value"},
		{file: "config = other.conf\n", want: "siot.conf:1: a configuration file cannot name another"},
		{file: "http = \"unterminated\n", want: "siot.conf:1: http: bad quoted value"},
		{env: map[string]string{"SIOT_MIN_FREE": "20000000TB"}, want: "SIOT_MIN_FREE=20000000TB: size \"20000000TB\": over 18446744073709551615 bytes"},
		{env: map[string]string{"SIOT_MIN_FREE": "512k"}, want: "SIOT_MIN_FREE=512k: size \"512k\": ambiguous unit"},
		{env: map[string]string{"SIOT_INSECURE": "maybe"}, want: "SIOT_INSECURE=maybe"},
		{env: map[string]string{"SIOT_LOG_FORMAT": "xml"}, want: "SIOT_LOG_FORMAT: \"xml\": want text or json"},
		{env: map[string]string{"SIOT_HTTP": "localhost:http"}, want: "SIOT_HTTP: \"localhost:http\": port \"http\""},
		{env: map[string]string{"SIOT_REPAIR_INTERVAL": "10ms"}, want: "SIOT_REPAIR_INTERVAL: at least 1s"},
		{env: map[string]string{"SIOT_CONFIG": filepath.Join(dir, "missing.conf")}, want: "SIOT_CONFIG: open"},
		{args: []string{"--config", filepath.Join(dir, "missing.conf")}, want: "--config: open"},
		{args: []string{"--listen", "nonsense"}, want: "--listen: \"nonsense\": want host:port"},
		{args: []string{"--listen", "127.0.0.1:99999"}, want: "--listen: \"127.0.0.1:99999\": port"},
		{args: []string{"--http", "127.0.0.1:-1"}, want: "--http: \"127.0.0.1:-1\": port"},
		{args: []string{"--cluster", "127.0.0.1", "--cluster-secret", "s"}, want: "--cluster: \"127.0.0.1\": want host:port"},
		{args: []string{"--cluster", "127.0.0.1:0", "--cluster-secret", "s", "--route", "nats://127.0.0.1"}, want: "--route nats://127.0.0.1: \"127.0.0.1\": want host:port"},
		{args: []string{"--cluster", "127.0.0.1:0", "--cluster-secret", "s", "--route", "127.0.0.1:6222"}, want: "want nats://host:port"},
		{args: []string{"--min-free", "1.5GiB"}, want: "want a whole number"},
	} {
		data := filepath.Join(t.TempDir(), "data")
		args := append([]string{"serve", "--data", data}, tc.args...)
		if tc.file != "" {
			args = append(args, "--config", conf(tc.file))
			if strings.HasPrefix(tc.file, "data") {
				args = []string{"serve", "--config", conf(tc.file)}
			}
		}
		getenv := func(k string) string { return tc.env[k] }
		m := &Main{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: io.Discard, Getenv: getenv}
		// A regression would serve: the deadline ends it.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := m.Run(ctx, args)
		cancel()
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v %q: %v, want a usage error saying %q", tc.env, tc.args, tc.file, err, tc.want)
		}
		if _, err := os.Stat(data); !os.IsNotExist(err) {
			t.Errorf("%v %v %q: the data directory was created", tc.env, tc.args, tc.file)
		}
	}
}

// TestParseSize: the accepted forms of a size, and the refused ones.
func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{
		"0": 0, "4096": 4096, "1B": 1, "256MiB": 256 << 20, "256 MiB": 256 << 20, "256mib": 256 << 20,
		"1KiB": 1024, "2GiB": 2 << 30, "1TiB": 1 << 40, "1kB": 1000, "1KB": 1000, "512MB": 512e6, "1GB": 1e9,
		"3tb": 3e12, "16777215TiB": 16777215 << 40, "18446744073709551615": 18446744073709551615,
	} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "-0", "+5", "1.5GiB", "512k", "1M", "1Gi", "1 PB", "5 bytes",
		"16777216TiB", "18446744073709551616", "18446744073709551615B0", "1e9"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
	for n, want := range map[uint64]string{0: "0", 256 << 20: "256MiB", 1e9: "1GB", 1000: "1kB", 1001: "1001B", 1536: "3KiB" /* not */} {
		if n == 1536 {
			want = "1536B"
		}
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
		if back, err := parseSize(formatSize(n)); err != nil || back != n {
			t.Errorf("parseSize(formatSize(%d)) = %d, %v", n, back, err)
		}
	}
}

// TestServeMinFreeWithUnits: --min-free and SIOT_MIN_FREE take a unit and
// the store gets the size: a floor above any disk refuses writes.
func TestServeMinFreeWithUnits(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		args []string
	}{
		{nil, []string{"--min-free", "1000000TB"}},
		{map[string]string{"SIOT_MIN_FREE": "1000000 TB"}, nil},
	} {
		data := t.TempDir()
		inst := serveWithEnv(t, tc.env, nil, append([]string{"--data", data, "--listen", "127.0.0.1:0", "--http", ""}, tc.args...)...)
		registerCreds(inst.nats, data)
		_, _, err := cli(t, "", "node", "add", "--server", inst.nats, "--type", "sensor")
		if err == nil || !strings.Contains(err.Error(), "floor 1000000000000000000") {
			t.Errorf("%v %v: node add: %v, want refused below a floor of 10^18 bytes", tc.env, tc.args, err)
		}
	}
}

// TestServeSIGHUPReloadsCertificate: on SIGHUP the listener serves the
// certificate now in the --tls-cert and --tls-key files to new
// connections; a broken pair is logged and the old one kept.
func TestServeSIGHUPReloadsCertificate(t *testing.T) {
	ca1, cert1, key1 := testTLS(t)
	ca2, cert2, key2 := testTLS(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cp := func(from, to string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, to, string(b))
	}
	cp(cert1, cert)
	cp(key1, key)
	hup := make(chan os.Signal, 1)
	data := t.TempDir()
	// The log level on the command line beats the environment's and the
	// file's at start and at every reload.
	conf := writeFile(t, filepath.Join(dir, "siot.conf"), "log-level = error\n")
	inst := serveWithEnv(t, map[string]string{"SIOT_MIN_FREE": "0", "SIOT_LOG_LEVEL": "warn"}, hup, "--data", data, "--listen", "127.0.0.1:0", "--http", "",
		"--tls-cert", cert, "--tls-key", key, "--log-level", "info", "--config", conf)
	registerCreds(inst.nats, data)
	statusWith := func(ca string) error {
		_, _, err := cli(t, "", "status", "--server", inst.nats, "--tls-ca", ca, "--timeout", "5s")
		return err
	}
	if err := statusWith(ca1); err != nil {
		t.Fatalf("status with the first CA: %v", err)
	}
	reloads := func(msg string) int { return len(logRecords(inst, msg)) }

	// A certificate without its key: logged, the old pair kept.
	cp(cert2, cert)
	hup <- syscall.SIGHUP
	waitUntil(t, "the failed reload logged", func() bool { return reloads("reload failed: settings unchanged") == 1 })
	if err := statusWith(ca1); err != nil {
		t.Fatalf("status with the first CA after a failed reload: %v", err)
	}

	cp(key2, key)
	hup <- syscall.SIGHUP
	waitUntil(t, "the reload logged", func() bool { return reloads("configuration reloaded") == 1 })
	if got := logRecords(inst, "configuration reloaded")[0]["changed"]; got != "tls-cert" {
		t.Errorf("reload changed %v, want tls-cert", got)
	}
	if err := statusWith(ca2); err != nil {
		t.Fatalf("status with the second CA: %v", err)
	}
	if err := statusWith(ca1); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("status with the first CA after the reload: %v, want a certificate error", err)
	}
	hup <- syscall.SIGHUP
	waitUntil(t, "the second reload logged", func() bool { return reloads("configuration reloaded: nothing changed") == 1 })
}

// TestE2ESIGHUPReloadsLogLevel: SIGHUP does not stop a real `siot serve`;
// it re-reads the log level from --config, logs what changed, says which
// settings need a restart, and keeps the old settings when the file is
// broken.
func TestE2ESIGHUPReloadsLogLevel(t *testing.T) {
	e2eBinary(t)
	conf := filepath.Join(t.TempDir(), "siot.conf")
	writeFile(t, conf, "log-level = info\n")
	p := newProc(t, "hup", "--config", conf)
	p.start()
	// reload writes text to the file, sends SIGHUP and returns the n
	// reload lines it logs. A SIGHUP is handled before the next is sent.
	seen := 0
	reload := func(text string, n int) []map[string]any {
		t.Helper()
		writeFile(t, conf, text)
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		var got []map[string]any
		waitFor(t, "the reload lines", 10*time.Second, func() (bool, string) {
			recs := reloadRecords(p.all.String())
			if len(recs) >= seen+n {
				got = recs[seen : seen+n]
				seen += n
				return true, ""
			}
			return false, tail(p.all.String(), 500)
		})
		if !p.running() {
			t.Fatalf("SIGHUP ended serve:\n%s", tail(p.all.String(), 2000))
		}
		return got
	}
	const restart = "configuration reloaded: a restart is needed to apply"
	if recs := reload("log-level = debug\nkeepalive = 3m\n", 2); recs[0]["changed"] != "log-level info→debug" ||
		recs[1]["msg"] != restart || recs[1]["settings"] != "keepalive" {
		t.Fatalf("reload to debug: %v", recs)
	}
	if recs := reload("log-level = warn\n", 1); recs[0]["changed"] != "log-level debug→warn" {
		t.Fatalf("reload to warn: %v", recs)
	}
	if recs := reload("log-level = warn\nlog-levle = info\n", 1); recs[0]["msg"] != "reload failed: settings unchanged" ||
		!strings.Contains(recs[0]["err"].(string), conf+":2: unknown setting") {
		t.Fatalf("reload of a broken file: %v", recs)
	}
	// At warn, "nothing changed" (info) is not logged; the warning is.
	if recs := reload("log-level = warn\nkeepalive = 3m\n", 1); recs[0]["msg"] != restart {
		t.Fatalf("reload at warn: %v, want only the restart warning", recs)
	}
	if recs := reload("log-level = info\n", 1); recs[0]["changed"] != "log-level warn→info" {
		t.Fatalf("reload to info: %v", recs)
	}
	if _, err := p.status(); err != nil {
		t.Fatalf("status after the reloads: %v", err)
	}
	if code, _ := p.stop(syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM", code)
	}
}

// reloadRecords returns the JSON log records of reloads in log, in order.
func reloadRecords(log string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(log, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if msg, _ := rec["msg"].(string); strings.HasPrefix(msg, "configuration reloaded") || strings.HasPrefix(msg, "reload failed") {
			out = append(out, rec)
		}
	}
	return out
}

// TestE2EMalformedListenExits2: the binary exits with status 2, before
// anything starts, for a malformed address.
func TestE2EMalformedListenExits2(t *testing.T) {
	bin := e2eBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	for _, args := range [][]string{{"--listen", "127.0.0.1"}, {"--http", "nohost:port"}} {
		cmd := exec.Command(bin, append([]string{"serve", "--data", data}, args...)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v: %v, want exit status 2\n%s", args, err, out)
		}
		if _, err := os.Stat(data); !os.IsNotExist(err) {
			t.Errorf("%v: the data directory was created", args)
		}
	}
}

// TestServeHelpNamesEnv: serve --help names each flag's environment
// variable, and none is a client command's (SIOT_SERVER, SIOT_CREDS).
func TestServeHelpNamesEnv(t *testing.T) {
	out, _, err := cli(t, "", "serve", "--help")
	if err != nil {
		t.Fatal(err)
	}
	client := map[string]bool{}
	newFlagSet("status", (&Main{Getenv: func(string) string { return "" }}).command("status")).VisitAll(func(fl *flag.Flag) {
		for _, env := range regexp.MustCompile(`SIOT_[A-Z_]+`).FindAllString(fl.Usage, -1) {
			client[env] = true
		}
	})
	if !client["SIOT_SERVER"] || !client["SIOT_CREDS"] {
		t.Fatalf("the client's variables: %v", client)
	}
	n := 0
	flagSets()["serve"].VisitAll(func(fl *flag.Flag) {
		n++
		env := serveEnv(fl.Name)
		if !strings.Contains(out, "(env "+env+")") {
			t.Errorf("serve --help does not name %s for --%s", env, fl.Name)
		}
		if client[env] && env != "SIOT_TLS_CA" {
			t.Errorf("--%s's %s is also a client command's", fl.Name, env)
		}
	})
	if n < 20 {
		t.Errorf("%d serve flags", n)
	}
}
