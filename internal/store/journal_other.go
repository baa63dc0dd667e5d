//go:build !linux

package store

import "os"

func datasync(f *os.File) error { return f.Sync() }

// freeBytes: not known here; the journal takes its default size.
func freeBytes(string) int64 { return -1 }

// openDirect: O_DIRECT only on Linux; elsewhere records go through the page cache.
func openDirect(string) *os.File { return nil }

// lockFile: only Linux builds lock the journal; elsewhere two servers on one data directory
// are not detected.
func lockFile(*os.File) error { return nil }
