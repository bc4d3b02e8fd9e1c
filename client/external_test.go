package client_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/siot-io/siot/transport"
)

// edgeappGoMod is the go.mod of a module outside this repository that
// depends on the client as an application would; the replace points at
// this checkout instead of a published version.
const edgeappGoMod = `module example.com/edgeapp

go 1.26

require (
	github.com/google/uuid v1.6.0
	github.com/siot-io/siot v0.0.0-00010101000000-000000000000
)

replace github.com/siot-io/siot => REPO
`

// edgeappTest is that module's test: it finds its server as a program
// would, in SIOT_SERVER and SIOT_CREDS, writes points with Set and
// SetBatch, and reads them back through Watch and Get.
const edgeappTest = `package edgeapp

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
)

func TestWriteAndWatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := client.Dial(ctx, os.Getenv("SIOT_SERVER"), client.WithCredsFile(os.Getenv("SIOT_CREDS")))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Written before the watch starts: a node (its edge, type and
	// description), a reading, and a batch of 500.
	node, _, err := cl.Node.Add(ctx, client.NewNode{Type: "sensor", Description: "edgeapp"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Set(ctx, client.Point{Node: node, Type: "temp", Value: 21.5}); err != nil {
		t.Fatal(err)
	}
	const n = 500
	batch := make([]client.Point, n)
	for i := range batch {
		batch[i] = client.Point{Node: node, Type: "level", Key: fmt.Sprint(i), Value: float64(i)}
	}
	if res, err := cl.SetBatch(ctx, batch); err != nil || res.Applied != n {
		t.Fatalf("SetBatch: %+v %v", res, err)
	}

	// Every change after the status, each once, in order, with no change
	// number skipped; a point written while watching ends it.
	seen := map[string]int{}
	last := st.LastSeq
	for ch, err := range cl.Watch(ctx, uuid.Nil, client.After(st.LastSeq)) {
		if err != nil {
			t.Fatal(err)
		}
		if ch.Seq != last+1 {
			t.Fatalf("change #%d after #%d", ch.Seq, last)
		}
		last = ch.Seq
		p := ch.Point
		if p.Node != node {
			t.Fatalf("change #%d of another node: %+v", ch.Seq, p)
		}
		seen[p.Parent.String()+"/"+p.Type+"."+p.Key]++
		if len(seen) == n/2 {
			if _, err := cl.Set(ctx, client.Point{Node: node, Type: "done", Value: 1}); err != nil {
				t.Fatal(err)
			}
		}
		if p.Type == "done" {
			break
		}
	}
	if want := 3 + 1 + n + 1; len(seen) != want || int(last-st.LastSeq) != want {
		t.Fatalf("watch: %d registers in %d changes, want %d", len(seen), last-st.LastSeq, want)
	}
	for reg, k := range seen {
		if k != 1 {
			t.Errorf("%s seen %d times", reg, k)
		}
	}

	pts, err := cl.Get(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, p := range pts {
		if !p.IsEdge() {
			values[p.Type+"."+p.Key] = p.Value
		}
	}
	if values["temp.0"] != 21.5 || values["level.499"] != 499 || values["done.0"] != 1 || len(values) != 2+1+n+1 {
		t.Fatalf("get: %d points, temp %v, level.499 %v", len(values), values["temp.0"], values["level.499"])
	}
}
`

// TestExternalModule: a module of its own in a temp directory depends on
// the client (a replace points at this checkout), and its test writes and
// watches points against a running server, and passes. It runs the go
// command offline, with this module's go.sum and the module cache that
// building this module needs (go mod download); -mod=mod lets the go
// command complete the app's go.mod with the client's requirements, as
// go mod tidy would. The first run compiles the client's dependencies
// without -race (some seconds); the build cache makes later runs fast.
func TestExternalModule(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	// The repository is this file's directory's parent. Built with
	// -trimpath the file's name is not absolute; go test runs the test in
	// its package's directory, which is the same.
	_, file, _, _ := runtime.Caller(0)
	pkgDir := filepath.Dir(file)
	if !filepath.IsAbs(pkgDir) {
		var err error
		if pkgDir, err = os.Getwd(); err != nil {
			t.Fatal(err)
		}
	}
	repo := filepath.Dir(pkgDir)
	if mod, err := os.ReadFile(filepath.Join(repo, "go.mod")); err != nil || !strings.HasPrefix(string(mod), "module github.com/siot-io/siot\n") {
		t.Fatalf("%s is not the repository's root: %v", repo, err)
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		if goTool, err = exec.LookPath("go"); err != nil {
			t.Fatal("no go command to build the external module with")
		}
	}
	s := startServer(t)
	dir := t.TempDir()
	creds := filepath.Join(dir, "admin.creds")
	if err := transport.WriteCreds(creds, s.admin, false); err != nil {
		t.Fatal(err)
	}
	app := filepath.Join(dir, "edgeapp")
	sum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		"go.mod":       strings.Replace(edgeappGoMod, "REPO", repo, 1),
		"go.sum":       string(sum),
		"main_test.go": edgeappTest,
		// The README's program, which go vet compiles and checks.
		"readme/main.go": readmeGoClient(t, filepath.Join(repo, "README.md")),
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(app, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(app, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, args := range [][]string{{"test", "-count=1", "./..."}, {"vet", "./..."}} {
		cmd := exec.CommandContext(ctx, goTool, args...)
		cmd.Dir = app
		for _, kv := range os.Environ() {
			switch k, _, _ := strings.Cut(kv, "="); {
			case strings.HasPrefix(k, "SIOT_"), k == "GOFLAGS", k == "GOPROXY", k == "GOWORK", k == "GOTOOLCHAIN":
			default:
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, "SIOT_SERVER="+s.url, "SIOT_CREDS="+creds,
			"GOFLAGS=-mod=mod", // complete go.mod with the client's requirements
			"GOPROXY=off",      // offline: everything comes from the module cache
			"GOWORK=off", "GOTOOLCHAIN=local")
		start := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("go %s in %s: %v\n%s", strings.Join(args, " "), app, time.Since(start).Round(time.Millisecond), out)
		if err != nil {
			t.Fatalf("go %s in the external module: %v\n%s", args[0], err, out)
		}
	}
}

// readmeGoClient returns the Go program of the README's section "The Go
// client".
func readmeGoClient(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## The Go client\n")
	if !ok {
		t.Fatal("README has no section \"The Go client\"")
	}
	_, code, ok := strings.Cut(sec, "```go\n")
	if !ok {
		t.Fatal("README's \"The Go client\" has no Go program")
	}
	code, _, _ = strings.Cut(code, "```")
	if !strings.Contains(code, `"github.com/siot-io/siot/client"`) {
		t.Fatalf("README's Go program does not use the client:\n%s", code)
	}
	return code
}
