package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// gcChunk bounds how many messages one DeleteUnreferenced transaction
// removes, so it never holds the write lock for long.
const gcChunk = 500

// DeleteUnreferenced removes the messages rows that no mailbox entry and no
// queue row reference, then their blob files, and returns how many messages
// it removed. The rows go first: a crash in between leaves only files
// without rows, which CleanupOrphans removes.
func (s *Store) DeleteUnreferenced(ctx context.Context) (int, error) {
	total := 0
	for {
		var paths []string
		err := s.writeTx(ctx, func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, `
				SELECT id, blob_path FROM messages m
				WHERE NOT EXISTS (SELECT 1 FROM mailbox_messages mm WHERE mm.message_id = m.id)
				  AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.message_id = m.id)
				LIMIT ?`, gcChunk)
			if err != nil {
				return err
			}
			var ids []string
			for rows.Next() {
				var id, p string
				if err := rows.Scan(&id, &p); err != nil {
					rows.Close()
					return err
				}
				ids = append(ids, id)
				paths = append(paths, p)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			for _, id := range ids {
				s.mc.drop(id)
				if _, err := tx.ExecContext(ctx, `DELETE FROM messages WHERE id = ?`, id); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("delete unreferenced messages: %w", err)
		}
		for _, p := range paths {
			if p == "" {
				continue // stored inside the database
			}
			if err := os.Remove(filepath.Join(s.dir, filepath.FromSlash(p))); err != nil && !errors.Is(err, os.ErrNotExist) {
				s.log.Warn("remove blob of deleted message", "path", p, "err", err)
			}
		}
		total += len(paths)
		if len(paths) < gcChunk {
			return total, nil
		}
	}
}

// CleanupOrphans removes what a crash leaves behind and returns how many
// files it removed: files in tmp/ (a session that died while receiving) and
// blob files without a messages row (a crash between the rename and the
// database commit). Only files last modified more than olderThan ago are
// considered, because another process may be between those two steps right
// now; an hour is a safe age. Files this Store is writing or committing are
// never touched. Ages are measured with the system clock, which sets the
// files' modification times, not Options.Now.
func (s *Store) CleanupOrphans(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	removed := 0
	old := func(e os.DirEntry) bool {
		if !e.Type().IsRegular() || s.isLive(e.Name()) {
			return false
		}
		fi, err := e.Info()
		return err == nil && fi.ModTime().Before(cutoff)
	}
	remove := func(p string) {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove orphan", "path", p, "err", err)
			return
		}
		removed++
	}

	tmp := filepath.Join(s.dir, tmpDirName)
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return 0, fmt.Errorf("cleanup orphans: %w", err)
	}
	for _, e := range entries {
		if old(e) {
			remove(filepath.Join(tmp, e.Name()))
		}
	}

	blobs := filepath.Join(s.dir, blobsDirName)
	days, err := os.ReadDir(blobs)
	if err != nil {
		return removed, fmt.Errorf("cleanup orphans: %w", err)
	}
	for _, d := range days {
		if !d.IsDir() {
			continue
		}
		dayDir := filepath.Join(blobs, d.Name())
		entries, err := os.ReadDir(dayDir)
		if err != nil {
			return removed, fmt.Errorf("cleanup orphans: %w", err)
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return removed, fmt.Errorf("cleanup orphans: %w", err)
			}
			if !old(e) {
				continue
			}
			ok, err := exists(ctx, s.r, `SELECT 1 FROM messages WHERE id = ?`, e.Name())
			if err != nil {
				return removed, fmt.Errorf("cleanup orphans: %w", err)
			}
			if !ok {
				remove(filepath.Join(dayDir, e.Name()))
			}
		}
	}
	return removed, nil
}
