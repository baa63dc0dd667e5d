package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

func TestDeliver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	ana := mustAccount(t, s, "ana@example.org")
	bob := mustAccount(t, s, "bob@example.org")
	anaC, cancel := s.Subscribe(ana.ID)
	defer cancel()

	deliver := func(rcpts ...Recipient) string {
		t.Helper()
		b := newBlob(t, s, []byte("Subject: hi\r\n\r\nhi\r\n"))
		defer b.Abort() // a no-op after Deliver; here to prove it
		if err := s.Deliver(ctx, &Commit{Blob: b, From: "sender@remote.example", Recipients: rcpts}); err != nil {
			t.Fatal(err)
		}
		return b.ID()
	}
	id1 := deliver(local(ana.ID))
	select {
	case <-anaC:
	default:
		t.Error("no notification for ana after a commit")
	}
	// Same account twice (say, an alias and the address itself): one copy.
	id2 := deliver(local(ana.ID), local(bob.ID), Recipient{Address: "alias", AccountID: ana.ID})
	id3 := deliver(local(bob.ID), local(ana.ID))

	if u := uids(t, s, ana.ID); !reflect.DeepEqual(u, []uint32{1, 2, 3}) {
		t.Errorf("ana UIDs %v, want 1 2 3", u)
	}
	if u := uids(t, s, bob.ID); !reflect.DeepEqual(u, []uint32{1, 2}) {
		t.Errorf("bob UIDs %v, want 1 2", u)
	}
	ms, _ := s.ListMessages(ctx, ana.ID, "INBOX")
	var got []string
	for i, m := range ms {
		got = append(got, m.MessageID)
		if m.ModSeq != uint64(i+2) {
			t.Errorf("message %d: modseq %d, want %d", m.UID, m.ModSeq, i+2)
		}
	}
	if want := []string{id1, id2, id3}; !reflect.DeepEqual(got, want) {
		t.Errorf("ana message ids %v, want %v", got, want)
	}
	mbs, _ := s.ListMailboxes(ctx, ana.ID)
	if in := mbs[0]; in.Name != "INBOX" || in.UIDNext != 4 || in.HighestModSeq != 4 || in.Messages != 3 {
		t.Errorf("ana INBOX %+v", in)
	}

	// Remote recipients become queue rows, once each; mixed with local.
	if n, _ := s.QueueLen(ctx); n != 0 {
		t.Errorf("queue %d, want 0", n)
	}
	idr := deliver(Recipient{Address: "x@remote.example", Remote: true}, Recipient{Address: "y@remote.example", Remote: true},
		Recipient{Address: "x@remote.example", Remote: true}, local(bob.ID))
	if n, _ := s.QueueLen(ctx); n != 2 {
		t.Errorf("queue %d, want 2", n)
	}
	var state string
	var next, expires int64
	if err := s.r.QueryRow(`SELECT state, next_attempt, expires FROM queue WHERE message_id = ? AND rcpt = 'y@remote.example'`, idr).Scan(&state, &next, &expires); err != nil {
		t.Fatal(err)
	}
	if state != "queued" || time.Since(time.Unix(next, 0)) > time.Minute || expires-next != int64((5*24*time.Hour).Seconds()) {
		t.Errorf("queue row: state %q next %d expires %d", state, next, expires)
	}
}

