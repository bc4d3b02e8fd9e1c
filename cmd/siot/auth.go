package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/term"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
)

// Commands that manage who may connect: devices, peers and users, whose
// credentials are points in the tree, and login.

const deviceAddUsage = `Usage: siot device add [--parent NODE] [--id UUID] [--desc TEXT] --out FILE [--json]

Provision a device on this server (its upstream): create the device node
under --parent (default: the root) and a key for it, and write the key's
credential file to FILE (mode 0600; it must not exist). Keys are the local
administrator's to create: run it with the server's admin.creds. Start the device
with it on an empty data directory: it takes the device node as its root.

  siot serve --upstream URL --creds FILE

The credential lets the device read, write and sync its own subtree and
nothing else. The key's public half is a point of the device node, so
every peer of this server accepts it too; "siot device rm" revokes it. A
node that exists already (--id of a pre-provisioned node) only gets the
key.

Examples:
  siot device add --desc "pump 7" --out pump7.creds
  siot device add --parent 6f1c0c55-6bb4-4a63-9a8d-7d0f0c8f3a1e --id 1b4e28ba-2fa1-11d2-883f-0016d3cca427 --out dev.creds
`

type deviceAddCmd struct {
	clientCmd
	parent, id, desc, out string
}

func (c *deviceAddCmd) usage() string { return deviceAddUsage }

func (c *deviceAddCmd) flags(fs *flag.FlagSet) {
	c.register(fs, `print {"node","parent","key"}`)
	fs.StringVar(&c.parent, "parent", "", "the parent's UUID (default: the server's root)")
	fs.StringVar(&c.id, "id", "", "the device node's UUID (default: a random one)")
	fs.StringVar(&c.desc, "desc", "", `the device's "description" point`)
	fs.StringVar(&c.out, "out", "", "the credential file to write (required; mode 0600)")
}

func (c *deviceAddCmd) run(ctx context.Context, args []string) error {
	if len(args) > 0 {
		return &UsageError{Msg: "device add takes no arguments"}
	}
	if c.out == "" {
		return &UsageError{Msg: "device add needs --out FILE: where to write the device's credentials"}
	}
	id, parent, err := newNodeFlags(c.id, c.parent)
	if err != nil {
		return err
	}
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	root, err := cl.Root(ctx)
	if err != nil {
		return err
	}
	if id == root {
		return &UsageError{Msg: "--id is the server's root: use siot peer add for a peer"}
	}
	exists := cl.Known(ctx, id) == nil
	var pts []crdt.Point
	if !exists {
		if parent == uuid.Nil {
			parent = root
		} else if err := cl.Known(ctx, parent); err != nil {
			return fmt.Errorf("--parent: %w", err)
		}
		pts = append(pts, crdt.Point{Node: id, Parent: parent, Type: crdt.TypeEdge},
			crdt.Point{Node: id, Type: crdt.TypeNodeType, Text: "device"})
	} else if parent != uuid.Nil {
		return &UsageError{Msg: fmt.Sprintf("node %v exists: it keeps its place (leave out --parent, or move it with siot node mv)", id)}
	}
	if c.desc != "" {
		pts = append(pts, crdt.Point{Node: id, Type: typeDescription, Text: c.desc})
	}
	creds, err := transport.NewKeyCreds(transport.KindKey, id)
	if err != nil {
		return err
	}
	pub, err := creds.PublicKey()
	if err != nil {
		return err
	}
	pts = append(pts, crdt.Point{Node: id, Type: crdt.TypeAuthKey, Key: pub, Value: 1, Text: "device"})
	if err := provisionKey(ctx, cl, c.out, creds, pts); err != nil {
		return err
	}
	if c.asJSON {
		return printJSON(c.m.Stdout, map[string]string{"node": id.String(), "parent": parent.String(), "key": pub})
	}
	fmt.Fprintln(c.m.Stdout, id)
	return nil
}

// provisionKey writes creds to the file out, then pts (the key's point
// and the rest of the operation) as one operation. The file comes first:
// a server that refuses leaves no key without its file (the file is
// removed), and an existing file is never overwritten.
func provisionKey(ctx context.Context, cl *client.Client, out string, creds *transport.Creds, pts []crdt.Point) error {
	if err := validate(pts); err != nil {
		return err
	}
	if err := transport.WriteCreds(out, creds, false); err != nil {
		return err
	}
	if _, err := cl.Set(ctx, pts...); err != nil {
		os.Remove(out)
		return err
	}
	return nil
}

