package store

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Recipient is one accepted envelope recipient of a Commit.
type Recipient struct {
	Address   string // the envelope recipient as accepted (for the queue and logs)
	AccountID int64  // >0: deliver into that account's INBOX
	Remote    bool   // true: a queue row for relay (Address is the remote address)

	// RFC 3461 RCPT parameters, kept on the queue row of a remote recipient and passed on
	// when relaying, as received (xtext not decoded).
	Notify string // "" (not given), "NEVER", or a comma list of SUCCESS, FAILURE, DELAY
	ORCPT  string // "rfc822;..." or ""
}

// Commit is everything one SMTP transaction stores.
type Commit struct {
	Blob       *BlobWriter
	From       string // envelope sender, "" for the null sender
	Recipients []Recipient
	ReceivedAt time.Time // zero: now; also names the blob's day directory (UTC)

	// Message parameters for relaying, kept on the queue rows (unused without remote
	// recipients): RFC 3461 RET ("FULL", "HDRS" or "") and ENVID (as received, xtext), RFC 6531
	// SMTPUTF8 and RFC 6152 BODY=8BITMIME.
	Ret, EnvID         string
	SMTPUTF8, EightBit bool

	// Claim stores the remote recipients' queue rows already claimed for delivery (state
	// active) instead of queued, and Deliver fills Claimed with them: the caller hands them
	// to the scheduler, which then needs neither to look for them nor to claim them. The
	// caller must make sure the scheduler takes them (queue.Scheduler.Reserve): a claim is
	// only released by the scheduler or by the reset at its next start.
	Claim   bool
	Claimed []QueueEntry
}

// pending is a commit on its way through the committer.
type pending struct {
	// op, when set, makes this a generic write sharing the batch's transaction (groupTx)
	// instead of a message commit.
	op func(ctx context.Context, tx *sql.Tx) error
	// noSync: op's changes may be lost in a power failure (see writeBatch).
	noSync bool
	// join: a small noSync op that would rather wait a moment for a durable commit to share
	// (see commitLoop) than cost a transaction of its own.
	join bool

	id       string
	rel      string // blob path relative to the store directory; "" when data holds the message
	data     []byte // a small message stored inside the database (see InlineMax)
	day      string
	size     int64
	from     string
	received time.Time
	accounts []int64     // distinct local accounts, in recipient order
	remotes  []Recipient // distinct remote recipients, in recipient order
	done     chan error

	// Message parameters of the queue rows (see Commit).
	ret, envID         string
	smtpUTF8, eightBit bool

	claim   bool         // queue rows go in claimed (Commit.Claim)
	claimed []QueueEntry // the rows written, when claim is set

	seq uint64 // its intake journal record, 0: none (see journal.go)

	// flush: no write, a reader asking the committer to commit its open transaction (see
	// flushPending).
	flush bool
}

// Deliver makes the one durable commit for c (see the package comment): it
// fsyncs and links in the blob, then waits for the committer to record a
// mailbox entry in the INBOX of every local account (once per account, however
// many recipients map to it) and a queue row for every remote recipient, all
// in one transaction shared with other waiting commits.
//
// When Deliver returns nil the message is durable. When it returns an error
// nothing is stored and the blob file is gone; a full disk satisfies
// errors.Is(err, ErrStorageFull). Either way c.Blob is finished, and a
// deferred c.Blob.Abort() does nothing.
//
// ctx is honoured only until the commit is handed to the committer. After
// that Deliver waits for the result even if ctx is cancelled, because the
// transaction may already be in progress and the caller must learn whether
// the message was stored (a 250 answered on a lost commit, or a 4xx on a
// stored one, would lose or duplicate mail).
func (s *Store) Deliver(ctx context.Context, c *Commit) error {
	if c == nil || c.Blob == nil {
		return errors.New("deliver: no blob")
	}
	b := c.Blob
	if b.s != s {
		return fmt.Errorf("deliver %s: blob belongs to another store", b.id)
	}
	if b.done {
		return fmt.Errorf("deliver %s: blob already delivered or aborted", b.id)
	}
	defer s.setLive(b.id, false)
	p, err := s.newPending(c)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		b.Abort()
		return fmt.Errorf("deliver %s: %w", b.id, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		b.Abort()
		return fmt.Errorf("deliver %s: %w", b.id, ErrClosed)
	}
	s.inflight.Add(1)
	s.mu.Unlock()
	defer s.inflight.Done()

	if p.rel, err = b.finish(p.day); err != nil {
		return fmt.Errorf("deliver: %w", err)
	}
	if p.rel == "" {
		p.data = b.mem
	}
	select {
	case s.commitc <- p:
	case <-ctx.Done():
		s.removeBlob(p.rel)
		return fmt.Errorf("deliver %s: %w", p.id, ctx.Err())
	}
	err = <-p.done
	if p.data != nil {
		if err == nil {
			// The relay's first attempt and the IMAP indexer follow at once: they read a
			// copy from memory (see msgCache).
			holds := 0
			if len(p.remotes) > 0 {
				holds++
			}
			if len(p.accounts) > 0 {
				holds++
			}
			if holds > 0 {
				s.mc.put(p.id, bytes.Clone(p.data), holds)
			}
		}
		// SQLite copied the bytes during the transaction: the buffer can be reused.
		p.data = nil
		b.releaseMem()
	}
	if err != nil {
		s.removeBlob(p.rel)
		return fmt.Errorf("deliver %s: %w", p.id, err)
	}
	c.Claimed = p.claimed
	return nil
}

