package store

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"yubin/internal/binenc"
)

// The intake journal (intake.journal in the data directory) takes the fsync of a message
// commit off SQLite's critical path. A server's Store (Options.Journal) writes each batch of
// small message commits twice, at the same time: as records appended to the journal, which
// it fdatasyncs, and as rows in the committer's open SQLite transaction (deferredTx), which
// commits later with synchronous=NORMAL (no fsync of the WAL). A commit is answered when
// both are done: it is durable (the journal record is on disk) and every read through the
// Store sees it (a read first has the committer commit). The transaction's CPU work and the
// journal's fsync, which writes one short record instead of SQLite's six 8 KiB pages, overlap;
// and the open transaction carries the next batches too, so the pages every message changes
// are written once per transaction. One session sending one message at a time waits for the
// longer of its two halves instead of their sum.
//
// The journal is a ring of a fixed size, written from the start again when a batch does not
// fit before its end. Every transaction records the last journal sequence number it applied
// (table journal_applied), so after a crash (which loses the open transaction) or a power
// loss (which may lose SQLite's last unsynced transactions), Open replays exactly the records
// whose transaction was lost: those with a higher number. The server does at its start; any
// other Store (a CLI command) does when no server holds the journal's lock. A record may be
// overwritten only once its transaction is durable in SQLite: before writing over the start
// of the ring again, the committer commits its open transaction and the journal fsyncs
// SQLite's WAL. A batch that fails after its records were written voids them (and fsyncs
// that) before the commit is refused, so that a refused message never comes back; the
// batches answered before it in the same open transaction are written again.
//
// Where the file system allows it (Linux, a ring of at least directMinSize), the records go
// to the disk with O_DIRECT, each batch padded with a void record to a 4 KiB boundary: the
// write goes straight to the device and the fdatasync after it only flushes the device's
// cache, where a buffered write would have had the fdatasync write the page back first
// (measured on a 2-vCPU virtual machine: the journal's write and fdatasync took 218 us
// instead of 243 us under one SMTP session, and 100-113 us instead of 125-133 us alone).
//
// Batches holding a message stored inside the database over journalMaxData, and batches that
// carry writes needing their own fsync (groupTx), take the old path: synchronous=FULL, one
// fsync of the WAL. (A message in a blob file is journaled: its record names the file, which
// is durable before the commit.) If the journal ever fails to write, the Store logs it and
// goes back to the old path for good.