const deviceRmUsage = `Usage: siot device rm NODE [--key PUBKEY] [--json]

Revoke a device's credentials: tombstone every key of NODE (or only
--key). The tombstone syncs like any point: on every instance that holds
it, the device's open connections close within seconds and new ones are
refused. The node and its data stay; delete it with "siot node rm".
Listing a node's keys takes the administrator's credentials; a scoped
administrator names the key with --key.

Examples:
  siot device rm 1b4e28ba-2fa1-11d2-883f-0016d3cca427
`

type keyRmCmd struct {
	clientCmd
	key  string
	what string // "device" or "peer"
}

func (c *keyRmCmd) usage() string {
	if c.what == "peer" {
		return peerRmUsage
	}
	return deviceRmUsage
}

func (c *keyRmCmd) flags(fs *flag.FlagSet) {
	c.register(fs, `print {"node","revoked"}`)
	if c.what == "device" {
		fs.StringVar(&c.key, "key", "", "revoke only this public key")
	}
}

func (c *keyRmCmd) run(ctx context.Context, args []string) error {
	var node uuid.UUID
	var err error
	if c.what == "device" {
		if node, err = oneNode("device rm", "NODE", args); err != nil {
			return err
		}
	} else {
		if len(args) != 1 {
			return &UsageError{Msg: "peer rm takes one KEY (the public key siot peer add printed)"}
		}
		c.key = args[0]
	}
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	if c.what == "peer" {
		if node, err = cl.ServerRoot(ctx); err != nil {
			return err
		}
	}
	var keys []string
	if c.key != "" {
		keys = []string{c.key}
	} else {
		err := cl.Points(ctx, node, func(p *crdt.Point) error {
			if p.Type == crdt.TypeAuthKey && !p.IsEdge() && !p.Tombstone {
				keys = append(keys, p.Key)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			return fmt.Errorf("node %v has no live key (or these credentials may not see keys: name it with --key)", node)
		}
	}
	pts := make([]crdt.Point, 0, len(keys))
	for _, k := range keys {
		pts = append(pts, crdt.Point{Node: node, Type: crdt.TypeAuthKey, Key: k, Tombstone: true})
	}
	if err := validate(pts); err != nil {
		return err
	}
	if _, err := cl.Set(ctx, pts...); err != nil {
		return err
	}
	if c.asJSON {
		return printJSON(c.m.Stdout, map[string]any{"node": node.String(), "revoked": keys})
	}
	fmt.Fprintf(c.m.Stdout, "revoked %d key(s) of %v\n", len(keys), node)
	return nil
}

const peerAddUsage = `Usage: siot peer add [--desc TEXT] --out FILE [--json]

Create a peer credential: a key on the root, which lets another instance
link as a peer (a full copy of the tree) with
"siot serve --peer URL --peer-creds FILE". Write it to FILE (mode 0600).
It prints the key; "siot peer rm KEY" revokes it everywhere.

Examples:
  siot peer add --desc "cloud 2" --out cloud2.creds
`

const peerRmUsage = `Usage: siot peer rm KEY [--json]

Revoke the peer credential whose public key is KEY (as siot peer add
printed it): its connections close within seconds on every instance.

Examples:
  siot peer rm UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4
`

type peerAddCmd struct {
	clientCmd
	desc, out string
}

func (c *peerAddCmd) usage() string { return peerAddUsage }

func (c *peerAddCmd) flags(fs *flag.FlagSet) {
	c.register(fs, `print {"root","key"}`)
	fs.StringVar(&c.desc, "desc", "", "what the peer is, kept as the key's text")
	fs.StringVar(&c.out, "out", "", "the credential file to write (required; mode 0600)")
}

func (c *peerAddCmd) run(ctx context.Context, args []string) error {
	if len(args) > 0 {
		return &UsageError{Msg: "peer add takes no arguments"}
	}
	if c.out == "" {
		return &UsageError{Msg: "peer add needs --out FILE"}
	}
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	root, err := cl.ServerRoot(ctx)
	if err != nil {
		return err
	}
	creds, err := transport.NewKeyCreds(transport.KindKey, root)
	if err != nil {
		return err
	}
	pub, err := creds.PublicKey()
	if err != nil {
		return err
	}
	text := "peer"
	if c.desc != "" {
		text = "peer: " + c.desc
	}
	pts := []crdt.Point{{Node: root, Type: crdt.TypeAuthKey, Key: pub, Value: 1, Text: text}}
	if err := provisionKey(ctx, cl, c.out, creds, pts); err != nil {
		return err
	}
	if c.asJSON {
		return printJSON(c.m.Stdout, map[string]string{"root": root.String(), "key": pub})
	}
	fmt.Fprintln(c.m.Stdout, pub)
	return nil
}

const userAddUsage = `Usage: siot user add [--parent NODE] --email ADDR [--admin] [--id UUID] [--json]

Create a user under NODE (default: the root) who signs in with ADDR and a
password, read from standard input (its first line) or asked for on a
terminal: in the web UI that "siot serve" serves, or with "siot login".
The password is hashed (argon2id) here: the server never sees it. The user
may read and write NODE and everything below it (its parents' subtrees,
when it has several); with --admin it may also add, move, delete and
restore nodes there, add users and revoke devices' keys (keys themselves
are the local administrator's to create). "siot user rm" revokes.

Examples:
  echo 'correct horse battery staple' | siot user add --parent 6f1c0c55-6bb4-4a63-9a8d-7d0f0c8f3a1e --email ann@example.com
  siot user add --parent 6f1c0c55-6bb4-4a63-9a8d-7d0f0c8f3a1e --email bob@example.com --admin
`

type userAddCmd struct {
	clientCmd
	parent, email, id string
	admin             bool
}

func (c *userAddCmd) usage() string { return userAddUsage }

func (c *userAddCmd) flags(fs *flag.FlagSet) {
	c.register(fs, `print {"node","parent"}`)
	fs.StringVar(&c.parent, "parent", "", "the node the user is placed under (default: the root)")
	fs.StringVar(&c.email, "email", "", "the address the user signs in with (required)")
	fs.StringVar(&c.id, "id", "", "the user node's UUID (default: a random one)")
	fs.BoolVar(&c.admin, "admin", false, "let the user change structure under --parent")
}

func (c *userAddCmd) run(ctx context.Context, args []string) error {
	if len(args) > 0 {
		return &UsageError{Msg: "user add takes no arguments"}
	}
	if c.email == "" {
		return &UsageError{Msg: "user add needs --email ADDR"}
	}
	email := transport.NormalizeEmail(c.email)
	if !strings.Contains(email, "@") || len(email) > 254 || strings.ContainsAny(email, " \t\r\n") {
		return &UsageError{Msg: fmt.Sprintf("--email %q: not an email address", c.email)}
	}
	id, parent, err := newNodeFlags(c.id, c.parent)
	if err != nil {
		return err
	}
	password, err := readPassword(c.m, "Password for "+email+": ", true)
	if err != nil {
		return err
	}
	hash, err := transport.HashPassword(password, rand.Reader)
	if err != nil {
		return &UsageError{Msg: err.Error()}
	}
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	if parent == uuid.Nil {
		if parent, err = cl.Root(ctx); err != nil {
			return err
		}
	} else if err := cl.Known(ctx, parent); err != nil {
		return fmt.Errorf("--parent: %w", err)
	}
	pts := []crdt.Point{
		{Node: id, Parent: parent, Type: crdt.TypeEdge},
		{Node: id, Type: crdt.TypeNodeType, Text: "user"},
		{Node: id, Type: typeDescription, Text: email},
		{Node: id, Type: crdt.TypeEmail, Text: email},
		{Node: id, Type: crdt.TypePassword, Text: hash},
	}
	if c.admin {
		pts = append(pts, crdt.Point{Node: id, Parent: parent, Type: crdt.TypeRole, Text: crdt.RoleAdmin})
	}
	if err := validate(pts); err != nil {
		return err
	}
	if _, err := cl.Set(ctx, pts...); err != nil {
		return err
	}
	if c.asJSON {
		return printJSON(c.m.Stdout, map[string]string{"node": id.String(), "parent": parent.String()})
	}
	fmt.Fprintln(c.m.Stdout, id)
	return nil
}

const userRmUsage = `Usage: siot user rm USER [--json]

Revoke a user: tombstone its password and sign-in address. On every
instance that syncs it, its sessions close within seconds and its tokens
stop working; the node stays (delete it with "siot node rm").

Examples:
  siot user rm 1b4e28ba-2fa1-11d2-883f-0016d3cca427
`

type userRmCmd struct{ clientCmd }

func (c *userRmCmd) usage() string { return userRmUsage }

func (c *userRmCmd) flags(fs *flag.FlagSet) { c.register(fs, `print {"node"}`) }

func (c *userRmCmd) run(ctx context.Context, args []string) error {
	id, err := oneNode("user rm", "USER", args)
	if err != nil {
		return err
	}
	cl, err := c.cf.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.Known(ctx, id); err != nil {
		return err
	}
	pts := []crdt.Point{
		{Node: id, Type: crdt.TypePassword, Tombstone: true},
		{Node: id, Type: crdt.TypeEmail, Tombstone: true},
	}
	if err := validate(pts); err != nil {
		return err
	}
	if _, err := cl.Set(ctx, pts...); err != nil {
		return err
	}
	if c.asJSON {
		return printJSON(c.m.Stdout, map[string]string{"node": id.String()})
	}
	fmt.Fprintf(c.m.Stdout, "revoked user %v\n", id)
	return nil
}

const loginUsage = `Usage: siot login --email ADDR [--out FILE] [--ttl DURATION] [--server URL] [--json]

Sign in as a user: the password is read from standard input (its first
line) or asked for on a terminal, and the server answers with a
short-lived credential for client commands (--ttl, at most the server's
limit of 12h by default). It is written to FILE (mode 0600), or printed
(a JSON object). With --out and --json, print {"user","expires","file"}.
Failed attempts slow down the next ones from the same address.

Examples:
  siot login --email ann@example.com --out ann.creds
  siot node ls --creds ann.creds
`

type loginCmd struct {
	m       *Main
	cf      clientFlags
	email   string
	out     string
	ttl     time.Duration
	replace bool
	asJSON  bool
}

func (c *loginCmd) usage() string { return loginUsage }

func (c *loginCmd) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.cf.server, "server", envOr(c.m.Getenv, "SIOT_SERVER", defaultServer), "NATS URL of the siot server (env SIOT_SERVER)")
	fs.StringVar(&c.cf.tlsCA, "tls-ca", envOr(c.m.Getenv, "SIOT_TLS_CA", ""), "PEM file of the CAs the server's TLS certificate must chain to (env SIOT_TLS_CA)")
	fs.DurationVar(&c.cf.timeout, "timeout", 30*time.Second, "how long to wait for each reply")
	fs.StringVar(&c.email, "email", "", "the address to sign in with (required)")
	fs.StringVar(&c.out, "out", "", "write the credential to this file (mode 0600) instead of printing it")
	fs.DurationVar(&c.ttl, "ttl", 0, "how long the credential lasts (default and limit: the server's)")
	fs.BoolVar(&c.replace, "replace", false, "overwrite --out if it exists")
	fs.BoolVar(&c.asJSON, "json", false, `with --out, print {"user","expires","file"} (without, the credential printed is JSON already)`)
}

