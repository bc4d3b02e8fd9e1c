//go:build linux

package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/store"
)

// The disk-full test runs its child in a private mount namespace, where the
// child mounts a small tmpfs and fills it through the store.
const (
	diskFullEnvDir = "SIOT_DISKFULL_CHILD" // the mount point; set only in the child

	diskFullTmpfs = 128 << 20 // the device
	// diskFullRoom is what the store may fill above its floor: the filler
	// written after Open leaves this much above the floor.
	diskFullRoom = 20 << 20

	diskFullPoints = 64   // points per batch
	diskFullText   = 4096 // the most bytes of text per point (both sides of Badger's value threshold)
	tmpfsMagic     = 0x01021994
)

// TestDiskFull fills a real 128 MiB tmpfs through a store configured with
// MinFreeBytes 0 and checks that the store still refuses writes with
// ErrDiskFull before Badger can die of SIGBUS (the floor is raised to
// FloorBytes), that everything acknowledged stays readable and consistent,
// that writes resume once space is freed, and that once the disk is full to
// the last byte the store opens again after the ballast is deleted, as
// docs/operations.md tells an operator to do. It needs root and unshare(1)
// to mount the tmpfs privately; TestDiskFloorRefusesAndRecovers and
// TestFloorRaisedAndBallast cover the same contract with an injected
// FreeSpace.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the child mounts a tmpfs in a private mount namespace (unshare -m)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skipf("needs unshare(1) from util-linux to mount a tmpfs privately: %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("cannot re-execute the test binary: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir() // the mount point; the tmpfs never shows outside the child
	cmd := exec.CommandContext(ctx, unshare, "-m", "--propagation", "private",
		exe, "-test.run=^TestDiskFullChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), diskFullEnvDir+"="+dir)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil && strings.Contains(string(out), "unshare failed") {
		t.Skipf("unshare -m refused (no CAP_SYS_ADMIN here, e.g. an unprivileged container): %s", strings.TrimSpace(string(out)))
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\nchild output:\n%s", fmt.Sprintf(format, args...), out)
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				fail("child killed by %v", ws.Signal())
			}
			if strings.Contains(string(out), "unexpected fault address") || strings.Contains(string(out), "SIGBUS") {
				fail("child crashed with a memory fault (Badger hit the full disk: the floor did not hold): %v", err)
			}
		}
		fail("child failed: %v", err)
	}
	for _, want := range []string{"diskfull: refused after ", "diskfull: writes resumed", "diskfull: disk full, reopened", "diskfull: ballast back", "--- PASS: TestDiskFullChild"} {
		if !strings.Contains(string(out), want) {
			fail("child exited 0 but did not print %q", want)
		}
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "diskfull: ") {
			t.Log(l)
		}
	}
}