func (s *Store) newPending(c *Commit) (*pending, error) {
	if len(c.Recipients) == 0 {
		return nil, errors.New("no recipients")
	}
	p := &pending{
		id:       c.Blob.id,
		size:     c.Blob.size,
		from:     c.From,
		received: c.ReceivedAt,
		done:     make(chan error, 1),
		ret:      c.Ret,
		envID:    c.EnvID,
		smtpUTF8: c.SMTPUTF8,
		eightBit: c.EightBit,
		claim:    c.Claim,
	}
	if p.received.IsZero() {
		p.received = s.now()
	}
	p.day = dayOf(p.received)
	seenAcct := map[int64]bool{}
	seenRemote := map[string]bool{}
	for _, r := range c.Recipients {
		switch {
		case r.Remote && r.AccountID != 0:
			return nil, fmt.Errorf("recipient %q is both local and remote", r.Address)
		case r.Remote:
			if r.Address == "" || !strings.Contains(r.Address, "@") {
				return nil, fmt.Errorf("remote recipient %q without a domain", r.Address)
			}
			if !seenRemote[r.Address] {
				seenRemote[r.Address] = true
				p.remotes = append(p.remotes, r)
			}
		case r.AccountID > 0:
			if !seenAcct[r.AccountID] {
				seenAcct[r.AccountID] = true
				p.accounts = append(p.accounts, r.AccountID)
			}
		default:
			return nil, fmt.Errorf("recipient %q has neither an account nor Remote", r.Address)
		}
	}
	return p, nil
}

// removeBlob removes a blob file whose commit failed. A failure is only
// logged: CleanupOrphans removes what is left.
func (s *Store) removeBlob(rel string) {
	if rel == "" {
		return // stored inside the database: nothing on disk
	}
	if err := os.Remove(filepath.Join(s.dir, filepath.FromSlash(rel))); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove blob of failed commit", "path", rel, "err", err)
	}
}

// groupTx runs fn in the committer's next transaction, shared with message commits and other
// writes waiting at the same time, so that they share one WAL fsync. fn may run more than
// once (a failed shared transaction is retried one write at a time) and must not keep state
// across runs. Writes on the hot path (queue results) use it; rare ones use writeTx.
func (s *Store) groupTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.group(ctx, &pending{op: fn, done: make(chan error, 1)})
}

// groupTxLazy is groupTx for a write that may be lost in a power failure: when the batch
// holds only such writes it commits without an fsync.
func (s *Store) groupTxLazy(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.group(ctx, &pending{op: fn, noSync: true, done: make(chan error, 1)})
}

// groupTxJoin is groupTxLazy for a small write on the relay's hot path (a queue claim, a
// delivery result): when no message commit is waiting, the committer holds it for up to
// joinWait so that it rides in the next message's transaction instead of costing one of
// its own. Under a steady stream of mail that halves the writer's transactions per relayed
// message; when mail stops, the write waits Options.JoinWait at most. It waits so even when
// the committer's open transaction (deferredTx) could take it at once: in the next message's
// batch, its rows are written beside the journal's fdatasync (rowWriter), where alone they
// would be written by the committer while that message waited (relayed case c, one session:
// 3% more messages; the results took 77 us of the committer per message).
func (s *Store) groupTxJoin(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.group(ctx, &pending{op: fn, noSync: true, join: true, done: make(chan error, 1)})
}

