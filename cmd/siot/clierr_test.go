package main

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"siot/transport"
)

// plainNATS starts a NATS server with no siot behind it, on a random
// loopback port, and returns its URL.
func plainNATS(t *testing.T) string {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns.ClientURL()
}

// clientCommandArgs are valid arguments of every command that talks to a
// server, by command name; stdin is what it reads.
func clientCommandArgs(dir string) []struct {
	name  string
	args  []string
	stdin string
} {
	n1, n2 := "6ba7b811-9dad-11d1-80b4-00c04fd430c8", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
	return []struct {
		name  string
		args  []string
		stdin string
	}{
		{"status", []string{"status"}, ""},
		{"node add", []string{"node", "add", "--parent", n2}, ""},
		{"node rm", []string{"node", "rm", n1}, ""},
		{"node mv", []string{"node", "mv", n1, n2}, ""},
		{"node ls", []string{"node", "ls"}, ""},
		{"set", []string{"set", n1, "temp=21.5"}, ""},
		{"get", []string{"get", n1}, ""},
		{"watch", []string{"watch"}, ""},
		{"import", []string{"import"}, `{"node":"` + n1 + `","type":"temp","value":1}` + "\n"},
		{"export", []string{"export"}, ""},
		{"device add", []string{"device", "add", "--out", filepath.Join(dir, "dev.creds")}, ""},
		{"device rm", []string{"device", "rm", n1}, ""},
		{"user add", []string{"user", "add", "--parent", n2, "--email", "a@example.com"}, "secret-pass\nsecret-pass\n"},
		{"user rm", []string{"user", "rm", n1}, ""},
		{"peer add", []string{"peer", "add", "--out", filepath.Join(dir, "peer.creds")}, ""},
		{"peer rm", []string{"peer", "rm", "UAFAKEKEY"}, ""},
		{"login", []string{"login", "--email", "a@example.com"}, "secret\n"},
	}
}

// Pointed at a NATS server with no siot behind it, every client command
// says so, naming the URL, and its error starts with the command's name.
func TestClientCommandsAtAPlainNATSServer(t *testing.T) {
	url := plainNATS(t)
	dir := t.TempDir()
	admin, err := transport.NewKeyCreds(transport.KindAdmin, uuid.Nil)
	if err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(dir, "admin.creds")
	if err := transport.WriteCreds(creds, admin, false); err != nil {
		t.Fatal(err)
	}
	for _, c := range clientCommandArgs(dir) {
		args := append(c.args, "--server", url, "--timeout", "5s")
		if c.name != "login" {
			args = append(args, "--creds", creds)
		}
		start := time.Now()
		_, _, err := cli(t, c.stdin, args...)
		var ue *UsageError
		switch {
		case err == nil:
			t.Errorf("%s: no error", c.name)
		case errors.As(err, &ue):
			t.Errorf("%s: usage error %v", c.name, err)
		case !strings.HasPrefix(err.Error(), c.name+": "):
			t.Errorf("%s: error does not start with the command's name: %v", c.name, err)
		case !strings.Contains(err.Error(), "no siot server answered at "+url):
			t.Errorf("%s: error does not say no siot server answered at %s: %v", c.name, url, err)
		case strings.Contains(err.Error(), "siot.api"):
			t.Errorf("%s: error names an internal subject: %v", c.name, err)
		case time.Since(start) > 4*time.Second:
			t.Errorf("%s: took %v, waited for the timeout", c.name, time.Since(start))
		}
	}
}

// A write the server refuses says what was refused and why, under the
// command's name, without the server's internal prefixes.
func TestRefusedWriteNamesTheCommand(t *testing.T) {
	srv := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "", "--min-free", "18446744073709551615")
	_, _, err := cli(t, "", "node", "add", "--server", srv.nats)
	if err == nil || !strings.HasPrefix(err.Error(), "node add: the server refuses writes: disk below its floor") ||
		strings.Contains(err.Error(), "remote:") || strings.Contains(err.Error(), "siot.api") {
		t.Fatalf("node add on a full disk: %v", err)
	}
}
