package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"siot/transport"
)

// clientFlags are the flags every command that talks to a server shares.
type clientFlags struct {
	server  string
	timeout time.Duration
}

const defaultServer = "nats://127.0.0.1:4222"

func (f *clientFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&f.server, "server", envOr(getenv, "SIOT_SERVER", defaultServer), "NATS URL of the siot server (env SIOT_SERVER)")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for each reply")
}

// client is a connection to a running server's local API.
type client struct {
	nc      *nats.Conn
	timeout time.Duration
}

func (f *clientFlags) dial() (*client, error) {
	nc, err := transport.Dial(f.server, transport.DialConfig{Name: "siot cli", Timeout: min(f.timeout, 10*time.Second)})
	if err != nil {
		return nil, fmt.Errorf("%w (is `siot serve` running there? set --server or SIOT_SERVER)", err)
	}
	return &client{nc: nc, timeout: f.timeout}, nil
}

func (c *client) close() { c.nc.Close() }

// call sends req on subject and decodes the reply into resp. It waits
// for the reply up to the client's timeout, or until ctx is done.
func (c *client) call(ctx context.Context, subject string, req, resp any) error {
	return c.callWait(ctx, subject, req, resp, 0)
}

// callWait is call for a request the server may hold for up to extra
// (a watch): the reply is awaited for the timeout plus extra.
func (c *client) callWait(ctx context.Context, subject string, req, resp any, extra time.Duration) error {
	b, err := transport.Encode(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout+extra)
	defer cancel()
	m, err := c.nc.RequestWithContext(ctx, subject, b)
	if err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	if err := transport.Decode(m.Data, 0, resp); err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	return nil
}
