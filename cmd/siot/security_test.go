package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testTLS writes a CA and a certificate for 127.0.0.1 signed by it, and
// returns the paths of the CA, the certificate and its key.
func testTLS(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "siot test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", srvDER), write("key.pem", "EC PRIVATE KEY", keyDER)
}

// TestProvisionOverTLSAndScopedUser follows the README: a cloud with TLS,
// a device provisioned on it and started with its credentials, a user
// who reaches only its site; nothing secret in the logs.
func TestProvisionOverTLSAndScopedUser(t *testing.T) {
	ca, cert, key := testTLS(t)
	cloud := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "", "--tls-cert", cert, "--tls-key", key)
	c := []string{"--server", cloud.nats, "--tls-ca", ca}

	// Without the CA, the server's certificate is not trusted.
	if _, _, err := cli(t, "", "status", "--server", cloud.nats, "--timeout", "5s"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("status without --tls-ca: %v", err)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(mustCLI(t, "", append([]string{"status", "--json"}, c...)...)), &st); err != nil {
		t.Fatal(err)
	}
	site := strings.TrimSpace(mustCLI(t, "", append([]string{"node", "add", "--type", "site", "--desc", "north"}, c...)...))
	other := strings.TrimSpace(mustCLI(t, "", append([]string{"node", "add", "--type", "site", "--desc", "south"}, c...)...))
	mustCLI(t, "", append([]string{"set", other, "secret=42"}, c...)...)

	// A device, provisioned under the site, started with its file.
	devCreds := filepath.Join(t.TempDir(), "dev.creds")
	dev := strings.TrimSpace(mustCLI(t, "", append([]string{"device", "add", "--parent", site, "--desc", "pump", "--out", devCreds}, c...)...))
	if fi, err := os.Stat(devCreds); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("device credentials: %v %v", fi, err)
	}
	edge := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "", "--upstream", cloud.nats,
		"--creds", devCreds, "--tls-ca", ca)
	if edge.id != dev {
		t.Fatalf("the device's root is %s, want its node %s", edge.id, dev)
	}
	waitUntil(t, "the device in sync", func() bool {
		st := status(t, edge.nats)
		return len(st.Links) == 1 && st.Links[0].InSync
	})
	sensor := strings.TrimSpace(mustCLI(t, "", "node", "add", "--server", edge.nats, "--type", "sensor"))
	mustCLI(t, "", "set", sensor, "temp=20", "--server", edge.nats)
	waitUntil(t, "the reading on the cloud", func() bool {
		out, _, err := cli(t, "", append([]string{"get", sensor}, c...)...)
		return err == nil && strings.Contains(out, "temp")
	})
	// The device's credentials on the cloud: its subtree, nothing else.
	d := []string{"--server", cloud.nats, "--tls-ca", ca, "--creds", devCreds}
	mustCLI(t, "", append([]string{"set", sensor, "note=ok", "--text"}, d...)...)
	if _, _, err := cli(t, "", append([]string{"set", other, "secret=0"}, d...)...); err == nil || !strings.HasPrefix(err.Error(), "set: permission denied: ") {
		t.Fatalf("the device wrote outside its subtree: %v", err)
	}

	// A user of the site.
	mustCLI(t, "s3cret-pass\n", append([]string{"user", "add", "--parent", site, "--email", "ann@example.com"}, c...)...)
	userCreds := filepath.Join(t.TempDir(), "ann.creds")
	if _, _, err := cli(t, "wrong\n", "login", "--server", cloud.nats, "--tls-ca", ca, "--email", "ann@example.com", "--out", userCreds); err == nil {
		t.Fatal("login with a wrong password")
	}
	_, errOut, err := cli(t, "s3cret-pass\n", "login", "--server", cloud.nats, "--tls-ca", ca, "--email", "ann@example.com", "--out", userCreds)
	if err != nil {
		t.Fatalf("login: %v %s", err, errOut)
	}
	u := []string{"--server", cloud.nats, "--tls-ca", ca, "--creds", userCreds}
	ls := mustCLI(t, "", append([]string{"node", "ls"}, u...)...)
	if !strings.Contains(ls, "pump") || strings.Contains(ls, "south") {
		t.Fatalf("the user's tree:\n%s", ls)
	}
	if _, _, err := cli(t, "", append([]string{"get", other}, u...)...); err == nil || !strings.HasPrefix(err.Error(), "get: permission denied: ") {
		t.Fatalf("the user read another site: %v", err)
	}
	if _, _, err := cli(t, "", append([]string{"node", "rm", sensor}, u...)...); err == nil || !strings.HasPrefix(err.Error(), "node rm: permission denied: ") {
		t.Fatalf("a plain user deleted a node: %v", err)
	}
	if out := mustCLI(t, "", append([]string{"export"}, u...)...); strings.Contains(out, "password") || strings.Contains(out, "authKey") || strings.Contains(out, other) {
		t.Fatalf("the user's export holds secrets or another site:\n%s", out)
	}

	// Revoked, the device's credentials are refused.
	mustCLI(t, "", append([]string{"device", "rm", dev}, c...)...)
	waitUntil(t, "the device refused", func() bool {
		_, _, err := cli(t, "", append([]string{"status", "--timeout", "5s"}, d...)...)
		return err != nil && strings.Contains(err.Error(), "Authorization")
	})
	seed := readSeed(t, filepath.Join(cloud.dataDir, "admin.creds"))
	for _, inst := range []*instance{cloud, edge} {
		if l := inst.log.String(); strings.Contains(l, "s3cret-pass") || strings.Contains(l, seed) || strings.Contains(l, readSeed(t, devCreds)) {
			t.Fatal("a secret in the log")
		}
	}
}