func TestDeliverInvalid(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	a := mustAccount(t, s, "ana@example.org")
	for _, rcpts := range [][]Recipient{
		nil,
		{{Address: "x"}},
		{{Address: "x", AccountID: a.ID, Remote: true}},
		{{Remote: true}},
	} {
		b := newBlob(t, s, []byte("x"))
		if err := s.Deliver(ctx, &Commit{Blob: b, Recipients: rcpts}); err == nil {
			t.Errorf("Deliver to %+v succeeded", rcpts)
		}
		assertNoFile(t, s, b.ID())
		if err := s.Deliver(ctx, &Commit{Blob: b, Recipients: []Recipient{local(a.ID)}}); err == nil {
			t.Error("second Deliver of a finished blob succeeded")
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	b := newBlob(t, s, []byte("x"))
	if err := s.Deliver(cctx, &Commit{Blob: b, Recipients: []Recipient{local(a.ID)}}); !errors.Is(err, context.Canceled) {
		t.Errorf("Deliver with a cancelled context: %v", err)
	}
	assertNoFile(t, s, b.ID())
}

// Many concurrent commits share transactions, and UIDs stay contiguous.
func TestDeliverConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	a := mustAccount(t, s, "ana@example.org")
	var batches []int
	s.testHookCommit = func(n int) { batches = append(batches, n) }

	const n = 50
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			b, err := s.NewBlob()
			if err != nil {
				errs <- err
				return
			}
			fmt.Fprintf(b, "message %d\r\n", i)
			<-start
			errs <- s.Deliver(ctx, &Commit{Blob: b, Recipients: []Recipient{local(a.ID)}})
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	u := uids(t, s, a.ID)
	if len(u) != n {
		t.Fatalf("%d messages, want %d", len(u), n)
	}
	for i, uid := range u {
		if uid != uint32(i+1) {
			t.Fatalf("UIDs %v, want 1..%d", u, n)
		}
	}
	tx := s.txCount.Load()
	t.Logf("%d commits in %d transactions, batch sizes %v", n, tx, batches)
	if tx >= n {
		t.Errorf("%d transactions for %d commits: no group commit", tx, n)
	}
}

// A bad commit in a batch fails alone; the others in its batch succeed.
func TestDeliverBadCommitInBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	a := mustAccount(t, s, "ana@example.org")
	// Hold the committer after it took the first commit until the second
	// one waits too, so both land in one batch.
	var batches []int
	s.testHookDrain = func() {
		for deadline := time.Now().Add(5 * time.Second); len(s.commitc) == 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	s.testHookCommit = func(n int) { batches = append(batches, n) }

	good := newBlob(t, s, []byte("good"))
	bad := newBlob(t, s, []byte("bad"))
	var goodErr, badErr error
	var wg sync.WaitGroup
	wg.Go(func() { goodErr = s.Deliver(ctx, &Commit{Blob: good, Recipients: []Recipient{local(a.ID)}}) })
	wg.Go(func() {
		badErr = s.Deliver(ctx, &Commit{Blob: bad, Recipients: []Recipient{local(a.ID), local(a.ID + 1000)}})
	})
	wg.Wait()

	if !reflect.DeepEqual(batches, []int{2}) {
		t.Fatalf("batches %v, want one batch of 2", batches)
	}
	if goodErr != nil {
		t.Errorf("good commit: %v", goodErr)
	}
	if !errors.Is(badErr, ErrNotFound) || errors.Is(badErr, ErrStorageFull) {
		t.Errorf("bad commit: %v, want ErrNotFound", badErr)
	}
	assertNoFile(t, s, bad.ID())
	if _, _, err := s.OpenMessage(ctx, bad.ID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("bad commit left a message row: %v", err)
	}
	ms, _ := s.ListMessages(ctx, a.ID, "INBOX")
	if len(ms) != 1 || ms[0].MessageID != good.ID() || ms[0].UID != 1 {
		t.Errorf("INBOX %+v, want only the good message as UID 1", ms)
	}
	if tx := s.txCount.Load(); tx != 1 {
		t.Errorf("%d transactions committed, want 1 (the retry of the good commit)", tx)
	}
}

// A full database fails the commit with ErrStorageFull and stores nothing.
func TestDeliverStorageFull(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	a := mustAccount(t, s, "ana@example.org")
	var pages int64
	if err := s.w.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	// The writer pool has one connection, so this per-connection limit
	// applies to every commit: the database cannot grow.
	if _, err := s.w.ExecContext(ctx, fmt.Sprintf(`PRAGMA max_page_count = %d`, pages)); err != nil {
		t.Fatal(err)
	}
	from := strings.Repeat("x", 3000) + "@example.org"
	var err error
	var b *BlobWriter
	for range 100 {
		b = newBlob(t, s, []byte("x"))
		if err = s.Deliver(ctx, &Commit{Blob: b, From: from, Recipients: []Recipient{local(a.ID)}}); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrStorageFull) {
		t.Fatalf("Deliver into a full database: %v, want ErrStorageFull", err)
	}
	assertNoFile(t, s, b.ID())
	if _, _, err := s.OpenMessage(ctx, b.ID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("failed commit left a message row: %v", err)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		full bool
	}{
		{&os.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}, true},
		{fmt.Errorf("fsync: %w", &os.PathError{Op: "sync", Path: "/x", Err: syscall.EDQUOT}), true},
		{&os.PathError{Op: "write", Path: "/x", Err: syscall.EIO}, false},
		{ErrNotFound, false},
		{nil, false},
	} {
		err := classify(tc.err)
		if errors.Is(err, ErrStorageFull) != tc.full || !errors.Is(err, tc.err) {
			t.Errorf("classify(%v) = %v; full = %v, want %v", tc.err, err, !tc.full, tc.full)
		}
	}
}

