package store

import (
	"context"
	"database/sql"
	"sync"
)

// Statements on the hot paths are prepared once and reused: SQLite's parser and planner
// cost more than executing a small query, and the driver keeps a prepared statement's
// handle. Readers prepare on first use (any connection of the pool; database/sql prepares
// on the others as they run it). The writer has a single connection, which a transaction
// holds while its operations run, so its statements are prepared when the store opens
// (writerSQL); a statement missing there is prepared in the transaction each time, which is
// correct and only slower.

// writerSQL lists the statements run inside writer transactions on the hot paths (the
// message commit, queue claims and results, the IMAP indexer's writes).
var writerSQL = []string{
	insertMessageSQL, insertInboxSQL, bumpInboxSQL, insertQueueSQL,
	claimQueueSQL, deleteQueueSQL, deleteQueueByIDSQL, updateQueueAttemptSQL, updateQueueSQL, insertAttemptSQL,
	deleteUnreferencedSQL, deleteUnreferencedKnownSQL, insertMetaSQL, insertSearchSQL,
}

// stmtCache holds prepared statements by their SQL text.
type stmtCache struct {
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func (c *stmtCache) get(q string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[q]
}

// put keeps st for q unless another caller was first; it returns the statement to use.
func (c *stmtCache) put(q string, st *sql.Stmt) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[q]; old != nil {
		st.Close()
		return old
	}
	if c.m == nil {
		c.m = map[string]*sql.Stmt{}
	}
	c.m[q] = st
	return st
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	c.m = nil
}

// prepareWriter prepares writerSQL on the writer (when the store opens).
func (s *Store) prepareWriter(ctx context.Context) error {
	for _, q := range writerSQL {
		st, err := s.w.PrepareContext(ctx, q)
		if err != nil {
			return err
		}
		s.wst.put(q, st)
	}
	return nil
}

// wstmt returns q prepared for tx, a writer transaction.
func (s *Store) wstmt(ctx context.Context, tx *sql.Tx, q string) (*sql.Stmt, error) {
	if st := s.wst.get(q); st != nil {
		return tx.StmtContext(ctx, st), nil
	}
	return tx.PrepareContext(ctx, q)
}

// rstmt returns q prepared on the reader pool.
func (s *Store) rstmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st := s.rst.get(q); st != nil {
		return st, nil
	}
	st, err := s.r.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	return s.rst.put(q, st), nil
}

// rquery runs the reader query q (a prepared statement, see rstmt).
// rdb returns the reader pool for a read that must see every commit Deliver has answered
// (see flushPending).
func (s *Store) rdb(ctx context.Context) *sql.DB {
	s.flushPending(ctx)
	return s.r
}

func (s *Store) rquery(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	s.flushPending(ctx)
	st, err := s.rstmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// rrow runs the reader query q for one row; errors surface at Scan as with QueryRowContext.
func (s *Store) rrow(ctx context.Context, q string, args ...any) *sql.Row {
	s.flushPending(ctx)
	st, err := s.rstmt(ctx, q)
	if err != nil {
		// QueryRowContext on the pool reports the same preparation error at Scan.
		return s.r.QueryRowContext(ctx, q, args...)
	}
	return st.QueryRowContext(ctx, args...)
}
