// Package store owns yubin's data directory: the database and the message
// blob files. Nothing above this package knows which database it runs on;
// the embedded backend is SQLite (modernc.org/sqlite, no cgo), and the schema
// and API use only plain types so a PostgreSQL backend can implement the same
// API later.
//
// # On-disk layout
//
//	<dir>/yubin.db          the database (WAL mode, plus yubin.db-wal and yubin.db-shm)
//	<dir>/intake.journal    the server's intake journal (journal.go): a ring of records of
//	                        recent commits, replayed at start if the database lost them
//	<dir>/tmp/<id>          blobs being written (NewBlob); removed by Abort or moved by Deliver
//	<dir>/blobs/YYYYMMDD/<id>
//	                        immutable message files, one per message, named by the
//	                        message id, in a directory per day of receipt (UTC)
//
// A message file is shared by every mailbox entry and queue entry that
// references its messages row. DeleteUnreferenced removes messages rows (and
// then their files) that nothing references any more; CleanupOrphans removes
// what a crash can leave behind: blob files without a row and stale tmp files.
//
// # The commit flow
//
// A message is streamed into a BlobWriter (a temp file in tmp/). Deliver makes
// the one durable commit for the whole SMTP transaction (DESIGN.md, "The path
// of one message", steps 3 and 4):
//
//  1. In the caller's goroutine: flush, fsync and close the temp file, then
//     rename it to blobs/YYYYMMDD/<id>. Many sessions fsync their files in
//     parallel.
//  2. The commit is handed to a single committer goroutine, which takes every
//     commit waiting (up to Options.MaxBatch), fsyncs each distinct day
//     directory once (and blobs/ when it has not yet done so for that day),
//     and writes the rows of all of them in one database transaction: the
//     messages row, one mailbox entry per local account and one queue row per
//     remote recipient. The commit costs one WAL fsync for the whole batch; or, in
//     the server (Options.Journal) and for small messages, one fsync of a short
//     record in the intake journal, made while the rows are written into a
//     transaction that stays open for the next batches and commits when the
//     committer is idle (journal.go).
//  3. Each waiting Deliver gets its own result. If the batch transaction
//     fails, the commits are retried one by one so one bad commit cannot fail
//     the others. A failed Deliver removes its blob file: nothing is
//     half-stored. After Deliver returns nil the message survives kill -9 and
//     power loss.
//
// A crash between the rename and the database commit leaves a blob file
// without a messages row; the client got no 250 and will retry, and
// CleanupOrphans removes the file later.
//
// # Database access
//
// Two handles: a writer with exactly one connection (synchronous=FULL,
// transactions BEGIN IMMEDIATE, so a writer never has to upgrade a read lock)
// and a small read-only pool. Every statement or transaction is short; no read
// transaction is held open. Other processes (the yubin CLI) open the same
// directory while the server runs; SQLite's busy timeout (10 s) serializes
// their writes with ours.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite" // also registers the "sqlite" database/sql driver
)

// Errors callers test with errors.Is. Functions wrap them with context.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrNotEmpty: RemoveDomain refuses a domain that still has accounts or aliases.
	ErrNotEmpty = errors.New("not empty")
	// ErrStorageFull: the disk or quota is full (ENOSPC, EDQUOT, SQLITE_FULL).
	// The SMTP server answers 452 4.3.1 for it and 451 for other errors.
	ErrStorageFull = errors.New("storage full")
	// ErrClosed: the Store has been closed.
	ErrClosed = errors.New("store closed")
)

