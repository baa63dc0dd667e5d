package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The outbound queue: one row per (message, remote recipient), written by Deliver in the same
// transaction as the message, and a timeline of delivery attempts per row.
//
// A row moves through these states (QueueState):
//
//	queued   --claim-->  active    (a delivery is in progress)
//	active   --2xx-->    deleted   (delivered)
//	active   --4xx-->    queued    (next_attempt = now + backoff)
//	active   --5xx/expiry--> bouncing (the bounce is being committed) --> deleted
//	failed   --claim-->  bouncing  (failed earlier; its bounce is still owed)
//
// "active" and "bouncing" are claims held by the one running scheduler; when it starts it turns
// them back into "queued" and "failed" (ResetQueueClaims), so a crash in the middle of a delivery
// or of a bounce loses nothing: the delivery is attempted again (a duplicate at worst), the
// bounce is committed again (a duplicate at worst). A PostgreSQL backend serving several nodes
// will need a claim owner and lease instead.
//
// The due selection reads the index queue_due (state, next_attempt) in order and stops after
// the requested count, so its cost per entry does not depend on how many rows wait for later
// or how long the queue's history is. The message-level DSN parameters (RET, ENVID, SMTPUTF8,
// 8BITMIME) are repeated on each row of a message so that claiming needs no second table.
const schemaQueue = `
CREATE TABLE queue (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	message_id   TEXT NOT NULL REFERENCES messages (id),
	rcpt         TEXT NOT NULL,
	domain       TEXT NOT NULL,
	state        TEXT NOT NULL,
	attempts     INTEGER NOT NULL DEFAULT 0,
	next_attempt INTEGER NOT NULL,
	last_attempt INTEGER NOT NULL DEFAULT 0,
	last_error   TEXT NOT NULL DEFAULT '',
	last_mx      TEXT NOT NULL DEFAULT '',
	created      INTEGER NOT NULL,
	expires      INTEGER NOT NULL,
	warned       INTEGER NOT NULL DEFAULT 0,
	notify       TEXT NOT NULL DEFAULT '',
	orcpt        TEXT NOT NULL DEFAULT '',
	ret          TEXT NOT NULL DEFAULT '',
	envid        TEXT NOT NULL DEFAULT '',
	smtputf8     INTEGER NOT NULL DEFAULT 0,
	body_8bit    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX queue_message ON queue (message_id);
CREATE INDEX queue_due ON queue (state, next_attempt);
CREATE TABLE queue_attempts (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	queue_id INTEGER NOT NULL REFERENCES queue (id) ON DELETE CASCADE,
	time     INTEGER NOT NULL,
	mx       TEXT NOT NULL DEFAULT '',
	ip       TEXT NOT NULL DEFAULT '',
	tls      TEXT NOT NULL DEFAULT '',
	reply    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX queue_attempts_entry ON queue_attempts (queue_id);
`