// defaultJoinWait bounds how long joinable writes wait for a message commit to share: about
// the time between two messages of one busy SMTP session.
const defaultJoinWait = 2 * time.Millisecond

func (s *Store) group(ctx context.Context, p *pending) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.inflight.Add(1)
	s.mu.Unlock()
	defer s.inflight.Done()
	select {
	case s.commitc <- p:
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-p.done
}

// commitLoop is the committer goroutine. It ends when commitc is closed.
func (s *Store) commitLoop() {
	defer close(s.committerDone)
	var wait *time.Timer
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	tailTries := 0 // tail checkpoints retried in a row (see tailCheckpoint)
	for {
		var p *pending
		ok := true
		if d := s.def; d != nil {
			// A transaction is open (see deferredTx): wait a moment for more to put in it.
			age := time.Since(d.opened)
			if d.commits >= deferMaxCommits || d.bytes >= deferMaxBytes || age >= s.deferMaxAge {
				s.commitDeferred()
				continue
			}
			idle.Reset(min(s.deferWait, s.deferMaxAge-age))
			select {
			case p, ok = <-s.commitc:
				idle.Stop()
			case <-idle.C:
				s.commitDeferred()
				continue
			}
		} else {
			s.retryUnwritten()
			if s.ckTail.Swap(false) && s.tailCheckpoint() && tailTries < 8 {
				tailTries++
				s.ckTail.Store(true)
			} else {
				tailTries = 0
			}
			p, ok = <-s.commitc
		}
		if !ok {
			s.commitDeferred()
			s.retryUnwritten()
			return
		}
		if s.testHookDrain != nil {
			s.testHookDrain()
		}
		batch, open := s.drain([]*pending{p})
		if batch = s.answerFlushes(batch); len(batch) == 0 {
			continue
		}
		if open && s.joinWait > 0 && onlyJoinable(batch) {
			// Nothing waits for an fsync: give a message commit a moment to come and carry
			// these writes (see groupTxJoin).
			if wait == nil {
				wait = time.NewTimer(s.joinWait)
			} else {
				wait.Reset(s.joinWait)
			}
		join:
			for len(batch) < s.maxBatch {
				select {
				case q, ok := <-s.commitc:
					if !ok {
						break join
					}
					batch = append(batch, q)
					if !q.join {
						// Commits that came with it share the batch too.
						batch, _ = s.drain(batch)
						break join
					}
				case <-wait.C:
					break join
				}
			}
			wait.Stop()
			if batch = s.answerFlushes(batch); len(batch) == 0 {
				continue
			}
		}
		s.commitBatch(batch)
	}
}

// answerFlushes commits the open transaction if batch holds flush requests, answers them,
// and returns the rest of batch.
func (s *Store) answerFlushes(batch []*pending) []*pending {
	rest := batch[:0]
	var flushes []*pending
	for _, p := range batch {
		if p.flush {
			flushes = append(flushes, p)
		} else {
			rest = append(rest, p)
		}
	}
	if len(flushes) > 0 {
		s.commitDeferred()
		for _, p := range flushes {
			p.done <- nil
		}
	}
	return rest
}

// drain adds to batch what waits in commitc, up to maxBatch, without waiting. open is false
// when commitc is closed.
func (s *Store) drain(batch []*pending) (_ []*pending, open bool) {
	for len(batch) < s.maxBatch {
		select {
		case q, ok := <-s.commitc:
			if !ok {
				return batch, false
			}
			batch = append(batch, q)
		default:
			return batch, true
		}
	}
	return batch, true
}

func onlyJoinable(batch []*pending) bool {
	for _, p := range batch {
		if !p.join {
			return false
		}
	}
	return true
}

// commitBatch makes the blob directory entries durable, writes the batch in
// one transaction and answers every waiting Deliver.
func (s *Store) commitBatch(batch []*pending) {
	// The committer's own context: a caller giving up must not abort a
	// transaction shared with other callers.
	ctx := s.cctx
	answer := func(ps []*pending, err error) {
		for _, p := range ps {
			p.done <- err
		}
	}
	if err := s.syncDirs(batch); err != nil {
		answer(batch, err)
		return
	}
	if s.testHookCommit != nil {
		s.testHookCommit(len(batch))
	}
	began, err := s.writeBatch(ctx, batch)
	if err == nil {
		s.notifyAfterCommit(batch)
		answer(batch, nil)
		return
	}
	if len(batch) == 1 || !began {
		// Nothing to isolate: the transaction never started (the database
		// is locked or unwritable), so each commit alone would fail the
		// same way after another busy timeout.
		answer(batch, err)
		return
	}
	s.log.Warn("group commit failed, retrying one by one", "commits", len(batch), "err", err)
	for _, p := range batch {
		one := []*pending{p}
		_, err := s.writeBatch(ctx, one)
		if err == nil {
			s.notifyAfterCommit(one)
		} else {
			s.log.Warn("commit failed", "msgid", p.id, "err", err)
		}
		answer(one, err)
	}
}

