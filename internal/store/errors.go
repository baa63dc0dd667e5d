package store

import (
	"errors"
	"fmt"
	"syscall"

	"modernc.org/sqlite"
)

// sqliteFull is SQLITE_FULL, "database or disk is full". SQLite reports it
// for ENOSPC while writing, and when max_page_count is reached.
const sqliteFull = 13

// isFull reports whether err means the disk or the quota is full.
func isFull(err error) bool {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	var se *sqlite.Error
	// Extended result codes are on; the primary code is the low byte.
	return errors.As(err, &se) && se.Code()&0xff == sqliteFull
}

// classify makes a full-disk error satisfy errors.Is(err, ErrStorageFull),
// keeping the original error in the chain.
func classify(err error) error {
	if err == nil || errors.Is(err, ErrStorageFull) || !isFull(err) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrStorageFull, err)
}
