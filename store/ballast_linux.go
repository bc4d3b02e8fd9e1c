package store

import (
	"os"
	"syscall"
)

// allocate reserves size bytes of disk for f without writing them.
func allocate(f *os.File, size int64) error {
	return syscall.Fallocate(int(f.Fd()), 0, 0, size)
}
