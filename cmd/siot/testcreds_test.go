package main

import (
	"path/filepath"
	"sync"
	"testing"
)

// credsByURL maps a test server's NATS URL to its administrator's
// credential file, so test commands sign in as it unless they say
// otherwise, and test links sign in to it.
var credsByURL sync.Map

// registerCreds records dataDir/admin.creds as the credentials of url.
func registerCreds(url, dataDir string) {
	credsByURL.Store(url, filepath.Join(dataDir, "admin.creds"))
}

// credsFor returns the registered credential file of url, or "".
func credsFor(url string) string {
	if c, ok := credsByURL.Load(url); ok {
		return c.(string)
	}
	return ""
}

// argValue returns the value of flag name in args ("--name v"), or "".
func argValue(args []string, name string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == name {
			return args[i+1]
		}
	}
	return ""
}

// testGetenv is the environment of a test command: SIOT_CREDS names the
// credentials of the server its --server names.
func testGetenv(args []string) func(string) string {
	creds := credsFor(argValue(args, "--server"))
	return func(k string) string {
		if k == "SIOT_CREDS" {
			return creds
		}
		return ""
	}
}

// withLinkCreds adds --creds and --peer-creds for the first --upstream and
// --peer of serve args that have none, from the registry.
func withLinkCreds(t testing.TB, args []string) []string {
	t.Helper()
	add := func(link, flag string) {
		u := argValue(args, link)
		if u == "" || argValue(args, flag) != "" {
			return
		}
		c := credsFor(u)
		if c == "" {
			t.Fatalf("no credentials registered for %s", u)
		}
		args = append(args, flag, c)
	}
	add("--upstream", "--creds")
	add("--peer", "--peer-creds")
	return args
}
