package store

import (
	"os"
	"syscall"
)

// allocate reserves size bytes of disk for f without writing them.
func allocate(f *os.File, size int64) error {
	return syscall.Fallocate(int(f.Fd()), 0, 0, size)
}

// flockTry takes and releases an exclusive lock on f; it fails when
// another process holds it.
func flockTry(f *os.File) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return err
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