// insertQueueSQL is the statement Deliver prepares for one remote recipient.
// Its state is queued, or active when the commit hands the entry to the scheduler itself
// (Commit.Claim).
// Its id comes from queueIDs; NULL lets SQLite choose.
const insertQueueSQL = `INSERT INTO queue (id, message_id, rcpt, domain, state, next_attempt, created, expires,
	notify, orcpt, ret, envid, smtputf8, body_8bit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// queueIDs hands out the ids of new queue rows from blocks reserved in sqlite_sequence.
//
// The queue's AUTOINCREMENT keeps ids from being reused (an operator's "queue remove 7" or a
// trace must never meet another entry 7), but it pays for that with a write of
// sqlite_sequence in every transaction that adds a row: a whole page, one of the six WAL
// frames of a relayed message's commit. SQLite writes sqlite_sequence only when a row's id
// goes beyond the recorded value, so ids taken below it cost nothing there: a block of
// queueIDBlock ids is recorded at once and handed out one by one. A restart forgets the
// rest of a block: ids jump, and are never reused.
type queueIDs struct {
	mu          sync.Mutex
	next, limit int64 // next id to hand out; the block ends at limit (next > limit: none)
}

const queueIDBlock = 1024

// take returns the next id, reserving a new block in tx first when needed. A transaction
// that fails after a reservation must call reset: the block is not recorded then.
func (q *queueIDs) take(ctx context.Context, tx *sql.Tx) (int64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.next == 0 || q.next > q.limit {
		// Past both the recorded value and the largest id: rows added without an id
		// (NULL: SQLite's choice) always land above the block.
		var base int64
		err := tx.QueryRowContext(ctx, `SELECT max(
			coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'queue'), 0),
			coalesce((SELECT max(id) FROM queue), 0))`).Scan(&base)
		if err != nil {
			return 0, fmt.Errorf("reserve queue ids: %w", err)
		}
		res, err := tx.ExecContext(ctx, `UPDATE sqlite_sequence SET seq = ? WHERE name = 'queue'`, base+queueIDBlock)
		if err != nil {
			return 0, fmt.Errorf("reserve queue ids: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			if _, err := tx.ExecContext(ctx, `INSERT INTO sqlite_sequence (name, seq) VALUES ('queue', ?)`, base+queueIDBlock); err != nil {
				return 0, fmt.Errorf("reserve queue ids: %w", err)
			}
		}
		q.next, q.limit = base+1, base+queueIDBlock
	}
	id := q.next
	q.next++
	return id, nil
}

// reset forgets the current block: the transaction that reserved it may have rolled back.
func (q *queueIDs) reset() {
	q.mu.Lock()
	q.next, q.limit = 0, 0
	q.mu.Unlock()
}

// QueueState is the state of a queue entry (see the state diagram in queue.go).
type QueueState string

const (
	QueueQueued   QueueState = "queued"   // waiting for NextAttempt
	QueueActive   QueueState = "active"   // claimed: a delivery is in progress
	QueueFailed   QueueState = "failed"   // failed for good; its bounce is still owed
	QueueBouncing QueueState = "bouncing" // claimed: its bounce is being committed
)

// QueueEntry is one queue row with the fields of its message that delivery needs.
type QueueEntry struct {
	ID          int64
	MessageID   string
	From        string // envelope sender of the message, "" for the null sender
	Rcpt        string // the remote recipient
	Domain      string // Rcpt's domain, lower-cased: the destination
	State       QueueState
	Attempts    int // attempts that ended in a temporary failure
	NextAttempt time.Time
	LastAttempt time.Time // zero before the first attempt
	LastError   string    // the last reply, one line: "451 4.7.1 try later"
	LastMX      string    // the host that gave LastError; "" when yubin made it up
	Created     time.Time
	Expires     time.Time
	Warned      bool // a delay warning has been sent

	// RFC 3461 parameters, as received (xtext not decoded).
	Notify string // "" (not given), "NEVER" or a comma list of SUCCESS, FAILURE, DELAY
	ORCPT  string // "rfc822;..." or ""
	Ret    string // "FULL", "HDRS" or ""
	EnvID  string
	// RFC 6531 SMTPUTF8 and RFC 6152 BODY=8BITMIME of the message.
	SMTPUTF8, EightBit bool

	Size       int64     // the stored message's size (blob, Return-Path line included)
	ReceivedAt time.Time // when the message arrived
	BlobPath   string    // the message's file relative to the store, "" when the database holds it
}

// QueueAttempt is one connection attempt in an entry's timeline.
type QueueAttempt struct {
	Time  time.Time
	MX    string // host name tried
	IP    string // address connected to, "" if none
	TLS   string // e.g. "TLS1.3 verified", "none", "unverified: unknown authority"
	Reply string // the reply or error that ended the attempt, one line
}

// QueueUpdate is the outcome of one attempt for one claimed entry, applied by UpdateQueue.
type QueueUpdate struct {
	ID int64
	// Delete removes the entry and its timeline (delivered, or its bounce is committed, or no
	// bounce is owed); the other fields but MessageID are then ignored.
	Delete bool
	// MessageID and BlobPath, when MessageID is given with Delete, are the entry's message
	// and its file (QueueEntry.MessageID and BlobPath, "" for a message the database holds):
	// the deletes need not read them back.
	MessageID string
	BlobPath  string
	// Claim is the state the entry must still be in (active or bouncing) for the update to
	// apply: an operator may have removed or bounced it in the meantime.
	Claim       QueueState
	State       QueueState // the new state
	NextAttempt time.Time
	// CountAttempt adds one to attempts and records LastError, LastMX and LastAttempt.
	CountAttempt bool
	LastError    string
	LastMX       string
	LastAttempt  time.Time
	SetWarned    bool
	Timeline     []QueueAttempt // appended to the entry's timeline
}

const queueCols = `q.id, q.message_id, m.env_from, q.rcpt, q.domain, q.state, q.attempts, q.next_attempt,
	q.last_attempt, q.last_error, q.last_mx, q.created, q.expires, q.warned, q.notify, q.orcpt, q.ret,
	q.envid, q.smtputf8, q.body_8bit, m.size, m.received_at, m.blob_path`

type rowScanner interface{ Scan(dest ...any) error }

func scanQueueEntry(r rowScanner) (QueueEntry, error) {
	var e QueueEntry
	var state string
	var next, last, created, expires, received int64
	var warned, utf8, eight int64
	err := r.Scan(&e.ID, &e.MessageID, &e.From, &e.Rcpt, &e.Domain, &state, &e.Attempts, &next,
		&last, &e.LastError, &e.LastMX, &created, &expires, &warned, &e.Notify, &e.ORCPT, &e.Ret,
		&e.EnvID, &utf8, &eight, &e.Size, &received, &e.BlobPath)
	if err != nil {
		return e, err
	}
	e.State = QueueState(state)
	e.NextAttempt, e.Created, e.Expires, e.ReceivedAt = fromUnix(next), fromUnix(created), fromUnix(expires), fromUnix(received)
	if last != 0 {
		e.LastAttempt = fromUnix(last)
	}
	e.Warned, e.SMTPUTF8, e.EightBit = warned != 0, utf8 != 0, eight != 0
	return e, nil
}

// recipientDomain returns the lower-cased domain of a recipient address.
func recipientDomain(addr string) string {
	return strings.ToLower(addr[strings.LastIndexByte(addr, '@')+1:])
}

// ClaimQueue takes up to limit entries in state from (queued or failed) whose next attempt is
// due at now, oldest first, and moves them to the claimed state (active or bouncing) in the
// same transaction. The caller must finish each one with UpdateQueue.
func (s *Store) ClaimQueue(ctx context.Context, from QueueState, now time.Time, limit int) ([]QueueEntry, error) {
	var to QueueState
	switch from {
	case QueueQueued:
		to = QueueActive
	case QueueFailed:
		to = QueueBouncing
	default:
		return nil, fmt.Errorf("claim queue: cannot claim entries in state %q", from)
	}
	// The due entries are found on a reader, so that a scheduler finding nothing (after
	// every wake-up) costs the single writer nothing. Only the scheduler claims, and each
	// claim is conditional on the state, so an entry an operator changed in between is
	// skipped.
	rows, err := s.rquery(ctx, claimSelectSQL, string(from), unix(now), limit)
	if err != nil {
		return nil, fmt.Errorf("claim queue entries: %w", err)
	}
	var found []QueueEntry
	for rows.Next() {
		e, err := scanQueueEntry(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("claim queue entries: %w", err)
		}
		e.State = to
		found = append(found, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim queue entries: %w", err)
	}
	if len(found) == 0 {
		return nil, nil
	}
	var es []QueueEntry
	// Claims share the committer's transactions: under load the scheduler claims after
	// every wake-up, and a transaction (and fsync) of its own each time would cost more than
	// the delivery. A claim need not survive a crash (claims are reset at start), so a batch
	// of claims alone commits without an fsync.
	err = s.groupTxJoin(ctx, func(ctx context.Context, tx *sql.Tx) error {
		es = es[:0]
		st, err := s.wstmt(ctx, tx, claimQueueSQL)
		if err != nil {
			return err
		}
		for _, e := range found {
			res, err := st.ExecContext(ctx, string(to), e.ID, string(from))
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 1 {
				es = append(es, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim queue entries: %w", err)
	}
	return es, nil
}

// Statements of the scheduler's hot path (see stmt.go).
const (
	// The index queue_due (state, next_attempt) holds rowid last, so this ORDER BY is the
	// index order and LIMIT stops the scan: no sort, no full scan.
	claimSelectSQL = `SELECT ` + queueCols + `
		FROM queue q JOIN messages m ON m.id = q.message_id
		WHERE q.state = ? AND q.next_attempt <= ?
		ORDER BY q.next_attempt, q.id LIMIT ?`
	claimQueueSQL         = `UPDATE queue SET state = ? WHERE id = ? AND state = ?`
	deleteQueueSQL        = `DELETE FROM queue WHERE id = ? RETURNING message_id`
	deleteQueueByIDSQL    = `DELETE FROM queue WHERE id = ? AND message_id = ?`
	updateQueueAttemptSQL = `UPDATE queue SET state = ?, next_attempt = ?, attempts = attempts + 1,
		last_error = ?, last_mx = ?, last_attempt = ?, warned = warned | ?
		WHERE id = ? AND state = ?`
	updateQueueSQL   = `UPDATE queue SET state = ?, next_attempt = ?, warned = warned | ? WHERE id = ? AND state = ?`
	insertAttemptSQL = `INSERT INTO queue_attempts (queue_id, time, mx, ip, tls, reply) VALUES (?, ?, ?, ?, ?, ?)`
	// Both checks are index lookups (mailbox_messages_message, queue_message).
	deleteUnreferencedSQL = `DELETE FROM messages WHERE id = ?
		AND NOT EXISTS (SELECT 1 FROM mailbox_messages WHERE message_id = ?)
		AND NOT EXISTS (SELECT 1 FROM queue WHERE message_id = ?)
		RETURNING blob_path`
	// deleteUnreferencedKnownSQL is deleteUnreferencedSQL for a message whose blob path the
	// caller knows: without RETURNING, which costs SQLite an ephemeral table per call.
	deleteUnreferencedKnownSQL = `DELETE FROM messages WHERE id = ?
		AND NOT EXISTS (SELECT 1 FROM mailbox_messages WHERE message_id = ?)
		AND NOT EXISTS (SELECT 1 FROM queue WHERE message_id = ?)`
	// The earliest of two index probes, one per state, in one statement: the scheduler asks
	// after every wake-up.
	nextAttemptSQL = `SELECT min(t) FROM (
		SELECT t FROM (SELECT next_attempt AS t FROM queue WHERE state = ? ORDER BY next_attempt LIMIT 1) AS a
		UNION ALL
		SELECT t FROM (SELECT next_attempt AS t FROM queue WHERE state = ? ORDER BY next_attempt LIMIT 1) AS b) AS n`
	queueInStateSQL = `SELECT 1 FROM queue WHERE id = ? AND state = ?`
)

// ResetQueueClaims returns every claimed entry to its unclaimed state (active to queued,
// bouncing to failed) and returns how many it changed. The scheduler calls it when it starts
// and when it stops: claims do not outlive the process that made them.
func (s *Store) ResetQueueClaims(ctx context.Context) (int, error) {
	n := 0
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		for _, p := range [][2]QueueState{{QueueActive, QueueQueued}, {QueueBouncing, QueueFailed}} {
			res, err := tx.ExecContext(ctx, `UPDATE queue SET state = ? WHERE state = ?`, string(p[1]), string(p[0]))
			if err != nil {
				return err
			}
			k, _ := res.RowsAffected()
			n += int(k)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("reset queue claims: %w", err)
	}
	return n, nil
}

// NextQueueAttempt returns the earliest next attempt of the queued and failed entries; ok is
// false when there is none. It is one statement of two index probes.
func (s *Store) NextQueueAttempt(ctx context.Context) (next time.Time, ok bool, err error) {
	var t sql.NullInt64
	if err := s.rrow(ctx, nextAttemptSQL, string(QueueQueued), string(QueueFailed)).Scan(&t); err != nil {
		return time.Time{}, false, fmt.Errorf("next queue attempt: %w", err)
	}
	if !t.Valid {
		return time.Time{}, false, nil
	}
	return fromUnix(t.Int64), true, nil
}

// UpdateQueue applies the outcomes of attempts in one transaction, then removes the message
// of every deleted entry if nothing references it any more (its row, then its file).
func (s *Store) UpdateQueue(ctx context.Context, ups []QueueUpdate) error {
	var paths []string
	// Delivery results arrive from many deliveries at once: they share the committer's
	// transactions instead of one transaction each. They need no fsync of their own: a
	// result lost in a power failure (not in a crash of yubin: the WAL is written before the
	// commit returns) means a message delivered again or retried early, the same as Postfix
	// after its unsynced unlink of a delivered queue file. Everything that must not be lost
	// (the message, a bounce) is committed with an fsync before the result is written.
	err := s.groupTxJoin(ctx, func(ctx context.Context, tx *sql.Tx) error {
		paths = paths[:0]
		var msgs []deletedMsg
		seen := map[string]bool{}
		for _, u := range ups {
			if u.Delete {
				msg, ok, err := s.deleteQueueEntry(ctx, tx, u)
				if err != nil {
					return fmt.Errorf("delete queue entry %d: %w", u.ID, err)
				}
				if !ok {
					continue // already removed by an operator
				}
				if !seen[msg] {
					seen[msg] = true
					msgs = append(msgs, deletedMsg{id: msg, path: u.BlobPath, known: u.MessageID != ""})
				}
				continue
			}
			if err := s.updateQueueEntry(ctx, tx, u); err != nil {
				return err
			}
		}
		for _, m := range msgs {
			var p string
			var err error
			if m.known {
				p, err = s.deleteKnownIfUnreferenced(ctx, tx, m.id, m.path)
			} else {
				p, err = s.deleteIfUnreferenced(ctx, tx, m.id)
			}
			if err != nil {
				return err
			}
			if p != "" {
				paths = append(paths, p)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("update queue: %w", err)
	}
	s.removeFiles(paths)
	return nil
}

// deleteQueueEntry removes u's entry and returns its message; ok is false when the entry is
// gone already. A DELETE with RETURNING costs SQLite an ephemeral table for the result, so
// it only runs when the caller did not say which message the entry holds.
func (s *Store) deleteQueueEntry(ctx context.Context, tx *sql.Tx, u QueueUpdate) (msg string, ok bool, err error) {
	if u.MessageID == "" {
		del, err := s.wstmt(ctx, tx, deleteQueueSQL)
		if err != nil {
			return "", false, err
		}
		err = del.QueryRowContext(ctx, u.ID).Scan(&msg)
		if errors.Is(err, sql.ErrNoRows) {
			return "", false, nil
		}
		return msg, err == nil, err
	}
	del, err := s.wstmt(ctx, tx, deleteQueueByIDSQL)
	if err != nil {
		return "", false, err
	}
	res, err := del.ExecContext(ctx, u.ID, u.MessageID)
	if err != nil {
		return "", false, err
	}
	n, err := res.RowsAffected()
	return u.MessageID, err == nil && n > 0, err
}

func (s *Store) updateQueueEntry(ctx context.Context, tx *sql.Tx, u QueueUpdate) error {
	var res sql.Result
	if u.CountAttempt {
		st, err := s.wstmt(ctx, tx, updateQueueAttemptSQL)
		if err != nil {
			return err
		}
		res, err = st.ExecContext(ctx, string(u.State), unix(u.NextAttempt), u.LastError, u.LastMX, unix(u.LastAttempt),
			boolInt(u.SetWarned), u.ID, string(u.Claim))
		if err != nil {
			return fmt.Errorf("update queue entry %d: %w", u.ID, err)
		}
	} else {
		st, err := s.wstmt(ctx, tx, updateQueueSQL)
		if err != nil {
			return err
		}
		res, err = st.ExecContext(ctx, string(u.State), unix(u.NextAttempt), boolInt(u.SetWarned), u.ID, string(u.Claim))
		if err != nil {
			return fmt.Errorf("update queue entry %d: %w", u.ID, err)
		}
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil // removed or changed by an operator meanwhile: theirs wins
	}
	if len(u.Timeline) == 0 {
		return nil
	}
	ins, err := s.wstmt(ctx, tx, insertAttemptSQL)
	if err != nil {
		return err
	}
	for _, a := range u.Timeline {
		if _, err := ins.ExecContext(ctx, u.ID, unix(a.Time), a.MX, a.IP, a.TLS, a.Reply); err != nil {
			return fmt.Errorf("record attempt of queue entry %d: %w", u.ID, err)
		}
	}
	return nil
}

// deleteIfUnreferenced deletes the messages row of id when no mailbox entry and no queue row
// references it and returns its blob path ("" when it was kept or did not exist; inlineMark
// when it was deleted and its bytes lived in the row).
func (s *Store) deleteIfUnreferenced(ctx context.Context, tx *sql.Tx, id string) (string, error) {
	// Out of the cache first: if the transaction rolls back, the next read goes to the
	// database, which still has the message.
	s.mc.drop(id)
	st, err := s.wstmt(ctx, tx, deleteUnreferencedSQL)
	if err != nil {
		return "", err
	}
	var p string
	err = st.QueryRowContext(ctx, id, id, id).Scan(&p)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("delete message %s: %w", id, err)
	}
	if p == "" {
		return inlineMark, nil
	}
	return p, nil
}

// deletedMsg is the message of a deleted queue entry, with its blob path when the caller
// gave it (known).
type deletedMsg struct {
	id, path string
	known    bool
}

// deleteKnownIfUnreferenced is deleteIfUnreferenced for a message whose blob path the caller
// knows ("" when the database holds the message).
func (s *Store) deleteKnownIfUnreferenced(ctx context.Context, tx *sql.Tx, id, path string) (string, error) {
	s.mc.drop(id)
	st, err := s.wstmt(ctx, tx, deleteUnreferencedKnownSQL)
	if err != nil {
		return "", err
	}
	res, err := st.ExecContext(ctx, id, id, id)
	if err != nil {
		return "", fmt.Errorf("delete message %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return "", err
	}
	if path == "" {
		return inlineMark, nil
	}
	return path, nil
}

// inlineMark stands for "deleted, no file": the message was stored inside the database.
const inlineMark = "\x00inline"

// DeleteMessageIfUnreferenced removes one message (row, then file) when no mailbox entry and
// no queue row references it, and reports whether it did. Unlike DeleteUnreferenced its cost
// does not depend on the size of the store.
func (s *Store) DeleteMessageIfUnreferenced(ctx context.Context, id string) (bool, error) {
	var p string
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		var err error
		p, err = s.deleteIfUnreferenced(ctx, tx, id)
		return err
	})
	if err != nil {
		return false, err
	}
	s.removeFiles([]string{p})
	return p != "", nil
}

// removeFiles removes blob files whose rows are gone. A failure is only logged: the rows are
// gone, so CleanupOrphans removes the file later.
func (s *Store) removeFiles(paths []string) {
	for _, p := range paths {
		if p == "" || p == inlineMark {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, filepath.FromSlash(p))); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove blob of deleted message", "path", p, "err", err)
		}
	}
}

// ListQueue returns every queue entry, oldest first.
func (s *Store) ListQueue(ctx context.Context) ([]QueueEntry, error) {
	rows, err := s.rdb(ctx).QueryContext(ctx, `SELECT `+queueCols+` FROM queue q JOIN messages m ON m.id = q.message_id ORDER BY q.id`)
	if err != nil {
		return nil, fmt.Errorf("list queue: %w", err)
	}
	defer rows.Close()
	var es []QueueEntry
	for rows.Next() {
		e, err := scanQueueEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("list queue: %w", err)
		}
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list queue: %w", err)
	}
	return es, nil
}

// GetQueueEntry returns one queue entry; ErrNotFound if there is none with that id.
func (s *Store) GetQueueEntry(ctx context.Context, id int64) (QueueEntry, error) {
	e, err := scanQueueEntry(s.rdb(ctx).QueryRowContext(ctx, `SELECT `+queueCols+` FROM queue q JOIN messages m ON m.id = q.message_id WHERE q.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return e, fmt.Errorf("queue entry %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return e, fmt.Errorf("queue entry %d: %w", id, err)
	}
	return e, nil
}

