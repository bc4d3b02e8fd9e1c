// Command writer is the edge application of the browser benchmark
// (web/bench/ui.bench.ts): one long-lived client that writes a point every
// --every, each value the wall-clock time of its write in milliseconds
// (with microseconds as the fraction), so that the page can tell how long
// the value took to reach it on the same machine's clock. The writes take
// the keys 0 to --keys-1 in turn: each is a register of its own until the
// next round, so a page that redraws after two writes still shows both.
// Starting one
// `siot set` process per write would cost more than what is measured.
//
//	writer --server nats://127.0.0.1:PORT --creds admin.creds --node UUID [--type bench] [--keys 8] [--n 300] [--every 40ms]
//
// It prints "wrote N" when done. It is a benchmark tool, not part of siot.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "writer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("writer", flag.ContinueOnError)
	server := fs.String("server", "", "the server's NATS URL")
	creds := fs.String("creds", "", "a credentials file (the server's admin.creds)")
	node := fs.String("node", "", "the node written")
	typ := fs.String("type", "bench", "the point type written")
	keys := fs.Int("keys", 8, "how many keys the writes take in turn")
	n := fs.Int("n", 300, "how many writes")
	every := fs.Duration("every", 40*time.Millisecond, "the time from one write's start to the next")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *server == "" || *creds == "" {
		return errors.New("--server and --creds are required")
	}
	id, err := uuid.Parse(*node)
	if err != nil {
		return fmt.Errorf("--node: %w", err)
	}
	if *n < 1 || *keys < 1 || *every <= 0 {
		return errors.New("--n, --keys and --every must be positive")
	}
	cl, err := client.Dial(ctx, *server, client.WithCredsFile(*creds), client.WithName("siot ui bench writer"))
	if err != nil {
		return err
	}
	defer cl.Close()
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for i := 0; i < *n; i++ {
		v := float64(time.Now().UnixMicro()) / 1000
		if _, err := cl.Set(ctx, client.Point{Node: id, Type: *typ, Key: strconv.Itoa(i % *keys), Value: v}); err != nil {
			return fmt.Errorf("write %d of %d: %w", i+1, *n, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	fmt.Fprintf(out, "wrote %d\n", *n)
	return nil
}
