package main

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/siot-io/siot/transport"
)

// plainNATS starts a NATS server with no siot behind it, on a random
// loopback port, and returns its URL. With nkey set, it takes that user
// nkey (as a siot server takes its administrator's), with perms; else no
// credentials.
func plainNATS(t *testing.T, nkey string, perms ...*natsserver.Permissions) string {
	t.Helper()
	opts := &natsserver.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true}
	if nkey != "" {
		u := &natsserver.NkeyUser{Nkey: nkey}
		if len(perms) > 0 {
			u.Permissions = perms[0]
		}
		opts.Nkeys = []*natsserver.NkeyUser{u}
	}
	ns, err := natsserver.NewServer(opts)
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
		{"history", []string{"history", n1, "temp"}, ""},
		{"rule add", []string{"rule", "add", "--parent", n2, "--desc", "hot", "--if", "temp > 30"}, ""},
		{"rule ls", []string{"rule", "ls"}, ""},
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
// Both kinds: one that refuses siot's credentials, and one that takes
// them, where no one answers the requests.
func TestClientCommandsAtAPlainNATSServer(t *testing.T) {
	dir := t.TempDir()
	_, creds, pub := adminCredsIn(t, dir)
	clientCommandsAt(t, plainNATS(t, ""), creds, dir, "")
	// That one refuses a login's email and password.
	clientCommandsAt(t, plainNATS(t, pub), creds, dir, "login")
}

// clientCommandsAt runs every client command at url, a NATS server with
// no siot behind it; refuser is the command whose credentials it refuses.
func clientCommandsAt(t *testing.T, url, creds, dir, refuser string) {
	t.Helper()
	for _, c := range clientCommandArgs(dir) {
		want := "no siot server answered at " + url
		if c.name == refuser {
			want = "cannot sign in at " + url + ": nats: Authorization Violation: the server refused"
		}
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
		case !strings.Contains(err.Error(), want):
			t.Errorf("%s: error does not say %q: %v", c.name, want, err)
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

// A server that takes the request and never answers: the error says no
// reply came from that URL within --timeout, under the command's name.
func TestClientTimeoutSaysSo(t *testing.T) {
	dir := t.TempDir()
	admin, creds, pub := adminCredsIn(t, dir)
	url := plainNATS(t, pub)
	nc, err := transport.Dial(url, transport.DialConfig{Name: "silent", Creds: admin})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(">") // takes every request, answers none
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	_, _, err = cli(t, "", "node", "ls", "--server", url, "--creds", creds, "--timeout", "300ms")
	if err == nil || err.Error() != "node ls: no reply from the server at "+url+" within 300ms (--timeout)" {
		t.Fatalf("node ls at a silent server: %v", err)
	}
	// An import's first request asks which nodes the tree has; it got no
	// reply, and nothing was sent. (A batch that gets no reply is reported
	// as unknown: TestE2EImportKilledReportsDurableLineAndResumes.)
	rec := `{"node":"6ba7b811-9dad-11d1-80b4-00c04fd430c8","type":"temp","value":1}` + "\n"
	_, _, err = cli(t, rec, "import", "--server", url, "--creds", creds, "--timeout", "300ms")
	if err == nil || err.Error() != "import: asking the server which nodes it has: no reply from the server at "+url+" within 300ms (--timeout)" {
		t.Fatalf("import at a silent server: %v", err)
	}
}

// A request the NATS server refuses as a permissions violation fails at
// once, saying so, rather than wait for --timeout.
func TestClientPermissionViolationSaysSo(t *testing.T) {
	dir := t.TempDir()
	_, creds, pub := adminCredsIn(t, dir)
	url := plainNATS(t, pub, &natsserver.Permissions{Publish: &natsserver.SubjectPermission{Deny: []string{">"}}})
	start := time.Now()
	_, _, err := cli(t, "", "status", "--server", url, "--creds", creds, "--timeout", "20s")
	if err == nil || !strings.HasPrefix(err.Error(), "status: permission denied: the server at "+url+" refused the request (nats: permissions violation") {
		t.Fatalf("status without permission to publish: %v", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("took %v: waited for the timeout", el)
	}
}

// adminCredsIn makes an administrator's key, writes its credential file in
// dir, and returns the key, the file and the key's public half.
func adminCredsIn(t *testing.T, dir string) (*transport.Creds, string, string) {
	t.Helper()
	admin, err := transport.NewKeyCreds(transport.KindAdmin, uuid.Nil)
	if err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(dir, "admin.creds")
	if err := transport.WriteCreds(creds, admin, false); err != nil {
		t.Fatal(err)
	}
	pub, err := admin.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return admin, creds, pub
}