func readSeed(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Seed string }
	if err := json.Unmarshal(b, &f); err != nil || f.Seed == "" {
		t.Fatalf("%s: no seed: %v", path, err)
	}
	return f.Seed
}

// TestServeRefusesInsecureListenersAndURLSecrets: a non-loopback listener
// needs TLS or --insecure; a link URL with a password is refused without
// echoing it.
func TestServeRefusesInsecureListenersAndURLSecrets(t *testing.T) {
	var ue *UsageError
	_, _, err := cli(t, "", "serve", "--data", t.TempDir(), "--listen", "10.255.255.1:4222", "--http", "")
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--tls-cert") {
		t.Fatalf("plain listener on a non-loopback address: %v", err)
	}
	// With --insecure the check passes (the bind then fails: the address
	// is not this machine's).
	_, _, err = cli(t, "", "serve", "--data", t.TempDir(), "--listen", "10.255.255.1:4222", "--http", "", "--insecure")
	if err == nil || errors.As(err, &ue) {
		t.Fatalf("--insecure: %v, want a bind error", err)
	}
	creds := filepath.Join(t.TempDir(), "x.creds")
	_, errOut, err := cli(t, "", "serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "",
		"--upstream", "nats://dev:hunter2@127.0.0.1:1", "--creds", creds)
	if !errors.As(err, &ue) || strings.Contains(err.Error()+errOut, "hunter2") {
		t.Fatalf("a password in a link URL: %v %s", err, errOut)
	}
}

// TestPeerCredentialLinksAndRevokes: a peer credential from "peer add"
// lets an empty instance take the first's root and sync; "peer rm"
// revokes it: the peer's link is closed and refused.
func TestPeerCredentialLinksAndRevokes(t *testing.T) {
	a := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "")
	peerCreds := filepath.Join(t.TempDir(), "peer.creds")
	key := strings.TrimSpace(mustCLI(t, "", "peer", "add", "--server", a.nats, "--desc", "cloud 2", "--out", peerCreds))
	b := serve(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "", "--peer", a.nats, "--peer-creds", peerCreds)
	if b.id != a.id {
		t.Fatalf("the peer's root is %s, want %s", b.id, a.id)
	}
	waitUntil(t, "the peer in sync", func() bool {
		st := status(t, b.nats)
		return len(st.Links) == 1 && st.Links[0].InSync
	})
	mustCLI(t, "", "peer", "rm", key, "--server", a.nats)
	waitUntil(t, "the peer refused", func() bool {
		st := status(t, b.nats)
		return len(st.Links) == 1 && !st.Links[0].Connected && strings.Contains(st.Links[0].LastError, "Authorization")
	})
}