// Options configure a Store. The zero value is usable.
type Options struct {
	Logger   *slog.Logger     // nil: discard
	Now      func() time.Time // nil: time.Now
	MaxBatch int              // most commits in one group-commit transaction; 0: 256
	// QueueLifetime sets the expires column of new queue rows (created +
	// QueueLifetime). 0: 5 days, the RFC 5321 4.5.4.1 suggestion.
	QueueLifetime time.Duration
	// JoinWait is how long a queue claim or delivery result waits for a message commit to
	// share its transaction (see groupTxJoin). 0: 2ms; negative: no waiting (tests that step
	// a fake clock).
	JoinWait time.Duration
	// CheckpointEvery is how often the background checkpointer copies the WAL into the
	// database file (see checkpointLoop). 0: 250ms.
	CheckpointEvery time.Duration
	// Journal: small message commits are made durable by the intake journal (journal.go)
	// rather than by an fsync of SQLite's WAL, and their rows wait in a transaction kept open
	// for the next commits; Open replays what a crash left in the journal. For the server's
	// Store only: one process per data directory may have it (Open fails when another holds
	// it). A Store without it (a CLI command) replays a crashed server's journal when no
	// server holds it.
	Journal bool
	// JournalSize is the size of the journal's ring in bytes. 0: 1 MiB.
	JournalSize int64

	walRestart int64 // in-package tests: bytes of WAL before it starts over; 0: walRestartBytes
}

const (
	dbName        = "yubin.db"
	tmpDirName    = "tmp"
	blobsDirName  = "blobs"
	readerConns   = 4
	busyTimeoutMS = 10000
)

var useFdatasync sync.Once

// Store is an open data directory. It is safe for concurrent use.
type Store struct {
	dir           string
	stampPath     string // directory.stamp (dircache.go)
	log           *slog.Logger
	now           func() time.Time
	maxBatch      int
	queueLifetime time.Duration
	joinWait      time.Duration

	w *sql.DB  // the writer: one connection
	j *journal // the intake journal (Options.Journal), nil without

	// The committer's open transaction (deferredTx), nil when none; deferOpen tells readers.
	def         *deferredTx
	deferOpen   atomic.Bool
	unwritten   [][]*pending    // committer: answered batches a failed commit left out (rewrite)
	deferWait   time.Duration   // how long it waits for more (defaultDeferWait; tests)
	deferMaxAge time.Duration   // its longest life (defaultDeferMaxAge; tests)
	cctx        context.Context // the committer's context (committerKey)
	r           *sql.DB         // the readers: read-only pool

	// Prepared statements (stmt.go): the writer's, prepared at open, and the readers'.
	wst, rst stmtCache

	ids idSource

	// The committer.
	commitc        chan *pending
	qids           queueIDs // ids of new queue rows (committer)
	committerDone  chan struct{}
	ckStop, ckDone chan struct{} // the background checkpointer
	ckEvery        time.Duration
	walRestart     int64       // bytes: walRestartBytes, smaller in tests
	ckTail         atomic.Bool // the committer should finish a checkpoint (tailCheckpoint)
	mu             sync.Mutex  // guards closed, inflight.Add, live
	closed         bool
	inflight       sync.WaitGroup      // Deliver calls that may still send to commitc
	live           map[string]struct{} // ids of blobs this process is writing or committing
	syncedDays     map[string]bool     // committer only: day dirs whose entry in blobs/ it has fsynced

	subs subscribers
	dc   dirCache // directory lookups, see dircache.go
	mc   msgCache // queued messages' bytes, see msgcache.go

	// Counters and hooks for in-package tests.
	wrote          atomic.Bool            // a write transaction committed (see checkpointLoop)
	txCount        atomic.Int64           // Deliver transactions committed
	ckRuns         atomic.Int64           // background checkpoints run
	testHookDrain  func()                 // committer: after taking the first commit, before draining
	testHookCommit func(n int)            // committer: before writing a batch of n commits
	testHookWrite  func([]*pending) error // committer: fails a transaction before its rows
}