// QueueTimeline returns the recorded attempts of a queue entry, oldest first.
func (s *Store) QueueTimeline(ctx context.Context, id int64) ([]QueueAttempt, error) {
	rows, err := s.rdb(ctx).QueryContext(ctx, `SELECT time, mx, ip, tls, reply FROM queue_attempts WHERE queue_id = ? ORDER BY id`, id)
	if err != nil {
		return nil, fmt.Errorf("timeline of queue entry %d: %w", id, err)
	}
	defer rows.Close()
	var as []QueueAttempt
	for rows.Next() {
		var a QueueAttempt
		var t int64
		if err := rows.Scan(&t, &a.MX, &a.IP, &a.TLS, &a.Reply); err != nil {
			return nil, fmt.Errorf("timeline of queue entry %d: %w", id, err)
		}
		a.Time = fromUnix(t)
		as = append(as, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("timeline of queue entry %d: %w", id, err)
	}
	return as, nil
}

// RetryQueue makes a queued entry (id > 0), or every queued entry (id 0), due at now, and
// returns how many it changed. A running scheduler picks them up at its next poll. Entries
// being delivered or bounced are left alone.
func (s *Store) RetryQueue(ctx context.Context, id int64, now time.Time) (int, error) {
	var n int64
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		q, args := `UPDATE queue SET next_attempt = ? WHERE state = 'queued' AND next_attempt > ?`, []any{unix(now), unix(now)}
		if id > 0 {
			q, args = `UPDATE queue SET next_attempt = ? WHERE state = 'queued' AND id = ?`, []any{unix(now), id}
		}
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("retry queue: %w", err)
	}
	if id > 0 && n == 0 {
		return 0, s.queueEntryNotIn(ctx, id, QueueQueued)
	}
	return int(n), nil
}

