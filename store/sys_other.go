//go:build !linux

package store

import (
	"errors"
	"os"
)

// allocate reports that this system has no fallocate: the caller writes
// the bytes instead.
func allocate(*os.File, int64) error { return errors.ErrUnsupported }

// flockTry does not check the lock here: Badger's Open does.
func flockTry(*os.File) error { return nil }