const (
	journalName = "intake.journal"
	// defaultJournalSize: with O_DIRECT every batch takes at least a 4 KiB block, so the ring
	// holds 1,024 batches; going round costs the committer a commit and an fsync of the WAL
	// (a few ms), about once a second under one SMTP session. It takes at most an eighth of
	// the free space (see openJournal).
	defaultJournalSize = 4 << 20
	// journalMaxData: a message stored inside the database is journaled up to this size.
	// Larger ones (still inline up to InlineMax) would write their bytes three times, and
	// their commits are few: they keep SQLite's fsync.
	journalMaxData = 32 << 10

	journalMagic = 0x4c4e524a // "JRNL"
	journalVoid  = 0x44494f56 // "VOID": a record whose transaction failed
	journalHead  = 20         // magic, payload length, seq, crc32c(seq, payload)

	// directAlign: with O_DIRECT, batches start and end on this boundary (the page size, a
	// multiple of every device's logical block) and are written from memory aligned to it.
	directAlign = 4096
	// directMinSize: a smaller ring (tests) is written through the page cache: padded to
	// blocks, a few batches would fill it.
	directMinSize = 64 * directAlign
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const journalSchema = `CREATE TABLE IF NOT EXISTS journal_applied (
	id  INTEGER PRIMARY KEY CHECK (id = 1),
	seq INTEGER NOT NULL
)`

const setAppliedSQL = `INSERT INTO journal_applied (id, seq) VALUES (1, ?)
	ON CONFLICT (id) DO UPDATE SET seq = max(seq, excluded.seq)`

type journal struct {
	f       *os.File
	df      *os.File // the same file opened with O_DIRECT, or nil (see the top of this file)
	size    int64
	walPath string
	dbPath  string

	// The committer's.
	head   int64  // where the next record goes
	seq    uint64 // the last sequence number given to a record
	buf    []byte // the batch being encoded
	broken bool   // a write failed: commits take the synchronous=FULL path
	wraps  int    // times the committer went back to the start of the ring (tests)

	// The row writer goroutine (see rowWriter) runs each function sent on rows and answers
	// on rowsDone.
	rows     chan func() error
	rowsDone chan error
	done     chan struct{}
}

// openJournal creates or opens the journal, replays what SQLite lost, and starts its row writer.
// It runs in Open, before the committer starts.
func (s *Store) openJournal(ctx context.Context, size int64) error {
	if size <= 0 {
		// The ring takes at most an eighth of the free space: on a small file system the
		// database needs the room more than the shortcut does.
		size = defaultJournalSize
		if free := freeBytes(s.dir); free >= 0 {
			size = max(min(size, free/8)&^(directAlign-1), 16*directAlign)
		}
	}
	if err := s.prepareJournalTable(ctx); err != nil {
		return err
	}
	path := filepath.Join(s.dir, journalName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, classify(err))
	}
	// A CLI command may hold the lock for a moment, replaying what a crash left
	// (recoverJournal); another server holds it for good.
	for try := 0; ; try++ {
		if err = lockFile(f); err == nil || try == 40 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("%s is in use by another yubin server on this data directory: %w", path, err)
	}
	j := &journal{f: f, size: size, dbPath: filepath.Join(s.dir, dbName)}
	j.walPath = j.dbPath + "-wal"
	if j.seq, err = s.replayJournal(ctx, f); err != nil {
		f.Close()
		return err
	}
	// Everything replayed or applied is made durable in SQLite, then the ring starts over
	// empty: no record of this run can be confused with one left by an earlier run.
	if err := j.syncSQLite(); err != nil {
		f.Close()
		return fmt.Errorf("intake journal: %w", classify(err))
	}
	if err := j.reset(); err != nil {
		f.Close()
		if errors.Is(classify(err), ErrStorageFull) {
			// Not even room for the ring: commits keep SQLite's own fsync. The journal is
			// only a shortcut.
			s.log.Warn("no room for the intake journal, committing without it", "path", path, "err", err)
			os.Remove(path)
			return nil
		}
		return fmt.Errorf("intake journal: %w", classify(err))
	}
	if size >= directMinSize && size%directAlign == 0 {
		j.df = openDirect(path)
	}
	j.rows, j.rowsDone, j.done = make(chan func() error, 1), make(chan error, 1), make(chan struct{})
	go j.rowWriter()
	s.j = j
	return nil
}

// prepareJournalTable creates journal_applied where an older database lacks it and prepares
// the statement that sets it.
func (s *Store) prepareJournalTable(ctx context.Context) error {
	if _, err := s.w.ExecContext(ctx, journalSchema); err != nil {
		return fmt.Errorf("journal table: %w", classify(err))
	}
	st, err := s.w.PrepareContext(ctx, setAppliedSQL)
	if err != nil {
		return fmt.Errorf("journal table: %w", classify(err))
	}
	s.wst.put(setAppliedSQL, st)
	return nil
}

// recoverJournal is what a Store without the journal (a CLI command) does at open: when no
// server holds the journal and a crash left records in it that the database lacks (the
// server's last open transaction), it writes them, as the server would at its next start.
// A read-only command with nothing to recover writes nothing. When a server holds the
// journal, it waits for the server's open transaction instead (awaitServerTx).
func (s *Store) recoverJournal(ctx context.Context) error {
	path := filepath.Join(s.dir, journalName)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, classify(err))
	}
	defer f.Close()
	if lockFile(f) != nil {
		// A server runs: the journal is its own.
		s.awaitServerTx(ctx)
		return nil
	}
	_, err = s.replayJournal(ctx, f)
	return err
}

// serverTxWait bounds how long a CLI command's Store waits for a running server's open
// transaction at open: many times the transaction's longest life (defaultDeferMaxAge).
const serverTxWait = time.Second

