package main

import (
	"os"
	"syscall"
)

// fdatasync is what SQLite calls on its WAL (yubin opens it with fdatasync on Linux).
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