// TestDiskFullChild is the child of TestDiskFull; it does nothing (and
// passes) unless SIOT_DISKFULL_CHILD is set. It must run in a private mount
// namespace: it mounts a tmpfs there.
func TestDiskFullChild(t *testing.T) {
	mnt := os.Getenv(diskFullEnvDir)
	if mnt == "" {
		return
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC,
		fmt.Sprintf("size=%d,mode=0700", diskFullTmpfs)); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", mnt, err)
	}
	defer func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	}()
	// Fill only what is certainly the tmpfs just mounted.
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != tmpfsMagic || st.Blocks*uint64(st.Bsize) != diskFullTmpfs {
		t.Fatalf("%s is not the %d-byte tmpfs just mounted (type %#x, %d bytes): refusing to fill it",
			mnt, diskFullTmpfs, st.Type, st.Blocks*uint64(st.Bsize))
	}

	cfg := store.DefaultConfig(filepath.Join(mnt, "data"))
	cfg.Profile = store.ProfileEdge
	cfg.MinFreeBytes = 0 // raised to FloorBytes
	floor := cfg.FloorBytes()
	ballast := filepath.Join(cfg.Dir, store.BallastName)
	s, err := store.Open(cfg)
	if err != nil {
		t.Fatalf("open with the edge profile: %v", err)
	}
	defer func() { s.Close() }() // after a failure; the success path closes it itself
	if fi, err := os.Stat(ballast); err != nil || fi.Size() != int64(floor) {
		t.Fatalf("ballast after the first open: %v %v, want %d bytes", fi, err, floor)
	}
	// Something else takes the disk but diskFullRoom above the floor.
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, diskFullFree(t, mnt)-floor-diskFullRoom), 0o600); err != nil {
		t.Fatal(err)
	}
	w := &diskFullWriter{t: t, rng: rand.New(rand.NewPCG(1, 2)), origin: uuid.New()}

	// Fill the device until the store refuses.
	var refused []crdt.Point
	for refused == nil {
		if w.n == 10_000 {
			t.Fatalf("%d batches accepted on a %d MiB device, none refused", w.n, diskFullTmpfs>>20)
		}
		b := w.batch()
		_, err := s.Apply(b)
		switch {
		case err == nil:
			w.acked = append(w.acked, b...)
		case errors.Is(err, store.ErrDiskFull):
			refused = b
		default:
			t.Fatalf("batch %d: want nil or ErrDiskFull, got %v", w.n, err)
		}
	}
	fmt.Printf("diskfull: refused after %d acked batches (%d points); floor %d MiB, %d MiB free, the store's files take %d MiB\n",
		w.n-1, len(w.acked), floor>>20, diskFullFree(t, mnt)>>20, diskFullUsed(t, cfg.Dir)>>20)
	for _, p := range refused {
		if _, ok, err := s.Get(p.Register()); err != nil || ok {
			t.Fatalf("refused batch wrote register %+v (found %v, err %v)", p.Register(), ok, err)
		}
	}
	w.check(s, "when full")

	// Free space: writes succeed again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		b := w.batch()
		if _, err := s.Apply(b); err != nil {
			t.Fatalf("batch %d after freeing the filler (%d MiB free): %v", w.n, diskFullFree(t, mnt)>>20, err)
		}
		w.acked = append(w.acked, b...)
	}
	w.check(s, "after freeing space")
	fmt.Printf("diskfull: writes resumed, %d batches acked in all\n", len(w.acked)/diskFullPoints)
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	// Something else fills the disk to the last byte while the store is
	// down. The operator deletes the ballast, as docs/operations.md says,
	// and the store opens and serves everything.
	diskFullFillUp(t, filler)
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	s, err = store.Open(cfg)
	if err != nil {
		t.Fatalf("reopen on a full disk with the ballast deleted: %v", err)
	}
	w.check(s, "after reopening on a full disk")
	if _, err := os.Stat(ballast); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ballast made again with no room for it: %v", err)
	}
	fmt.Printf("diskfull: disk full, reopened after deleting the ballast, all %d acked points readable, Verify passed; %d MiB free\n",
		len(w.acked), diskFullFree(t, mnt)>>20)
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	// Room again: the next open makes the ballast again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s, err = store.Open(cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if fi, err := os.Stat(ballast); err != nil || fi.Size() != int64(floor) {
		t.Fatalf("ballast once there is room: %v %v, want %d bytes", fi, err, floor)
	}
	w.check(s, "after freeing the disk")
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	fmt.Printf("diskfull: ballast back (%d MiB), %d MiB free\n", floor>>20, diskFullFree(t, mnt)>>20)
}

// diskFullFillUp writes path until the device is full.
func diskFullFillUp(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				if len(buf) == 1 {
					return
				}
				buf = buf[:len(buf)/2]
				continue
			}
			t.Fatal(err)
		}
	}
}

// diskFullWriter makes batches of new registers with random text (1 byte
// to 4 KiB), so that every batch takes space, and remembers the acked
// points.
type diskFullWriter struct {
	t      *testing.T
	rng    *rand.Rand
	origin uuid.UUID
	n      int // batches made
	acked  []crdt.Point
}

func (w *diskFullWriter) batch() []crdt.Point {
	w.n++
	node := uuid.New()
	b := make([]crdt.Point, diskFullPoints)
	for i := range b {
		text := make([]byte, 1+w.rng.IntN(diskFullText))
		for j := range text {
			text[j] = 'a' + byte(w.rng.IntN(26))
		}
		b[i] = crdt.Point{Node: node, Type: "log", Key: fmt.Sprintf("k%03d", i), Text: string(text),
			Time: crdt.NewTimestamp(1_700_000_000_000+int64(w.n), uint16(i)), Origin: w.origin}
		b[i].Normalize()
	}
	return b
}

// check reads back every acked point and verifies the store.
func (w *diskFullWriter) check(s *store.Store, when string) {
	w.t.Helper()
	for _, want := range w.acked {
		got, ok, err := s.Get(want.Register())
		if err != nil || !ok || crdt.Compare(&got, &want) != 0 {
			w.t.Fatalf("%s: acked point %+v: read %v %v", when, want.Register(), ok, err)
		}
	}
	if err := s.Verify(); err != nil {
		w.t.Fatalf("%s: %v", when, err)
	}
}

// diskFullUsed returns the bytes allocated to the files under dir (Badger's
// files are sparse: their sizes overstate what they take).
func diskFullUsed(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			return err
		}
		n += st.Blocks * 512
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func diskFullFree(t *testing.T, dir string) uint64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Bavail * uint64(st.Bsize)
}
