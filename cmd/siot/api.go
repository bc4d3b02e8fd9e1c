package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"strconv"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/crdt"
)

// Client helpers over the local API shared by node, set, get and watch.

// typeDescription is the node point whose text describes a node for people
// (replica.TypeDescription).
const typeDescription = client.TypeDescription

// clientCmd is what every command that talks to a server and prints has:
// its Main, the client flags and --json.
type clientCmd struct {
	m      *Main
	cf     clientFlags
	asJSON bool
}

// register defines the client flags and --json (described by jsonUsage).
func (c *clientCmd) register(fs *flag.FlagSet, jsonUsage string) {
	c.cf.register(fs, c.m.Getenv)
	fs.BoolVar(&c.asJSON, "json", false, jsonUsage)
}

// parseNode parses a node ID given on the command line; what names it in
// the error ("NODE", "--parent").
func parseNode(what, s string) (uuid.UUID, error) {
	id, err := crdt.ParseID(s)
	if err != nil {
		return uuid.Nil, &UsageError{Msg: fmt.Sprintf("%s: %v", what, err)}
	}
	return id, nil
}

// newNodeFlags parses the --id and --parent of a command that creates a
// node: id is random without --id, parent uuid.Nil without --parent.
func newNodeFlags(idFlag, parentFlag string) (id, parent uuid.UUID, err error) {
	id = uuid.New()
	if idFlag != "" {
		if id, err = parseNode("--id", idFlag); err != nil {
			return uuid.Nil, uuid.Nil, err
		}
	}
	if parentFlag != "" {
		if parent, err = parseNode("--parent", parentFlag); err != nil {
			return uuid.Nil, uuid.Nil, err
		}
	}
	return id, parent, nil
}

// oneNode parses the single argument of command cmd, a node named what
// (NODE, USER): a usage error when there is not exactly one.
func oneNode(cmd, what string, args []string) (uuid.UUID, error) {
	if len(args) != 1 {
		return uuid.Nil, &UsageError{Msg: fmt.Sprintf("%s takes one %s", cmd, what)}
	}
	return parseNode(what, args[0])
}

// optionalNode parses args, at most one node ID (what names it): uuid.Nil
// when there is none.
func optionalNode(what string, args []string) (uuid.UUID, error) {
	if len(args) == 0 {
		return uuid.Nil, nil
	}
	return parseNode(what, args[0])
}

// validate checks points built from the command line before anything is
// sent: a bad one is a usage error.
func validate(pts []crdt.Point) error {
	for i := range pts {
		pts[i].Normalize()
		if err := pts[i].ValidateUnstamped(); err != nil {
			return &UsageError{Msg: err.Error()}
		}
	}
	return nil
}

// dialAt dials the server and checks the node a listing starts from:
// root, or the top of what the credentials reach when root is uuid.Nil.
// The caller closes the client.
func dialAt(ctx context.Context, cf *clientFlags, root uuid.UUID) (*client.Client, uuid.UUID, error) {
	cl, err := cf.dial()
	if err != nil {
		return nil, uuid.Nil, err
	}
	if root == uuid.Nil {
		root, err = cl.Root(ctx)
	} else {
		err = cl.Known(ctx, root)
	}
	if err != nil {
		cl.Close()
		return nil, uuid.Nil, err
	}
	return cl, root, nil
}

// formatValue writes a point's value for people: a whole number below
// 2^53 in full (a Unix time in milliseconds reads 1796569297942, not
// 1.796569297942e+12), anything else in the shortest form that reads back
// exactly.
func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