func (c *loginCmd) run(ctx context.Context, args []string) error {
	if len(args) > 0 {
		return &UsageError{Msg: "login takes no arguments"}
	}
	if c.email == "" {
		return &UsageError{Msg: "login needs --email ADDR"}
	}
	if c.ttl < 0 || c.ttl > 0 && c.ttl < time.Second {
		return &UsageError{Msg: "--ttl: at least 1s"}
	}
	password, err := readPassword(c.m, "Password for "+c.email+": ", false)
	if err != nil {
		return err
	}
	cl, err := c.cf.dialWith(client.WithLogin(c.email, password), client.WithoutReconnect(), client.WithName("siot login"))
	if err != nil {
		return err
	}
	defer cl.Close()
	creds, err := cl.Token(ctx, c.ttl)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	if c.out == "" {
		b, err := creds.Marshal()
		if err != nil {
			return err
		}
		_, err = c.m.Stdout.Write(b)
		return err
	}
	if err := transport.WriteCreds(c.out, creds, c.replace); err != nil {
		return err
	}
	if c.asJSON {
		return printJSON(c.m.Stdout, map[string]string{"user": creds.Node.String(), "expires": creds.Expires.UTC().Format(time.RFC3339), "file": c.out})
	}
	fmt.Fprintf(c.m.Stderr, "signed in as user %v until %s; credential in %s\n", creds.Node, creds.Expires.Format(time.RFC3339), c.out)
	return nil
}

// readPassword reads a password: asked for without echo on a terminal
// (twice when confirm is set), else the first line of standard input.
func readPassword(m *Main, prompt string, confirm bool) (string, error) {
	if f, ok := m.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(m.Stderr, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(m.Stderr)
		if err != nil {
			return "", fmt.Errorf("password: %w", err)
		}
		if confirm {
			fmt.Fprint(m.Stderr, "Again: ")
			b2, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(m.Stderr)
			if err != nil {
				return "", fmt.Errorf("password: %w", err)
			}
			if string(b) != string(b2) {
				return "", errors.New("password: the two entries differ")
			}
		}
		return string(b), nil
	}
	line, err := bufio.NewReader(io.LimitReader(m.Stdin, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("password: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", &UsageError{Msg: "no password on standard input"}
	}
	return line, nil
}