func TestSubscribe(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	ana := mustAccount(t, s, "ana@example.org")
	bob := mustAccount(t, s, "bob@example.org")
	c1, cancel1 := s.Subscribe(ana.ID)
	c2, cancel2 := s.Subscribe(ana.ID)
	cb, cancelB := s.Subscribe(bob.ID)
	defer cancel2()
	defer cancelB()
	for range 3 { // three commits, one pending signal: sends never block
		if err := s.Deliver(ctx, &Commit{Blob: newBlob(t, s, []byte("x")), Recipients: []Recipient{local(ana.ID)}}); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range []<-chan struct{}{c1, c2} {
		select {
		case <-c:
		default:
			t.Errorf("subscriber %d got no signal", i)
		}
		select {
		case <-c:
			t.Errorf("subscriber %d got a second signal", i)
		default:
		}
	}
	select {
	case <-cb:
		t.Error("bob was notified of ana's mail")
	default:
	}
	cancel1()
	cancel1()
	if _, ok := <-c1; ok {
		t.Error("channel open after cancel")
	}
}

// BenchmarkDeliver measures the commit of a 1 KiB message as the SMTP server makes it (a
// buffered blob, stored inside the database): parallel, 8 x GOMAXPROCS sessions sharing
// group commits; sequential, one commit at a time (the latency of a single session).
func BenchmarkDeliver(b *testing.B) {
	small := bytes.Repeat([]byte("0123456789abcde\n"), 64) // 1 KiB
	// 100 KiB, as in the benchmark's case b: stored inside the database (InlineMax), so its
	// cost is mostly WAL frames of the overflow chain (see pageSize).
	large := bytes.Repeat([]byte("0123456789abcde\n"), 6400)
	one := func(b *testing.B, s *Store, acct int64, msg []byte) bool {
		w, err := s.NewBufferedBlob()
		if err != nil {
			b.Error(err)
			return false
		}
		w.Write(msg)
		if err := s.Deliver(context.Background(), &Commit{Blob: w, From: "x@remote.example", Recipients: []Recipient{local(acct)}}); err != nil {
			b.Error(err)
			return false
		}
		return true
	}
	// journal: the server's Store (Options.Journal), whose small commits fsync a journal
	// record while their transaction runs.
	parallel := func(msg []byte, journal bool) func(b *testing.B) {
		return func(b *testing.B) {
			s := newTestStore(b, Options{Journal: journal})
			a := mustAccount(b, s, "ana@example.org")
			b.SetBytes(int64(len(msg)))
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if !one(b, s, a.ID, msg) {
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/float64(s.txCount.Load()), "commits/tx")
		}
	}
	sequential := func(journal bool) func(b *testing.B) {
		return func(b *testing.B) {
			s := newTestStore(b, Options{Journal: journal})
			a := mustAccount(b, s, "ana@example.org")
			b.SetBytes(int64(len(small)))
			b.ResetTimer()
			for b.Loop() {
				if !one(b, s, a.ID, small) {
					return
				}
			}
		}
	}
	b.Run("parallel", parallel(small, false))
	b.Run("parallel-journal", parallel(small, true))
	b.Run("parallel-100KiB", parallel(large, false))
	b.Run("sequential", sequential(false))
	b.Run("sequential-journal", sequential(true))
}

// dirEntries lists the files under dir/sub (for tests).
func dirEntries(t *testing.T, s *Store, sub string) []string {
	t.Helper()
	var names []string
	filepath.WalkDir(filepath.Join(s.dir, sub), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, d.Name())
		}
		return nil
	})
	return names
}

