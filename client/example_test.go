package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/client"
	"github.com/siot-io/siot/transport"
)

// TestMain runs the examples against a real server started here: they
// find it as a program would, in SIOT_SERVER and SIOT_CREDS.
func TestMain(m *testing.M) {
	os.Exit(runWithServer(m))
}

func runWithServer(m *testing.M) int {
	tb := &mainTB{}
	dir, err := os.MkdirTemp("", "siot-client-example-*")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	tb.dir = dir
	s := startServer(tb)
	defer tb.cleanup()
	creds := filepath.Join(dir, "admin.creds")
	if err := transport.WriteCreds(creds, s.admin, false); err != nil {
		log.Fatal(err)
	}
	os.Setenv("SIOT_SERVER", s.url)
	os.Setenv("SIOT_CREDS", creds)
	return m.Run()
}

// mainTB is the testing.TB of TestMain's server: a failure ends the run.
type mainTB struct {
	testing.TB
	dir      string
	n        int
	cleanups []func()
}

func (m *mainTB) Helper()                   {}
func (m *mainTB) Fatal(a ...any)            { log.Fatal(a...) }
func (m *mainTB) Errorf(f string, a ...any) { log.Printf(f, a...) }
func (m *mainTB) Cleanup(f func())          { m.cleanups = append(m.cleanups, f) }
func (m *mainTB) TempDir() string {
	m.n++
	d := filepath.Join(m.dir, fmt.Sprint(m.n))
	if err := os.Mkdir(d, 0o700); err != nil {
		log.Fatal(err)
	}
	return d
}
func (m *mainTB) cleanup() {
	for i := len(m.cleanups) - 1; i >= 0; i-- {
		m.cleanups[i]()
	}
}

// An edge application connects to its local siot server with the
// server's administrator credentials, adds a sensor node and writes a
// reading.
func Example() {
	ctx := context.Background()
	cl, err := client.Dial(ctx, os.Getenv("SIOT_SERVER"), client.WithCredsFile(os.Getenv("SIOT_CREDS")))
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()

	sensor, _, err := cl.Node.Add(ctx, client.NewNode{Type: "sensor", Description: "boiler temperature"})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := cl.Set(ctx, client.Point{Node: sensor, Type: "temp", Value: 21.5}); err != nil {
		log.Fatal(err)
	}
	pts, err := cl.Get(ctx, sensor)
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range pts {
		if !p.IsEdge() {
			fmt.Printf("%s = %v %q\n", p.Type, p.Value, p.Text)
		}
	}
	// Output:
	// description = 0 "boiler temperature"
	// nodeType = 0 "sensor"
	// temp = 21.5 ""
}

// Watch yields every change the server stores, from a change number on;
// it resumes by itself after the connection drops.
func ExampleClient_Watch() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl, err := client.Dial(ctx, os.Getenv("SIOT_SERVER"), client.WithCredsFile(os.Getenv("SIOT_CREDS")))
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	st, err := cl.Status(ctx)
	if err != nil {
		log.Fatal(err)
	}
	sensor, _, err := cl.Node.Add(ctx, client.NewNode{Type: "sensor"})
	if err != nil {
		log.Fatal(err)
	}
	for i := range 3 {
		if _, err := cl.Set(ctx, client.Point{Node: sensor, Type: "level", Key: fmt.Sprint(i), Value: float64(10 * i)}); err != nil {
			log.Fatal(err)
		}
	}
	seen := 0
	for ch, err := range cl.Watch(ctx, sensor, client.After(st.LastSeq)) {
		if err != nil {
			log.Fatal(err)
		}
		if p := ch.Point; p.Type == "level" {
			fmt.Printf("level.%s = %v\n", p.Key, p.Value)
			if seen++; seen == 3 {
				break
			}
		}
	}
	// Output:
	// level.0 = 0
	// level.1 = 10
	// level.2 = 20
}

// Import writes point records as it reads them: here from a string, in
// practice from a pipe that a sensor program writes to.
func ExampleClient_Import() {
	ctx := context.Background()
	cl, err := client.Dial(ctx, os.Getenv("SIOT_SERVER"), client.WithCredsFile(os.Getenv("SIOT_CREDS")))
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	root, err := cl.Root(ctx)
	if err != nil {
		log.Fatal(err)
	}
	pump := uuid.New()
	in := strings.NewReader(fmt.Sprintf(`{"node":%q,"parent":%q,"type":"edge"}
{"node":%q,"type":"flow","value":12.5}
{"node":%q,"type":"flow","value":12.75}
`, pump, root, pump, pump))
	res, err := cl.Import(ctx, in, client.ImportOptions{Name: "readings"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("records:", res.Records, "applied:", res.Applied)
	pts, err := cl.Get(ctx, pump)
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range pts {
		if p.Type == "flow" {
			fmt.Println("flow:", p.Value) // the later line won
		}
	}
	// Output:
	// records: 3 applied: 3
	// flow: 12.75
}

// A point's past values: every reading, oldest first, then their count
// and mean per hour from a minute before the first.
func ExampleClient_History() {
	ctx := context.Background()
	cl, err := client.Dial(ctx, os.Getenv("SIOT_SERVER"), client.WithCredsFile(os.Getenv("SIOT_CREDS")))
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	start := time.Now()
	sensor, _, err := cl.Node.Add(ctx, client.NewNode{Type: "sensor"})
	if err != nil {
		log.Fatal(err)
	}
	for _, v := range []float64{20.5, 21, 21.5} {
		if _, err := cl.Set(ctx, client.Point{Node: sensor, Type: "temp", Value: v}); err != nil {
			log.Fatal(err)
		}
	}
	for s, err := range cl.History(ctx, sensor, "temp", "", client.HistoryOptions{}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(s.Value)
	}
	for m, err := range cl.HistorySummaries(ctx, sensor, "temp", "", client.HistoryOptions{From: start.Add(-time.Minute), Step: time.Hour}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%d readings, mean %.2f\n", m.Count, m.Mean)
	}
	// Output:
	// 20.5
	// 21
	// 21.5
	// 3 readings, mean 21.00
}
