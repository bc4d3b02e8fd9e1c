// Command siot is the siot replication engine: one binary for cloud servers,
// edge devices and, later, the web UI. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	m := &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		// SIGHUP reloads serve's settings instead of ending it; other
		// commands keep the default (a closed terminal ends them).
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		m.Hangup = hup
	}
	err := m.Run(ctx, os.Args[1:])
	stop()
	if err != nil {
		var ue *UsageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "siot:", err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "siot:", err)
		os.Exit(1)
	}
}