// Open opens (creating if needed) the data directory dir, creates or migrates
// the schema and starts the committer.
func Open(ctx context.Context, dir string, opt Options) (*Store, error) {
	useFdatasync.Do(func() {
		// Commit with fdatasync, as SQLite's own Linux builds do: the same durability for the
		// data, without forcing each commit's file timestamp through the file system's
		// journal. Where the platform has no fdatasync the driver keeps fsync.
		sqlite.Fdatasync(true)
	})
	if strings.ContainsRune(dir, '?') {
		// The driver reads DSN parameters after the first '?'.
		return nil, fmt.Errorf("open store: directory name %q contains '?'", dir)
	}
	for _, d := range []string{dir, filepath.Join(dir, tmpDirName), filepath.Join(dir, blobsDirName)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open store: %w", classify(err))
		}
	}
	s := &Store{
		dir:           dir,
		stampPath:     filepath.Join(dir, stampName),
		log:           opt.Logger,
		now:           opt.Now,
		maxBatch:      opt.MaxBatch,
		queueLifetime: opt.QueueLifetime,
		joinWait:      opt.JoinWait,
		ckEvery:       opt.CheckpointEvery,
		walRestart:    opt.walRestart,
		live:          map[string]struct{}{},
		syncedDays:    map[string]bool{},
		committerDone: make(chan struct{}),
		cctx:          context.WithValue(context.Background(), committerKey{}, true),
		deferWait:     defaultDeferWait,
		deferMaxAge:   defaultDeferMaxAge,
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxBatch <= 0 {
		s.maxBatch = 256
	}
	if s.joinWait == 0 {
		s.joinWait = defaultJoinWait
	}
	if s.walRestart <= 0 {
		s.walRestart = walRestartBytes
	}
	if s.ckEvery <= 0 {
		s.ckEvery = 250 * time.Millisecond
	}
	if s.queueLifetime <= 0 {
		s.queueLifetime = 5 * 24 * time.Hour
	}
	s.subs.m = map[int64]map[*subscription]struct{}{}
	s.mc.max = msgCacheMax

	path := filepath.Join(dir, dbName)
	if err := createDatabase(path); err != nil {
		return nil, fmt.Errorf("open store database %s: %w", path, classify(err))
	}
	var err error
	s.w, err = sql.Open("sqlite", path+"?"+writerParams())
	if err != nil {
		return nil, fmt.Errorf("open store database: %w", err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	if err := migrate(ctx, s.w); err != nil {
		s.w.Close()
		return nil, fmt.Errorf("open store database %s: %w", path, classify(err))
	}
	s.r, err = sql.Open("sqlite", path+"?"+readerParams())
	if err != nil {
		s.w.Close()
		return nil, fmt.Errorf("open store database: %w", err)
	}
	s.r.SetMaxOpenConns(readerConns)
	s.r.SetMaxIdleConns(readerConns)
	if err := s.prepareWriter(ctx); err != nil {
		s.w.Close()
		s.r.Close()
		return nil, fmt.Errorf("open store database %s: %w", path, err)
	}
	if opt.Journal {
		if err := s.openJournal(ctx, opt.JournalSize); err != nil {
			s.wst.close()
			s.w.Close()
			s.r.Close()
			return nil, fmt.Errorf("open store %s: %w", dir, err)
		}
	} else {
		if err := s.recoverJournal(ctx); err != nil {
			s.wst.close()
			s.w.Close()
			s.r.Close()
			return nil, fmt.Errorf("open store %s: %w", dir, err)
		}
	}
	s.commitc = make(chan *pending, s.maxBatch)
	go s.commitLoop()
	s.ckStop, s.ckDone = make(chan struct{}), make(chan struct{})
	go s.checkpointLoop(path)
	return s, nil
}

// checkpointLoop copies the WAL back into the database file in the background. The writer
// connection has automatic checkpoints off (wal_autocheckpoint 0): an automatic checkpoint
// runs inside whichever COMMIT crosses the threshold, and would add its work (and its fsync
// of the database file) to the latency of that batch of messages. A PASSIVE checkpoint on
// another connection runs beside the writer and never blocks it.
//
// Under a steady stream of commits a background checkpoint never catches up by itself: the
// writer appends frames while it copies. SQLite starts the WAL over from its beginning only
// when a write transaction begins with every frame copied, so the file would grow without
// bound, and every commit would append to it: an fdatasync that extends a file also commits
// the file system's journal (measured here: 8 KiB frames appended cost about 0.5 ms a
// commit, overwritten 0.3 ms). So when a checkpoint leaves frames behind, it asks the
// committer to copy the rest between two batches (tailCheckpoint), which it does quickly
// since only the frames written meanwhile are left; the next commit then rewrites the WAL
// from the start.
func (s *Store) checkpointLoop(path string) {
	defer close(s.ckDone)
	db, err := sql.Open("sqlite", path+"?"+fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeoutMS))
	if err != nil {
		s.log.Error("checkpointer: open database", "err", err)
		return
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var page int64
	if err := db.QueryRow(`PRAGMA page_size`).Scan(&page); err != nil || page <= 0 {
		page = pageSize
	}
	restartFrames := s.walRestart / page
	tick := time.NewTicker(s.ckEvery)
	defer tick.Stop()
	var last, lastTx int64
	seenSize, seenMod := int64(-1), time.Time{}
	for {
		select {
		case <-s.ckStop:
			// A last full checkpoint leaves a short WAL behind for the next start; not
			// after a process that only read (a CLI command such as "mail count" beside
			// the server), whose checkpoint would copy the server's WAL and hold off its
			// commits while it truncates.
			if s.wrote.Load() {
				db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
			}
			return
		case <-tick.C:
		}
		// A WAL untouched since the last pass has nothing new: a stat is cheaper than asking
		// SQLite (tests that run hours of fake time tick millions of times).
		fi, err := os.Stat(path + "-wal")
		if err != nil || fi.Size() == seenSize && fi.ModTime().Equal(seenMod) {
			continue
		}
		seenSize, seenMod = fi.Size(), fi.ModTime()
		// When a pass found many new frames, the writer likely added many more while it
		// copied them: another pass follows at once, so that the committer's part stays
		// small.
		small := false
		for pass := 1; pass <= ckMaxPasses; pass++ {
			tx := s.txCount.Load()
			var busy, frames, copied int64
			if err := db.QueryRow(`PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &copied); err != nil {
				s.log.Warn("checkpoint", "err", err)
				break
			}
			s.ckRuns.Add(1)
			grown := frames - last // frames added since the previous pass began
			if frames < last {
				grown = frames // the WAL started over
			}
			if pass == 1 {
				// Frames per transaction since the last tick (at least: writes outside
				// the committer are not counted).
				small = grown <= smallCommitFrames*max(tx-lastTx, 1)
			}
			last, lastTx = frames, tx
			if grown == 0 && copied == frames {
				break // idle
			}
			if frames < restartFrames {
				break // short enough: the WAL goes on growing for now
			}
			// Starting over pays for small commits, whose fdatasync would otherwise commit
			// the file system's journal each time; a commit of large messages writes so
			// much that this hardly shows, while the committer's part of the checkpoint
			// (tens of ms under a stream of 100 KiB messages) and the extra passes would.
			// So under large commits the WAL grows to four times its size before it starts
			// over. The committer's part is small once a pass found few new frames; passes
			// that do not get there (large messages outpacing the copy) leave the WAL
			// growing until the next tick, unless it is four times its size already: then
			// the committer pauses for a longer copy rather than let the file grow on.
			big := frames >= 4*restartFrames
			if !small && !big {
				break
			}
			if grown <= ckTailFrames || big && pass == ckMaxPasses {
				s.ckTail.Store(true)
				break
			}
		}
	}
}

// walRestartBytes: the WAL starts over once it holds this much (see checkpointLoop). Each
// start over costs the committer a short checkpoint of its own, with an fsync of the database
// file (measured: a few ms, tens of ms under a stream of 100 KiB messages); a longer WAL
// spreads that over more commits.
const walRestartBytes = 16 << 20

// ckTailFrames and ckMaxPasses: the background checkpointer hands the rest of its work to the
// committer once a pass found at most ckTailFrames new frames (1 MiB of 8 KiB pages); it
// makes at most ckMaxPasses passes a tick.
const (
	ckTailFrames      = 128
	smallCommitFrames = 16 // 128 KiB of 8 KiB pages: a commit of one or a few small messages
	ckMaxPasses       = 4
)

// tailCheckpoint runs on the committer between batches, when the background checkpoint asked
// for it: with no commit in progress the checkpoint can copy every frame (unless a reader
// still needs an old one), so that the next transaction starts the WAL over. It reports
// whether to try again after the next batch: a background pass held the checkpoint lock.
func (s *Store) tailCheckpoint() (again bool) {
	var busy, frames, copied int64
	if err := s.w.QueryRow(`PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &copied); err != nil {
		s.log.Warn("checkpoint between commits", "err", err)
		return false
	}
	return busy != 0
}

// pageSize is the page size of a new database. SQLite writes every changed page to the WAL
// as a frame of its own (two pwrite calls each) and copies it back at checkpoint, so a message
// stored inside the database (up to InlineMax) costs a write per page of its overflow chain:
// 25 frames for 100 KiB with SQLite's default 4 KiB pages, 13 with 8 KiB. On the 100 KiB
// benchmark (case b) that measured +20 to 25% messages per second; small messages touch the
// same number of pages either way and pay only for the larger frames. The page size is
// fixed when a database is created: an existing database keeps its own.
const pageSize = 8192

// createDatabase creates the database file with pageSize pages and WAL mode when it does
// not exist yet (or is empty, left by an interrupted creation). The writer's DSN cannot do
// this: the driver applies its pragmas in lexical order, and journal_mode=WAL, which
// writes the first page, would come before page_size.
func createDatabase(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		return nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	db, err := sql.Open("sqlite", path+"?"+fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeoutMS))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	// Two statements on the one connection: page_size only counts before the first page is
	// written, which journal_mode=WAL does. On a database another process has just created,
	// both are harmless (page_size is then ignored).
	if _, err := db.Exec(fmt.Sprintf(`PRAGMA page_size = %d`, pageSize)); err != nil {
		return err
	}
	_, err = db.Exec(`PRAGMA journal_mode = WAL`)
	return err
}

func writerParams() string {
	return fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)&_pragma=wal_autocheckpoint(0)&_pragma=journal_size_limit(%d)&_txlock=immediate", busyTimeoutMS, walSizeLimit)
}

// walSizeLimit: when the WAL starts over after a burst left it longer than this, SQLite
// truncates the file to this size (PRAGMA journal_size_limit). Below it the file keeps its
// size, so that commits overwrite blocks the file system has already allocated.
const walSizeLimit = 64 << 20

// readerParams: query_only makes a stray write through the reader pool fail
// instead of silently racing the writer connection.
func readerParams() string {
	return fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)&_pragma=query_only(1)", busyTimeoutMS)
}

// The statements of a message commit (writeBatch).
const (
	insertMessageSQL = `INSERT INTO messages (id, blob_path, size, received_at, env_from, data) VALUES (?, ?, ?, ?, ?, ?)`
	// A delivery into an INBOX takes its uidnext as the UID and highestmodseq + 1 as the
	// modseq (insertInboxSQL), then bumps both (bumpInboxSQL); neither cost grows with the
	// mailbox's history. Both are Execs: a Query inside a transaction (an UPDATE ...
	// RETURNING) makes database/sql start a goroutine per call to watch the transaction's
	// context (Rows.initContextClose), whose start wakes an idle thread of the runtime; on
	// the committer's path that was a thread wake-up per message.
	insertInboxSQL = `INSERT INTO mailbox_messages (mailbox_id, uid, message_id, flags, modseq, internal_date)
		SELECT id, uidnext, ?, '', highestmodseq + 1, ? FROM mailboxes WHERE account_id = ? AND name = 'INBOX'`
	bumpInboxSQL = `UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1
		WHERE account_id = ? AND name = 'INBOX'`
)

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// Close refuses new Deliver calls, waits for the commits already handed in to
// finish, stops the committer and closes the database.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.inflight.Wait()
	close(s.commitc)
	<-s.committerDone
	var jerr error
	if s.j != nil {
		jerr = s.j.close()
	}
	close(s.ckStop)
	<-s.ckDone
	s.wst.close()
	s.rst.close()
	return errors.Join(s.r.Close(), s.w.Close(), jerr)
}

// writeTx runs fn in one writer transaction (BEGIN IMMEDIATE). The committer's open
// transaction, which holds the writer connection, commits first (see flushPending).
func (s *Store) writeTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	s.flushPending(ctx)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return classify(err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return classify(err)
	}
	if err := tx.Commit(); err != nil {
		return classify(err)
	}
	s.wrote.Store(true)
	return nil
}

func unix(t time.Time) int64 { return t.Unix() }

func fromUnix(sec int64) time.Time { return time.Unix(sec, 0).UTC() }