// syncDirs fsyncs every distinct day directory of the batch once, so the
// renames into them are durable before the rows that point at them commit;
// and blobs/ itself the first time this process uses a day, in case the day
// directory was just created.
func (s *Store) syncDirs(batch []*pending) error {
	seen := map[string]bool{}
	for _, p := range batch {
		if p.rel == "" || seen[p.day] {
			continue
		}
		seen[p.day] = true
		if err := syncDir(filepath.Join(s.dir, blobsDirName, p.day)); err != nil {
			return err
		}
		if !s.syncedDays[p.day] {
			if err := syncDir(filepath.Join(s.dir, blobsDirName)); err != nil {
				return err
			}
			s.syncedDays[p.day] = true
		}
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return classify(err)
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, classify(err))
	}
	return nil
}

// writeBatch writes the rows of every commit in batch in one transaction.
// began reports whether the transaction started, i.e. whether a failure may
// belong to one commit.
func (s *Store) writeBatch(ctx context.Context, batch []*pending) (began bool, err error) {
	// A batch of writes that need not survive a power loss (queue claims: they are reset at
	// every start anyway) commits without an fsync.
	lazy := true
	for _, p := range batch {
		lazy = lazy && p.op != nil && p.noSync
	}
	if s.journalable(batch) || lazy && s.def != nil {
		return s.writeJournaled(ctx, batch)
	}
	// Every other write needs the writer connection, which an open transaction holds.
	s.commitDeferred()
	if lazy {
		return s.withSyncNormal(ctx, func(tx *sql.Tx) error {
			if err := s.writeRows(ctx, tx, batch); err != nil {
				tx.Rollback()
				return err
			}
			return s.commitTx(tx)
		})
	}
	return s.writeFull(ctx, batch)
}

// writeFull writes batch in a transaction whose COMMIT fsyncs the WAL (synchronous=FULL).
func (s *Store) writeFull(ctx context.Context, batch []*pending) (began bool, err error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("begin: %w", classify(err))
	}
	return true, s.writeMessages(ctx, tx, batch)
}

// withSyncNormal runs fn in a transaction that commits without an fsync: synchronous=NORMAL
// for this one transaction, on the writer connection held for it so that no other
// transaction runs in between. fn must commit or roll back tx.
func (s *Store) withSyncNormal(ctx context.Context, fn func(tx *sql.Tx) error) (began bool, err error) {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("begin: %w", classify(err))
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `PRAGMA synchronous = NORMAL`); err != nil {
		return false, fmt.Errorf("begin: %w", classify(err))
	}
	defer func() {
		if _, err := conn.ExecContext(ctx, `PRAGMA synchronous = FULL`); err != nil {
			// Never hand back a connection that would commit messages without fsync:
			// ErrBadConn makes database/sql close it instead.
			s.log.Error("restore synchronous=FULL failed, dropping the connection", "err", err)
			conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("begin: %w", classify(err))
	}
	return true, fn(tx)
}

// writeMessages writes the rows of batch in tx and commits it. When batch holds journal
// records, the transaction also records the last one as applied.
func (s *Store) writeMessages(ctx context.Context, tx *sql.Tx, batch []*pending) error {
	err := s.writeRows(ctx, tx, batch)
	if err == nil {
		err = s.setApplied(ctx, tx, maxSeq(batch))
	}
	if err != nil {
		tx.Rollback()
		s.qids.reset() // a block reserved in this transaction is not recorded
		return err
	}
	return s.commitTx(tx)
}

