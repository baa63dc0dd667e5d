//go:build linux

package store

import (
	"os"
	"syscall"
	"unsafe"
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

// openDirect opens the journal at path for O_DIRECT writes, or returns nil when its file
// system does not take them: it writes the ring's first block (zeros, as reset left it) and
// fdatasyncs it as a trial.
func openDirect(path string) *os.File {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	raw := make([]byte, 2*directAlign)
	at := -int(uintptr(unsafe.Pointer(&raw[0]))) & (directAlign - 1)
	if _, err := f.WriteAt(raw[at:at+directAlign], 0); err != nil || datasync(f) != nil {
		f.Close()
		return nil
	}
	return f
}

// freeBytes is the room left for an unprivileged writer on dir's file system, or -1.
func freeBytes(dir string) int64 {
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil {
		return -1
	}
	return int64(st.Bavail) * st.Bsize
}

// lockFile takes an exclusive lock on f that ends with the process (or f's closing).
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
