package store

import (
	"errors"
	"testing"

	"github.com/siot-io/siot/crdt"
)

// A panic of a scan's callback is the caller's bug, not a damaged table:
// it is raised again, not reported as ErrCorrupt (it was, before).
func TestCallbackPanicIsNotCorruption(t *testing.T) {
	s := openTest(t, "")
	defer s.Close()
	mustApply(t, s, crdt.Point{Node: s.Root(), Type: "temp", Key: "0", Value: 1, Time: 1, Origin: s.Root()})
	var got any
	func() {
		defer func() { got = recover() }()
		err := s.ScanAll(func(*crdt.Point) error {
			var m map[string]int
			m["x"] = 1 // a bug: assignment to a nil map
			return nil
		})
		t.Errorf("ScanAll returned %v after its callback panicked", err)
	}()
	if got == nil {
		t.Fatal("the callback's panic was swallowed")
	}
	if err, ok := got.(error); ok && errors.Is(err, ErrCorrupt) {
		t.Fatalf("a callback's bug reported as corruption: %v", err)
	}
}

// fromBadger tells a panic raised in Badger from one raised by the code
// Badger called back.
func TestFromBadger(t *testing.T) {
	inBadger := []byte("goroutine 1 [running]:\nruntime/debug.Stack()\n\t/x.go:1\ngithub.com/siot-io/siot/store.readPanic()\n\t/y.go:2\npanic({0x1, 0x2})\n\t/runtime/panic.go:3\nruntime.goPanicSliceB(...)\n\t/z.go:4\ngithub.com/dgraph-io/badger/v4/table.(*Table).block(0x1)\n\t/t.go:5\ngithub.com/siot-io/siot/store.(*Store).view(...)\n")
	inCallback := []byte("goroutine 1 [running]:\nruntime/debug.Stack()\n\t/x.go:1\npanic({0x1, 0x2})\n\t/runtime/panic.go:3\ngithub.com/siot-io/siot/store.TestX.func1(...)\n\t/a.go:1\ngithub.com/dgraph-io/badger/v4.(*DB).View(0x1)\n\t/db.go:5\n")
	if !fromBadger(inBadger) || fromBadger(inCallback) || fromBadger([]byte("no panic here")) {
		t.Fatal("fromBadger misreads a stack")
	}
}

// Reads failing on a damaged table search for it once a minute, not once
// each: the search reads every table.
func TestDamageSearchReused(t *testing.T) {
	var c damageCache
	searches := 0
	search := func() error { searches++; return ErrCorrupt }
	for range 100 {
		if err := c.find(search); !errors.Is(err, ErrCorrupt) {
			t.Fatal(err)
		}
	}
	if searches != 1 {
		t.Fatalf("%d searches for 100 failed reads", searches)
	}
	c.at = c.at.Add(-damageReuse)
	c.find(search)
	if searches != 2 {
		t.Fatalf("the result was reused past %v", damageReuse)
	}
}