// queueEntryNotIn explains why entry id was not changed: missing, or in another state.
func (s *Store) queueEntryNotIn(ctx context.Context, id int64, want QueueState) error {
	e, err := s.GetQueueEntry(ctx, id)
	if err != nil {
		return err
	}
	return fmt.Errorf("queue entry %d is %s, not %s", id, e.State, want)
}

// RemoveQueueEntry drops an entry without a bounce, with its timeline, and its message if
// nothing else references it.
func (s *Store) RemoveQueueEntry(ctx context.Context, id int64) error {
	var p string
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		var msg string
		err := tx.QueryRowContext(ctx, `DELETE FROM queue WHERE id = ? RETURNING message_id`, id).Scan(&msg)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("queue entry %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		p, err = s.deleteIfUnreferenced(ctx, tx, msg)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove queue entry: %w", err)
	}
	s.removeFiles([]string{p})
	return nil
}

// FailQueueEntry marks an entry failed for good with reason as its last error (an SMTP reply
// line such as "554 5.0.0 ..."), due at now: the scheduler then commits the bounce. An entry
// being delivered right now is failed too; if that delivery succeeds, the success wins and no
// bounce is sent.
func (s *Store) FailQueueEntry(ctx context.Context, id int64, now time.Time, reason string) error {
	var n int64
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE queue SET state = 'failed', next_attempt = ?, last_error = ?, last_mx = ''
			WHERE id = ? AND state IN ('queued', 'active')`, unix(now), reason, id)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	if err != nil {
		return fmt.Errorf("fail queue entry %d: %w", id, err)
	}
	if n == 0 {
		return s.queueEntryNotIn(ctx, id, QueueQueued)
	}
	return nil
}

// QueueIDsInState returns which of ids name an entry in state. The scheduler asks just before
// a delivery whether the entries it claimed are still active: an operator may have removed or
// bounced one while it waited for a connection slot.
func (s *Store) QueueIDsInState(ctx context.Context, state QueueState, ids []int64) (map[int64]bool, error) {
	in := make(map[int64]bool, len(ids))
	// One prepared index probe per id: a group has few (its recipients at one domain).
	for _, id := range ids {
		var one int
		err := s.rrow(ctx, queueInStateSQL, id, string(state)).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("queue entries in state %s: %w", state, err)
		}
		in[id] = true
	}
	return in, nil
}