// awaitServerTx waits until the running server's committer has committed the transaction
// it holds open (deferredTx), so that a CLI command sees every message the server had
// answered before the command started ("yubin sendmail" then "yubin mail list" shows the
// message). The open transaction holds SQLite's write lock, so taking that lock (BEGIN
// IMMEDIATE, then ROLLBACK) waits for its commit. Under a steady stream of mail the server
// opens its next transaction at once and the lock may stay out of reach; after serverTxWait
// the command goes on with what is committed, as it did before (it is only a read).
func (s *Store) awaitServerTx(ctx context.Context) {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`, serverTxWait.Milliseconds())); err != nil {
		return
	}
	defer conn.ExecContext(context.Background(), fmt.Sprintf(`PRAGMA busy_timeout = %d`, busyTimeoutMS))
	tx, err := conn.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock)
	if err != nil {
		s.log.Debug("a running server's open transaction did not commit in time", "wait", serverTxWait, "err", err)
		return
	}
	tx.Rollback()
}

// replayJournal writes the records of f whose transaction the database does not have, and
// returns the highest sequence number in use (the journal's or the database's).
func (s *Store) replayJournal(ctx context.Context, f *os.File) (uint64, error) {
	data, err := io.ReadAll(io.LimitReader(f, 64<<20))
	if err != nil {
		return 0, fmt.Errorf("read intake journal: %w", err)
	}
	recs, last := scanJournal(data)
	if len(recs) == 0 {
		var applied uint64
		s.w.QueryRowContext(ctx, `SELECT seq FROM journal_applied WHERE id = 1`).Scan(&applied) // absent: 0
		return max(last, applied), nil
	}
	if s.wst.get(setAppliedSQL) == nil {
		if err := s.prepareJournalTable(ctx); err != nil {
			return 0, err
		}
	}
	var applied uint64
	err = s.w.QueryRowContext(ctx, `SELECT seq FROM journal_applied WHERE id = 1`).Scan(&applied)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("intake journal: %w", classify(err))
	}
	replayed := 0
	for _, p := range recs {
		if p.seq <= applied {
			continue
		}
		// Not through the journal (s.j is not set): synchronous=FULL, and the transaction
		// records p.seq as applied.
		if _, err := s.writeBatch(ctx, []*pending{p}); err != nil {
			if errors.Is(err, ErrStorageFull) || !errors.Is(err, ErrNotFound) {
				return 0, fmt.Errorf("replay message %s from the intake journal: %w", p.id, err)
			}
			// Its account is gone: nothing can take it.
			s.log.Error("intake journal: message for a deleted account dropped", "msgid", p.id, "err", err)
			continue
		}
		replayed++
	}
	if replayed > 0 {
		s.log.Warn("replayed messages from the intake journal that the database had lost", "messages", replayed)
	}
	return max(last, applied), nil
}

// reset makes the ring all zeros, size bytes long, and durable.
func (j *journal) reset() error {
	if err := j.f.Truncate(0); err != nil {
		return err
	}
	zeros := make([]byte, 64<<10)
	for off := int64(0); off < j.size; off += int64(len(zeros)) {
		n := min(int64(len(zeros)), j.size-off)
		if _, err := j.f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
	}
	if err := j.f.Sync(); err != nil {
		return err
	}
	j.head = 0
	return syncDir(filepath.Dir(j.dbPath))
}

// rowWriter writes a batch's rows while the committer writes and fdatasyncs its records.
// It is this way round, and not the records sent to a goroutine of their own, because
// waking a goroutine on an idle CPU takes a while (about 80 µs on a 2-vCPU virtual machine,
// of a 1 KiB message's 1 ms): the committer, already running, starts the fsync at once, and
// the rows (about 130 µs of CPU) still finish before it (240 µs) while the woken goroutine
// catches up. One session sending one message at a time got 5 to 9% more messages through.
func (j *journal) rowWriter() {
	defer close(j.done)
	for fn := range j.rows {
		j.rowsDone <- fn()
	}
}

// append writes b at the head of the ring and fdatasyncs it. It returns where b went, or -1
// when it failed before writing anything.
func (j *journal) append(b []byte) (int64, error) {
	if j.head+int64(len(b)) > j.size {
		// Writing over the start of the ring: the records there must be durable in
		// SQLite first. writeJournaled committed the open transaction.
		if err := j.syncSQLite(); err != nil {
			return -1, err
		}
		j.head = 0
		j.wraps++
	}
	off := j.head
	w := j.writer()
	if _, err := w.WriteAt(b, off); err != nil {
		return off, err
	}
	if err := datasync(w); err != nil {
		return off, err
	}
	j.head += int64(len(b))
	return off, nil
}

// writer is the file that records are written through.
func (j *journal) writer() *os.File {
	if j.df != nil {
		return j.df
	}
	return j.f
}

// syncSQLite makes every committed transaction durable: an fsync of the WAL does what
// synchronous=FULL would have done at each commit. Frames a checkpoint has already copied
// are in the database file, which SQLite fsyncs before it starts the WAL over.
func (j *journal) syncSQLite() error {
	for _, p := range []string{j.walPath, j.dbPath} {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		err = datasync(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("fsync %s: %w", p, err)
		}
		if p == j.walPath {
			return nil // the WAL holds whatever the database file has not synced
		}
	}
	return nil
}

// void marks the records of a batch at off as failed, durably, so that no replay applies
// them. It changes their magic in b and writes b again, whole (as append wrote it).
func (j *journal) void(b []byte, off int64) error {
	for pos := 0; pos+journalHead <= len(b); {
		binary.LittleEndian.PutUint32(b[pos:], journalVoid)
		pos += journalHead + int(binary.LittleEndian.Uint32(b[pos+4:]))
	}
	w := j.writer()
	if _, err := w.WriteAt(b, off); err != nil {
		return err
	}
	return datasync(w)
}

func (j *journal) close() error {
	close(j.rows)
	<-j.done
	if j.df != nil {
		j.df.Close()
	}
	return j.f.Close()
}

// journalable reports whether batch can commit through the journal: at least one message,
// each small, and no write that wants an fsync of its own.
func (s *Store) journalable(batch []*pending) bool {
	if s.j == nil || s.j.broken || len(s.unwritten) > 0 {
		return false
	}
	msgs := 0
	for _, p := range batch {
		if p.op != nil {
			if !p.noSync {
				return false
			}
			continue
		}
		if len(p.data) > journalMaxData {
			return false
		}
		msgs++
	}
	return msgs > 0
}

// writeJournaled writes batch through the journal (see the top of this file) into the open
// transaction, opening one if needed. A batch of lazy writes alone (no message) has no
// record and only joins the open transaction.
func (s *Store) writeJournaled(ctx context.Context, batch []*pending) (began bool, err error) {
	j := s.j
	b := j.encode(batch)
	if int64(len(b)) > j.size/4 {
		clearSeqs(batch)
		s.commitDeferred()
		return s.writeFull(ctx, batch)
	}
	if len(b) > 0 && j.head+int64(len(b)) > j.size {
		// append goes back to the start of the ring, over records whose transaction
		// must be committed first (it then fsyncs the WAL before writing).
		s.commitDeferred()
	}
	if s.def == nil {
		if err := s.openDeferred(ctx); err != nil {
			clearSeqs(batch)
			return false, err
		}
	}
	var off int64
	var jerr error
	if len(b) > 0 {
		// The rows and the records at the same time (see rowWriter).
		tx := s.def.tx
		j.rows <- func() error { return s.writeRows(ctx, tx, batch) }
		off, jerr = j.append(b)
		err = <-j.rowsDone
	} else {
		err = s.writeRows(ctx, s.def.tx, batch)
	}
	if err != nil {
		// SQLite may have rolled back the whole transaction: start over without this
		// batch, whose caller gets err.
		s.abortDeferred()
	} else {
		s.def.add(batch)
	}
	if len(b) == 0 {
		return true, err
	}
	switch {
	case jerr != nil && err == nil:
		// The rows are written but the record is not on disk: commit and fsync the WAL,
		// as synchronous=FULL would have, and stop using the journal.
		j.broken = true
		s.log.Error("intake journal write failed; commits fsync the database from now on", "err", jerr)
		if cerr := s.commitDeferred(); cerr != nil {
			return true, cerr
		}
		if serr := j.syncSQLite(); serr != nil {
			return true, fmt.Errorf("commit: %w", classify(serr))
		}
		return true, nil
	case err != nil:
		// Whatever part of the records reached the file must not be replayed.
		if jerr != nil {
			j.broken = true
			s.log.Error("intake journal write failed; commits fsync the database from now on", "err", jerr)
		}
		// off < 0: nothing was written, and the start of the ring keeps older records.
		if off >= 0 {
			if verr := j.void(b, off); verr != nil {
				j.broken = true
				s.log.Error("intake journal: could not void the records of a failed commit", "err", verr)
			}
		}
		clearSeqs(batch)
	}
	return true, err
}

// deferredTx is the committer's open transaction. With the journal, a message commit is
// durable once its record is fsynced, so the transaction that writes its rows need not end
// with it: batches that come within deferWait of each other share one transaction, which
// commits (without an fsync) when none comes, or after deferMaxCommits commits,
// deferMaxBytes of messages or defaultDeferMaxAge. Pages that every message changes (the
// mailbox row, the ends of the indexes) then go to the WAL once per transaction instead of
// once per message, which is most of the WAL's bytes, and BEGIN and COMMIT are paid once.
//
// Those bytes matter beyond their own cost: the WAL reaches the disk in bursts (the
// checkpoint's fsync), and every journal fdatasync issued meanwhile waits behind them. Under
// one SMTP session (a message a millisecond), transactions of 10 ms wrote 13.7 KiB of WAL per
// 1 KiB message; of 100 ms (up to 256 commits), 5.6 KiB, and the session got 2 to 4% more
// messages through.
//
// Until it commits, its rows are invisible to other connections: readers and writers in this
// process call flushPending first (so a read sees every commit Deliver has answered, and a
// writer gets the connection at once), subscribers are notified after the commit, and
// another process sees new mail up to defaultDeferMaxAge later (a CLI command's Store waits
// for the commit when it opens: awaitServerTx).
type deferredTx struct {
	conn    *sql.Conn
	tx      *sql.Tx
	opened  time.Time
	commits int
	seq     uint64       // the last journal record applied in it
	batches [][]*pending // answered batches: notified after the commit, written again if it fails
	bytes   int          // of the messages kept in batches
}

const (
	defaultDeferWait   = 2 * time.Millisecond
	defaultDeferMaxAge = 100 * time.Millisecond
	deferMaxCommits    = 256
	deferMaxBytes      = 2 << 20 // the copies kept in batches (at most journalMaxData each)
)

// add records batch as written in d. The batches kept for notifying and for writing again
// are copies: Deliver reuses a message's buffer once it is answered, and a message written
// again goes to the queue unclaimed (the scheduler may already hold the claim written in d).
func (d *deferredTx) add(batch []*pending) {
	kept := make([]*pending, len(batch))
	for i, p := range batch {
		if p.op != nil {
			kept[i] = p
			continue
		}
		d.commits++
		cp := *p
		cp.data = bytes.Clone(p.data)
		d.bytes += len(cp.data)
		cp.claim, cp.claimed, cp.done = false, nil, nil
		kept[i] = &cp
	}
	d.seq = max(d.seq, maxSeq(batch))
	d.batches = append(d.batches, kept)
}

// openDeferred begins the open transaction on the writer connection, with
// synchronous=NORMAL: its durability is the journal's.
func (s *Store) openDeferred(ctx context.Context) error {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", classify(err))
	}
	if _, err := conn.ExecContext(ctx, `PRAGMA synchronous = NORMAL`); err != nil {
		conn.Close()
		return fmt.Errorf("begin: %w", classify(err))
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		s.releaseConn(conn)
		return fmt.Errorf("begin: %w", classify(err))
	}
	s.def = &deferredTx{conn: conn, tx: tx, opened: time.Now()}
	s.deferOpen.Store(true)
	return nil
}

// releaseConn sets the writer connection back to synchronous=FULL and returns it to the pool.
func (s *Store) releaseConn(conn *sql.Conn) {
	if _, err := conn.ExecContext(context.Background(), `PRAGMA synchronous = FULL`); err != nil {
		// Never hand back a connection that would commit messages without fsync:
		// ErrBadConn makes database/sql close it instead.
		s.log.Error("restore synchronous=FULL failed, dropping the connection", "err", err)
		conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	conn.Close()
}

// commitDeferred commits the open transaction, if any, and notifies the subscribers of its
// messages. If the commit fails, its batches (answered already, and durable in the journal)
// are written again, one transaction each, with an fsync; an error means some of them could
// not be, and wait in the journal for the next start.
func (s *Store) commitDeferred() error {
	d := s.def
	if d == nil {
		return nil
	}
	s.def = nil
	err := s.setApplied(s.cctx, d.tx, d.seq)
	if err == nil {
		err = s.commitTx(d.tx)
	} else {
		d.tx.Rollback()
	}
	s.releaseConn(d.conn)
	s.deferOpen.Store(false)
	if err != nil {
		s.log.Error("commit failed, writing its messages again", "batches", len(d.batches), "err", err)
		return s.rewrite(d.batches)
	}
	for _, b := range d.batches {
		s.notifyBatch(b)
	}
	return nil
}

// abortDeferred rolls the open transaction back and writes its answered batches again.
func (s *Store) abortDeferred() {
	d := s.def
	s.def = nil
	d.tx.Rollback()
	s.qids.reset()
	s.releaseConn(d.conn)
	s.deferOpen.Store(false)
	s.rewrite(d.batches)
}

// rewrite writes batches that were answered in a transaction that did not commit, all in one
// transaction with an fsync, or, when that fails, each in a transaction of its own (their ops
// may run again, as groupTx allows). Those that fail (a full disk) are kept and tried again
// before every later write (retryUnwritten); meanwhile their journal records must stay, so
// nothing goes through the journal.
func (s *Store) rewrite(batches [][]*pending) error {
	s.unwritten = append(s.unwritten, batches...)
	return s.retryUnwritten()
}

// retryUnwritten writes what rewrite could not: all at once, else in order up to the first
// failure.
func (s *Store) retryUnwritten() error {
	if len(s.unwritten) > 1 {
		// All in one transaction first: one transaction each writes the pages every message
		// changes once per message, and a failed open transaction may leave hundreds of
		// batches, whose WAL frames would take more room than a disk that just filled up has
		// (an 8 MiB file system: 85 batches of one small message, 4 MiB of WAL).
		var all []*pending
		for _, b := range s.unwritten {
			all = append(all, b...)
		}
		if _, err := s.writeFull(s.cctx, all); err == nil {
			for _, b := range s.unwritten {
				s.notifyBatch(b)
			}
			s.unwritten = nil
			return nil
		}
	}
	for len(s.unwritten) > 0 {
		b := s.unwritten[0]
		if _, err := s.writeFull(s.cctx, b); err != nil {
			s.log.Error("answered messages not yet in the database; they are written again before the next commit, or replayed from the intake journal at the next start",
				"messages", len(s.unwritten), "err", err)
			return err
		}
		s.unwritten = s.unwritten[1:]
		s.notifyBatch(b)
	}
	s.unwritten = nil
	return nil
}

// notifyAfterCommit notifies the subscribers of batch's messages now, or when the open
// transaction that holds them commits.
func (s *Store) notifyAfterCommit(batch []*pending) {
	if s.def == nil {
		s.notifyBatch(batch)
	}
	// else: commitDeferred notifies every batch it holds.
}

// committerKey marks the committer's context: a read made inside a write (an op) must not
// wait for the committer (flushPending).
type committerKey struct{}

// flushPending makes the committer commit its open transaction, if any, so that what
// follows reads every commit Deliver has answered.
func (s *Store) flushPending(ctx context.Context) {
	if !s.deferOpen.Load() || ctx.Value(committerKey{}) != nil {
		return
	}
	s.group(context.WithoutCancel(ctx), &pending{flush: true, done: make(chan error, 1)})
}

func clearSeqs(batch []*pending) {
	for _, p := range batch {
		p.seq = 0
	}
}

// encode gives every message commit of batch the next sequence number and returns their
// records, one after the other.
func (j *journal) encode(batch []*pending) []byte {
	b := j.buf[:0]
	for _, p := range batch {
		if p.op != nil {
			continue
		}
		j.seq++
		p.seq = j.seq
		start := len(b)
		b = append(b, make([]byte, journalHead)...)
		b = appendRecord(b, p)
		binary.LittleEndian.PutUint32(b[start:], journalMagic)
		binary.LittleEndian.PutUint32(b[start+4:], uint32(len(b)-start-journalHead))
		binary.LittleEndian.PutUint64(b[start+8:], p.seq)
		binary.LittleEndian.PutUint32(b[start+16:], recordCRC(b[start+8:start+16], b[start+journalHead:]))
	}
	if j.df != nil && len(b) > 0 {
		b = j.pad(b)
	}
	if cap(b) <= 1<<20 {
		j.buf = b
	}
	return b
}

// pad ends b with a void record up to the next directAlign boundary (a scan skips it; it
// takes a sequence number of its own, so that a scan never stops at it), and returns b in
// memory aligned for O_DIRECT. A gap too short for a record's head takes a block more.
func (j *journal) pad(b []byte) []byte {
	n := -len(b) & (directAlign - 1)
	if n > 0 && n < journalHead {
		n += directAlign
	}
	if n > 0 {
		j.seq++
		start := len(b)
		b = append(b, make([]byte, n)...)
		binary.LittleEndian.PutUint32(b[start:], journalVoid)
		binary.LittleEndian.PutUint32(b[start+4:], uint32(n-journalHead))
		binary.LittleEndian.PutUint64(b[start+8:], j.seq)
		binary.LittleEndian.PutUint32(b[start+16:], recordCRC(b[start+8:start+16], b[start+journalHead:]))
	}
	if uintptr(unsafe.Pointer(&b[0]))%directAlign != 0 {
		raw := make([]byte, cap(b)+directAlign)
		at := -int(uintptr(unsafe.Pointer(&raw[0]))) & (directAlign - 1)
		b = append(raw[at:at], b...)
	}
	return b
}

const (
	recSMTPUTF8 = 1 << iota
	recEightBit
)

// appendRecord appends what a replay needs to write p's rows again.
func appendRecord(b []byte, p *pending) []byte {
	var flags byte
	if p.smtpUTF8 {
		flags |= recSMTPUTF8
	}
	if p.eightBit {
		flags |= recEightBit
	}
	b = append(b, flags)
	for _, str := range []string{p.id, p.rel, p.from, p.ret, p.envID} {
		b = binenc.AppendString(b, str)
	}
	b = binary.AppendVarint(b, unix(p.received))
	b = binary.AppendUvarint(b, uint64(p.size))
	b = binary.AppendUvarint(b, uint64(len(p.accounts)))
	for _, a := range p.accounts {
		b = binary.AppendVarint(b, a)
	}
	b = binary.AppendUvarint(b, uint64(len(p.remotes)))
	for _, r := range p.remotes {
		b = binenc.AppendString(b, r.Address)
		b = binenc.AppendString(b, r.Notify)
		b = binenc.AppendString(b, r.ORCPT)
	}
	return binenc.AppendBytes(b, p.data)
}

var errRecord = errors.New("malformed journal record")

// decodeRecord rebuilds the commit a record describes.
func decodeRecord(payload []byte) (*pending, error) {
	if len(payload) == 0 {
		return nil, errRecord
	}
	flags := payload[0]
	r := &binenc.Reader{B: payload[1:]}
	p := &pending{done: make(chan error, 1), smtpUTF8: flags&recSMTPUTF8 != 0, eightBit: flags&recEightBit != 0}
	for _, dst := range []*string{&p.id, &p.rel, &p.from, &p.ret, &p.envID} {
		*dst = r.String()
	}
	p.received = fromUnix(r.Varint())
	p.day = dayOf(p.received)
	size := r.Uvarint()
	p.size = int64(size)
	for n := r.Count(); n > 0 && !r.Failed; n-- {
		p.accounts = append(p.accounts, r.Varint())
	}
	for n := r.Count(); n > 0 && !r.Failed; n-- {
		p.remotes = append(p.remotes, Recipient{Remote: true, Address: r.String(), Notify: r.String(), ORCPT: r.String()})
	}
	if data := r.Bytes(); len(data) > 0 {
		p.data = append([]byte(nil), data...)
	}
	if r.Failed || len(r.B) != 0 || size > 1<<50 || p.id == "" || len(p.accounts)+len(p.remotes) == 0 ||
		p.rel == "" && p.data == nil && p.size > 0 {
		return nil, errRecord
	}
	return p, nil
}

// scanJournal reads the records of the current lap from the start of the ring: valid
// records with rising sequence numbers, voided ones skipped. It stops at the first bytes
// that are not such a record (zeros, a torn write, the rest of an older lap). last is the
// highest sequence number seen.
func scanJournal(b []byte) (recs []*pending, last uint64) {
	for off := 0; off+journalHead <= len(b); {
		magic := binary.LittleEndian.Uint32(b[off:])
		n := int(binary.LittleEndian.Uint32(b[off+4:]))
		seq := binary.LittleEndian.Uint64(b[off+8:])
		if magic != journalMagic && magic != journalVoid || n > len(b)-off-journalHead || seq <= last {
			break
		}
		if recordCRC(b[off+8:off+16], b[off+journalHead:off+journalHead+n]) != binary.LittleEndian.Uint32(b[off+16:]) {
			break
		}
		if magic == journalMagic {
			p, err := decodeRecord(b[off+journalHead : off+journalHead+n])
			if err != nil {
				break
			}
			p.seq = seq
			recs = append(recs, p)
		}
		last = seq
		off += journalHead + n
	}
	return recs, last
}

func recordCRC(seq, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(seq, castagnoli), castagnoli, payload)
}
