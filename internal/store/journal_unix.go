//go:build linux

package store

import (
	"os"
	"syscall"
)

// datasync is fdatasync: the journal's records, without the file's timestamps.
func datasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// lockFile takes an exclusive lock on f that ends with the process (or f's closing).
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
