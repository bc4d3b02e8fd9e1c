package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"time"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/transport"
)

// clientFlags are the flags every command that talks to a server shares.
type clientFlags struct {
	server  string
	creds   string
	tlsCA   string
	timeout time.Duration
}

const (
	defaultServer = "nats://127.0.0.1:4222"
	// defaultCreds is the local administrator's credential file of a
	// server started with the default --data, used when it exists.
	defaultCreds = "./siot-data/admin.creds"
)

func (f *clientFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&f.server, "server", envOr(getenv, "SIOT_SERVER", defaultServer), "NATS URL of the siot server (env SIOT_SERVER)")
	fs.StringVar(&f.creds, "creds", envOr(getenv, "SIOT_CREDS", ""), "credential file (env SIOT_CREDS; default "+defaultCreds+" when it exists)")
	fs.StringVar(&f.tlsCA, "tls-ca", envOr(getenv, "SIOT_TLS_CA", ""), "PEM file of the CAs the server's TLS certificate must chain to (env SIOT_TLS_CA)")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for each reply")
}

// loadCreds reads the credential file the flags name, or the default one.
func (f *clientFlags) loadCreds() (*transport.Creds, error) {
	path := f.creds
	if path == "" {
		if _, err := os.Stat(defaultCreds); err != nil {
			return nil, errors.New("no credentials: give --creds FILE or SIOT_CREDS (a server writes its administrator's to DATA/admin.creds)")
		}
		path = defaultCreds
	}
	return transport.ReadCreds(path)
}

// dial connects with the flags' credentials. The connection does not
// reconnect: a command that runs once fails rather than wait.
func (f *clientFlags) dial() (*client.Client, error) {
	creds, err := f.loadCreds()
	if err != nil {
		return nil, err
	}
	return f.dialWith(client.WithCreds(creds), client.WithoutReconnect())
}

// dialWith connects with the flags' server, TLS and timeout, and opts.
func (f *clientFlags) dialWith(opts ...client.Option) (*client.Client, error) {
	all := []client.Option{client.WithName("siot cli"), client.WithTimeout(f.timeout)}
	if f.tlsCA != "" {
		all = append(all, client.WithCAFile(f.tlsCA))
	}
	return client.Dial(context.Background(), f.server, append(all, opts...)...)
}