// A joinable write (queue claim or result) waits for a message commit and shares its
// transaction; alone, it commits after JoinWait.
func TestJoinableWrites(t *testing.T) {
	t.Parallel()
	touch := func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE domains SET catch_all = catch_all`)
		return err
	}
	synctest.Test(t, func(t *testing.T) {
		s := newTestStore(t, Options{JoinWait: time.Hour})
		a := mustAccount(t, s, "ana@example.org")
		before := s.txCount.Load()
		if err := joinThenDeliver(t, s, a.ID, "Subject: x\r\n\r\nx\r\n", touch); err != nil {
			t.Fatal(err)
		}
		if n := s.txCount.Load() - before; n != 1 {
			t.Errorf("%d transactions for a message and a joinable write, want 1", n)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		s := newTestStore(t, Options{JoinWait: 5 * time.Millisecond})
		start := time.Now()
		if err := s.groupTxJoin(context.Background(), touch); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 5*time.Millisecond {
			t.Errorf("a joinable write alone committed after %v, want JoinWait (5ms)", d)
		}
	})
	// Beside the committer's open transaction too, the write waits for the next message and
	// goes in its batch: its rows are then written beside the journal's fdatasync, not by
	// the committer while that message waits.
	synctest.Test(t, func(t *testing.T) {
		s := newTestStore(t, Options{Journal: true, JoinWait: time.Hour})
		a := mustAccount(t, s, "ana@example.org")
		holdOpen(s)
		deliverInline(t, s, a.ID, "one")
		if !s.deferOpen.Load() {
			t.Fatal("no transaction was left open after a journaled commit")
		}
		var batches []int
		s.testHookCommit = func(n int) { batches = append(batches, n) }
		if err := joinThenDeliver(t, s, a.ID, "two", touch); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(batches, []int{2}) {
			t.Errorf("batches of %v, want one of 2 (the message and the joinable write)", batches)
		}
	})
}

// joinThenDeliver starts a joinable write, checks that the committer holds it back (waiting
// for company), delivers body to acct and returns the write's result. It runs in a synctest
// bubble.
func joinThenDeliver(t *testing.T, s *Store, acct int64, body string, fn func(context.Context, *sql.Tx) error) error {
	t.Helper()
	joined := make(chan error, 1)
	go func() { joined <- s.groupTxJoin(context.Background(), fn) }()
	synctest.Wait()
	select {
	case err := <-joined:
		t.Fatalf("joinable write committed at once, alone (%v)", err)
	default:
	}
	deliverInline(t, s, acct, body)
	return <-joined
}

// Under a steady stream of commits the WAL must start over from its beginning now and then:
// the background checkpoint alone never catches up with the writer, and without the
// committer's own short checkpoint (tailCheckpoint) the file grew by every commit (200 MB
// after 3,000 small messages), each commit appending to it.
func TestWALStartsOverUnderLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const restart = 256 << 10
	s := newTestStore(t, Options{CheckpointEvery: 2 * time.Millisecond, walRestart: restart})
	ana := mustAccount(t, s, "ana@example.org")
	body := bytes.Repeat([]byte("0123456789abcdef"), 64) // 1 KiB, stored inside the database
	wal := filepath.Join(s.Dir(), dbName+"-wal")

	// Four senders keep the writer busy, until the background checkpointer has run often
	// enough and the commits have written far more than restart (bounded, whatever the
	// machine's speed).
	var commits atomic.Int64
	done := func() bool {
		n := commits.Load()
		return n >= 3000 || n >= 400 && s.ckRuns.Load() >= 30
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !done(); i++ {
				b := newBlob(t, s, append([]byte(fmt.Sprintf("Subject: %d-%d\r\n\r\n", g, i)), body...))
				if err := s.Deliver(ctx, &Commit{Blob: b, From: "a@remote.example", Recipients: []Recipient{local(ana.ID)}}); err != nil {
					t.Error(err)
					return
				}
				commits.Add(1)
			}
		}()
	}
	wg.Wait()
	n := commits.Load()
	// Each message commit writes at least its messages row and its INBOX entry: without
	// restarts the WAL would hold all of that.
	if written := n * 2 * pageSize; written < 16*restart {
		t.Fatalf("test too small: %d commits", n)
	}
	fi, err := os.Stat(wal)
	if err != nil {
		t.Fatal(err)
	}
	// Started over: the file is about restart bytes plus what came while checkpoints ran.
	if fi.Size() > 8*restart {
		t.Errorf("WAL is %d bytes after %d commits (%d checkpoints); want at most %d", fi.Size(), n, s.ckRuns.Load(), 8*restart)
	}
	if got := len(uids(t, s, ana.ID)); got != int(n) {
		t.Errorf("%d messages in INBOX, want %d", got, n)
	}
}

// A commit with Claim stores its queue rows claimed and returns them as ClaimQueue would
// have read them; without Claim they are queued.
func TestDeliverClaimed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	b := newBlob(t, s, []byte("Subject: hi\r\n\r\nhi\r\n"))
	c := &Commit{Blob: b, From: "ana@example.org", Claim: true, Ret: "HDRS", EnvID: "e1", EightBit: true,
		Recipients: []Recipient{
			{Address: "x@Remote.example", Remote: true, Notify: "NEVER"},
			{Address: "y@other.example", Remote: true, ORCPT: "rfc822;y@other.example"},
			{Address: "x@Remote.example", Remote: true}, // once
		}}
	if err := s.Deliver(ctx, c); err != nil {
		t.Fatal(err)
	}
	if len(c.Claimed) != 2 {
		t.Fatalf("claimed %+v, want 2 entries", c.Claimed)
	}
	for _, got := range c.Claimed {
		want, err := s.GetQueueEntry(ctx, got.ID)
		if err != nil {
			t.Fatal(err)
		}
		if want.State != QueueActive {
			t.Errorf("entry %d in state %s, want active", got.ID, want.State)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("claimed entry\n%+v\nstored\n%+v", got, want)
		}
	}
	// Nothing is left for the scheduler to claim, and a reset releases the claims.
	if es, err := s.ClaimQueue(ctx, QueueQueued, time.Now().Add(time.Hour), 10); err != nil || len(es) != 0 {
		t.Errorf("ClaimQueue found %+v, %v", es, err)
	}
	if n, err := s.ResetQueueClaims(ctx); err != nil || n != 2 {
		t.Errorf("ResetQueueClaims = %d, %v; want 2", n, err)
	}

	b = newBlob(t, s, []byte("Subject: hi\r\n\r\nhi\r\n"))
	c = &Commit{Blob: b, From: "ana@example.org", Recipients: []Recipient{{Address: "z@remote.example", Remote: true}}}
	if err := s.Deliver(ctx, c); err != nil {
		t.Fatal(err)
	}
	if len(c.Claimed) != 0 {
		t.Errorf("claimed %+v without Claim", c.Claimed)
	}
	if es, err := s.ClaimQueue(ctx, QueueQueued, time.Now().Add(time.Hour), 10); err != nil || len(es) != 3 {
		t.Errorf("ClaimQueue found %d entries, %v; want 3", len(es), err)
	}
}