// writeRows runs every write of batch in tx: an op, or the rows of a message commit. It
// neither commits nor rolls back.
func (s *Store) writeRows(ctx context.Context, tx *sql.Tx, batch []*pending) error {
	if s.testHookWrite != nil {
		if err := s.testHookWrite(batch); err != nil {
			return err
		}
	}
	var st txStmts
	msgs := false
	for _, p := range batch {
		msgs = msgs || p.op == nil
	}
	if msgs {
		var err error
		for _, x := range []struct {
			st **sql.Stmt
			q  string
		}{{&st.msg, insertMessageSQL}, {&st.mbx, insertInboxSQL}, {&st.bump, bumpInboxSQL}, {&st.queue, insertQueueSQL}} {
			if *x.st, err = s.wstmt(ctx, tx, x.q); err != nil {
				return classify(err)
			}
		}
	}
	st.tx, st.ids = tx, &s.qids
	t := s.now()
	now, expires := unix(t), unix(t.Add(s.queueLifetime))
	for _, p := range batch {
		var err error
		if p.op != nil {
			err = p.op(ctx, tx)
		} else {
			err = st.write(ctx, p, now, expires)
		}
		if err != nil {
			return classify(err)
		}
	}
	return nil
}

func maxSeq(batch []*pending) uint64 {
	var seq uint64
	for _, p := range batch {
		seq = max(seq, p.seq)
	}
	return seq
}

// setApplied records seq, when not 0, as the last journal record applied (see journal.go).
func (s *Store) setApplied(ctx context.Context, tx *sql.Tx, seq uint64) error {
	if seq == 0 {
		return nil
	}
	st, err := s.wstmt(ctx, tx, setAppliedSQL)
	if err == nil {
		_, err = st.ExecContext(ctx, int64(seq))
	}
	if err != nil {
		return fmt.Errorf("record journal position: %w", classify(err))
	}
	return nil
}

// commitTx commits tx and counts it.
func (s *Store) commitTx(tx *sql.Tx) error {
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", classify(err))
	}
	s.txCount.Add(1)
	s.wrote.Store(true)
	return nil
}

type txStmts struct {
	msg, bump, mbx, queue *sql.Stmt
	tx                    *sql.Tx
	ids                   *queueIDs
}

// write records one commit: the messages row, then per local account a
// mailbox entry with the INBOX's next UID and modseq, then per remote
// recipient a queue row due now.
func (st txStmts) write(ctx context.Context, p *pending, now, expires int64) error {
	received := unix(p.received)
	if _, err := st.msg.ExecContext(ctx, p.id, p.rel, p.size, received, p.from, p.data); err != nil {
		return fmt.Errorf("insert message: %w", err)
	}
	for _, acct := range p.accounts {
		res, err := st.mbx.ExecContext(ctx, p.id, received, acct)
		if err != nil {
			return fmt.Errorf("insert into INBOX of account %d: %w", acct, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("insert into INBOX of account %d: %w", acct, err)
		} else if n == 0 {
			return fmt.Errorf("INBOX of account %d: %w", acct, ErrNotFound)
		}
		if _, err := st.bump.ExecContext(ctx, acct); err != nil {
			return fmt.Errorf("next UID in INBOX of account %d: %w", acct, err)
		}
	}
	state := QueueQueued
	if p.claim {
		state = QueueActive
	}
	p.claimed = p.claimed[:0] // a batch that failed is written again one commit at a time
	for _, r := range p.remotes {
		domain := recipientDomain(r.Address)
		id, err := st.ids.take(ctx, st.tx)
		if err != nil {
			return err
		}
		if _, err := st.queue.ExecContext(ctx, id, p.id, r.Address, domain, string(state), now, now, expires,
			r.Notify, r.ORCPT, p.ret, p.envID, boolInt(p.smtpUTF8), boolInt(p.eightBit)); err != nil {
			return fmt.Errorf("queue for %s: %w", r.Address, err)
		}
		if !p.claim {
			continue
		}
		// What claimSelectSQL would read back.
		p.claimed = append(p.claimed, QueueEntry{ID: id, MessageID: p.id, From: p.from, Rcpt: r.Address,
			Domain: domain, State: state, NextAttempt: fromUnix(now), Created: fromUnix(now),
			Expires: fromUnix(expires), Notify: r.Notify, ORCPT: r.ORCPT, Ret: p.ret, EnvID: p.envID,
			SMTPUTF8: p.smtpUTF8, EightBit: p.eightBit, Size: p.size, ReceivedAt: fromUnix(received), BlobPath: p.rel})
	}
	return nil
}

func (s *Store) notifyBatch(batch []*pending) {
	for _, p := range batch {
		for _, acct := range p.accounts {
			s.subs.notify(acct)
		}
	}
}
