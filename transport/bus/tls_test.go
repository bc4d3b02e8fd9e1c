package bus

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestTLS: with Config.TLS the listener requires TLS (a client that
// trusts the certificate connects with tls://, its messages cross), and
// in-process connections still connect without it.
func TestTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bus test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}})
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	nc, err := nats.Connect("tls://"+s.Addr().String(), nats.Secure(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}), nats.NoReconnect(), nats.Timeout(wait))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	local := connect(t, s)
	sub, err := local.SubscribeSync("x")
	if err != nil {
		t.Fatal(err)
	}
	if err := local.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("x", []byte("over TLS")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(wait); err != nil || string(m.Data) != "over TLS" {
		t.Fatalf("%v, %v", m, err)
	}
	// A client that does not trust the certificate does not connect.
	if bad, err := nats.Connect("tls://"+s.Addr().String(), nats.NoReconnect(), nats.Timeout(wait)); err == nil {
		bad.Close()
		t.Fatal("connected without trusting the certificate")
	}
}
