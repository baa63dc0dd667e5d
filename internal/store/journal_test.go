package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"
)

func journalRecords(t *testing.T, dir string) (recs []*pending, last uint64) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, journalName))
	if err != nil {
		t.Fatal(err)
	}
	return scanJournal(b)
}

func TestJournalRecordRoundTrip(t *testing.T) {
	t.Parallel()
	in := []*pending{
		{id: "20261206T052000-abc", data: []byte("Subject: x\r\n\r\nbody\r\n"), size: 20, from: "a@b.example",
			received: time.Unix(1796535600, 0).UTC(), accounts: []int64{3, 7},
			remotes: []Recipient{{Address: "x@far.example", Remote: true, Notify: "SUCCESS,FAILURE", ORCPT: "rfc822;x@far.example"}},
			ret:     "HDRS", envID: "env+2Bid", smtpUTF8: true, eightBit: true},
		{id: "20261206T052000-abd", rel: "blobs/20261206/20261206T052000-abd", size: 300000,
			received: time.Unix(1796535601, 0).UTC(), accounts: []int64{1}},
	}
	j := &journal{}
	b := j.encode(in)
	out, last := scanJournal(append(b, make([]byte, 100)...))
	if last != 2 || len(out) != 2 {
		t.Fatalf("scanned %d records up to seq %d, want 2 up to 2", len(out), last)
	}
	for i, p := range out {
		want := *in[i]
		want.day = dayOf(want.received)
		p.done, want.done = nil, nil
		if !reflect.DeepEqual(*p, want) {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, *p, want)
		}
	}
	// A flipped byte anywhere in a record ends the scan there.
	first := journalHead + int(binary.LittleEndian.Uint32(b[4:]))
	for _, at := range []int{0, 5, 9, 17, journalHead + 3, first - 1, first, first + 9, len(b) - 1} {
		bad := bytes.Clone(b)
		bad[at] ^= 0x40
		got, _ := scanJournal(bad)
		want := 0
		if at >= first {
			want = 1 // the damage is in the second record: the first stands
		}
		if len(got) != want {
			t.Errorf("byte %d damaged: %d records scanned, want %d", at, len(got), want)
		}
	}
}

// The ring after it went back to its start: the scan reads the new lap and stops where an
// older lap's bytes begin, whatever they are.
func TestScanJournalLaps(t *testing.T) {
	t.Parallel()
	rec := func(id string) *pending {
		return &pending{id: id, data: bytes.Repeat([]byte("x"), 100), size: 100, accounts: []int64{1}, received: time.Unix(0, 0).UTC()}
	}
	j := &journal{}
	var lap1 []byte
	for i := range 6 {
		lap1 = append(lap1, j.encode([]*pending{rec(fmt.Sprint("old", i))})...)
	}
	// The second lap is shorter than one old record plus a half: its end falls inside an
	// old record, and the one after that is whole but older.
	lap2 := j.encode([]*pending{rec("new0"), rec("new1")})
	ring := bytes.Clone(lap1)
	copy(ring, lap2)
	recs, last := scanJournal(ring)
	if len(recs) != 2 || recs[0].id != "new0" || recs[1].id != "new1" || last != 8 {
		t.Fatalf("scanned %d records (last seq %d), want new0 and new1 (8)", len(recs), last)
	}
	// A second lap exactly as long as old records: the next old record is whole, with a
	// lower sequence number.
	lap2 = j.encode([]*pending{rec("new2")})
	ring = bytes.Clone(lap1)
	copy(ring, lap2)
	if recs, last := scanJournal(ring); len(recs) != 1 || recs[0].id != "new2" || last != 9 {
		t.Fatalf("scanned %d records (last seq %d), want new2 (9)", len(recs), last)
	}
	// A voided record is skipped, not a stop.
	b := j.encode([]*pending{rec("a"), rec("b"), rec("c")})
	f, err := os.CreateTemp(t.TempDir(), "j")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	jf := &journal{f: f}
	first := j.encode([]*pending{rec("x")}) // the same length as each of a, b and c
	if err := jf.void(b[len(first):2*len(first)], int64(len(first))); err != nil {
		t.Fatal(err)
	}
	f.Seek(0, io.SeekStart)
	data, _ := io.ReadAll(f)
	recs, last = scanJournal(data)
	if len(recs) != 2 || recs[0].id != "a" || recs[1].id != "c" || last != 12 {
		t.Fatalf("scanned %d records (last seq %d), want a and c (12)", len(recs), last)
	}
}

func FuzzJournalScan(f *testing.F) {
	j := &journal{}
	f.Add(j.encode([]*pending{{id: "m1", data: []byte("hi"), size: 2, accounts: []int64{1}}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, last := scanJournal(b)
		var prev uint64
		for _, p := range recs {
			if p.seq <= prev || p.seq > last || p.id == "" || len(p.accounts)+len(p.remotes) == 0 {
				t.Fatalf("scanned a record that is not valid: %+v", p)
			}
			prev = p.seq
			// What scans must encode back to a record that scans the same.
			again, _ := scanJournal((&journal{seq: p.seq - 1}).encode([]*pending{p}))
			if len(again) != 1 || again[0].id != p.id || !bytes.Equal(again[0].data, p.data) || again[0].seq != p.seq {
				t.Fatalf("record %+v does not survive encoding again", p)
			}
		}
	})
}

// copyDB copies the database files of src (a closed store) to dst, replacing what is there:
// a test's way of making SQLite lose its last transactions, as a power loss may when commits
// do not fsync the WAL.
func copyDB(t *testing.T, src, dst string) {
	t.Helper()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(dst + suffix)
		b, err := os.ReadFile(src + suffix)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func inboxBodies(t *testing.T, s *Store, acct int64) []string {
	t.Helper()
	ctx := context.Background()
	ms, err := s.ListMessages(ctx, acct, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		r, _, err := s.OpenMessage(ctx, m.MessageID)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// A journaled commit whose transaction SQLite lost (the database as it was before it) comes
// back at the next start, once, with the UID it would have had; one that SQLite kept is not
// written twice.
func TestJournalReplaysLostTransactions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	snap := filepath.Join(t.TempDir(), "snap.db")
	db := filepath.Join(dir, dbName)
	opt := Options{Journal: true}
	open := func() *Store {
		s, err := Open(context.Background(), dir, opt)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	a := mustAccount(t, s, "ana@example.org")
	deliverInline(t, s, a.ID, "one")
	if s.j == nil || s.j.head == 0 {
		t.Fatal("the commit did not go through the journal")
	}
	s.Close()
	copyDB(t, db, snap) // "one" and journal position 1

	s = open()
	deliverInline(t, s, a.ID, "two")
	deliverInline(t, s, a.ID, "three")
	s.Close()
	// The last sequence number is 3, or 6 with O_DIRECT (a padding record after each).
	if recs, last := journalRecords(t, dir); len(recs) != 2 || last != s.j.seq {
		t.Fatalf("journal holds %d records up to %d, want 2 up to %d", len(recs), last, s.j.seq)
	}
	copyDB(t, snap, db) // SQLite lost "two" and "three"

	s = open()
	wantInbox(t, "after replay", s, a.ID, "one", "two", "three")
	if got, want := uids(t, s, a.ID), []uint32{1, 2, 3}; !reflect.DeepEqual(got, want) {
		t.Errorf("UIDs %v, want %v", got, want)
	}
	deliverInline(t, s, a.ID, "four")
	s.Close()

	s = open() // nothing lost this time: nothing replayed
	defer s.Close()
	wantInbox(t, "after a clean restart", s, a.ID, "one", "two", "three", "four")
}

// openServer opens a Store on dir that the test closes itself (a deferred Close is harmless).
func openServer(t *testing.T, dir string, opt Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newJournaled opens a server Store on a new directory with one account (see openServer).
func newJournaled(t *testing.T) (dir string, s *Store, acct int64) {
	t.Helper()
	dir = t.TempDir()
	s = openServer(t, dir, Options{Journal: true})
	return dir, s, mustAccount(t, s, "ana@example.org").ID
}

// wantInbox checks the bodies of acct's INBOX, in UID order.
func wantInbox(t *testing.T, when string, s *Store, acct int64, want ...string) {
	t.Helper()
	if got := inboxBodies(t, s, acct); !reflect.DeepEqual(got, want) {
		t.Errorf("%s: INBOX holds %q, want %q", when, got, want)
	}
}

// deliverRefused delivers the message "refused" with every transaction holding it made to
// fail, and checks that Deliver reports the failure.
func deliverRefused(t *testing.T, s *Store, acct int64) {
	t.Helper()
	boom := errors.New("injected failure")
	s.testHookWrite = func(batch []*pending) error {
		for _, p := range batch {
			if string(p.data) == "refused" {
				return boom
			}
		}
		return nil
	}
	w, err := s.NewBufferedBlob()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("refused"))
	if err := s.Deliver(context.Background(), &Commit{Blob: w, Recipients: []Recipient{local(acct)}}); !errors.Is(err, boom) {
		t.Fatalf("Deliver: %v, want the injected failure", err)
	}
}

// A commit whose transaction failed after its record was written is refused, and its record
// is voided: it does not come back at the next start.
func TestJournalVoidsFailedCommit(t *testing.T) {
	t.Parallel()
	dir, s, acct := newJournaled(t)
	deliverRefused(t, s, acct)
	deliverInline(t, s, acct, "kept")
	s.Close()
	if recs, last := journalRecords(t, dir); len(recs) != 1 || last != s.j.seq {
		t.Fatalf("journal holds %d live records up to %d, want 1 (the voided one skipped) up to %d", len(recs), last, s.j.seq)
	}
	s = openTestStore(t, dir, Options{Journal: true})
	wantInbox(t, "after a restart", s, acct, "kept")
}

// A ring far smaller than the traffic goes round many times; every message is stored once,
// and a restart that lost the database's last transactions still finds them.
func TestJournalWrapsRing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opt := Options{Journal: true, JournalSize: 4096}
	s := openServer(t, dir, opt)
	a := mustAccount(t, s, "ana@example.org")
	body := func(i int) string { return fmt.Sprintf("%03d %s", i, strings.Repeat("x", 300)) }
	var want []string
	for i := range 40 {
		deliverInline(t, s, a.ID, body(i))
		want = append(want, body(i))
	}
	s.Close()
	if s.j.wraps < 3 {
		t.Errorf("the ring went round %d times, want at least 3", s.j.wraps)
	}
	wantAfterLostTransactions(t, dir, opt, a.ID, body, 40, 45, want)
}

// wantAfterLostTransactions delivers body(from) to body(to-1) to a new server on dir, then puts
// back the database as it was before (SQLite lost their transactions) and checks that the
// next open finds want and them, replayed from the journal.
func wantAfterLostTransactions(t *testing.T, dir string, opt Options, acct int64, body func(int) string, from, to int, want []string) {
	t.Helper()
	snap := filepath.Join(t.TempDir(), "snap.db")
	db := filepath.Join(dir, dbName)
	copyDB(t, db, snap)
	s := openServer(t, dir, opt)
	for i := from; i < to; i++ {
		deliverInline(t, s, acct, body(i))
		want = append(want, body(i))
	}
	s.Close()
	copyDB(t, snap, db)
	s = openTestStore(t, dir, opt)
	wantInbox(t, "after the ring went round and a lost transaction", s, acct, want...)
}

// A ring large enough for O_DIRECT (every batch padded to a block) goes round the same way,
// and a restart that lost the database's last transactions finds every message: the padding
// records are skipped, never mistaken for the end of the ring.
func TestJournalDirectWrapsRing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opt := Options{Journal: true, JournalSize: directMinSize}
	s := openServer(t, dir, opt)
	if s.j.df == nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the file system of %s refused O_DIRECT", dir)
		}
		t.Skipf("the file system of %s refuses O_DIRECT", dir)
	}
	a := mustAccount(t, s, "ana@example.org")
	body := func(i int) string { return fmt.Sprintf("%03d %s", i, strings.Repeat("x", 300+40*i)) }
	var want []string
	laps := 3 * directMinSize / directAlign
	for i := range laps {
		deliverInline(t, s, a.ID, body(i))
		want = append(want, body(i))
		if s.j.head%directAlign != 0 {
			t.Fatalf("after message %d the ring's head is at %d, not on a %d-byte boundary", i, s.j.head, directAlign)
		}
	}
	s.Close()
	if s.j.wraps < 2 {
		t.Errorf("the ring went round %d times, want at least 2", s.j.wraps)
	}
	wantAfterLostTransactions(t, dir, opt, a.ID, body, laps, laps+5, want)
}

// Padding ends every batch on a block boundary, in aligned memory, with a record the scan
// skips: whatever the batch's length, including a gap too short for a record's head.
func TestJournalPad(t *testing.T) {
	t.Parallel()
	j := &journal{}
	for _, n := range []int{1, 100, directAlign - journalHead - 60, directAlign - journalHead - 50, directAlign - 45, 3 * directAlign} {
		p := &pending{id: "m", data: bytes.Repeat([]byte("y"), n), size: int64(n), accounts: []int64{1}, received: time.Unix(0, 0).UTC()}
		b := j.pad(j.encode([]*pending{p}))
		if len(b)%directAlign != 0 || uintptr(unsafe.Pointer(&b[0]))%directAlign != 0 {
			t.Fatalf("data %d: padded to %d bytes at %p", n, len(b), &b[0])
		}
		recs, last := scanJournal(append(b, make([]byte, directAlign)...))
		if len(recs) != 1 || len(recs[0].data) != n || last != j.seq {
			t.Errorf("data %d: scanned %d records up to seq %d, want 1 up to %d", n, len(recs), last, j.seq)
		}
	}
}

// Only small messages are journaled; a large one keeps SQLite's own fsync.
func TestJournalOnlySmallMessages(t *testing.T) {
	t.Parallel()
	_, s, acct := newJournaled(t)
	deliverInline(t, s, acct, strings.Repeat("y", journalMaxData+1))
	if s.j.head != 0 {
		t.Errorf("a %d-byte message went through the journal", journalMaxData+1)
	}
	deliverInline(t, s, acct, "small")
	if s.j.head == 0 {
		t.Error("a small message did not go through the journal")
	}
}

// One server per data directory holds the journal; a CLI command's Store does not need it.
func TestJournalLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	openTestStore(t, dir, Options{Journal: true})
	if s, err := Open(context.Background(), dir, Options{Journal: true}); err == nil {
		s.Close()
		t.Fatal("a second server Store opened the same journal")
	} else if !strings.Contains(err.Error(), "in use by another yubin server") {
		t.Errorf("second server Store: %v", err)
	}
	cli := openTestStore(t, dir, Options{})
	a := mustAccount(t, cli, "ana@example.org")
	deliverInline(t, cli, a.ID, "from the CLI")
}

// A CLI command's Store, opened while the server holds a message in its open transaction,
// waits for that transaction's commit and sees the message ("yubin sendmail" then "yubin
// mail list"). The server commits only when something asks it to, 100 ms after the CLI began
// to open; a CLI that did not wait would have read the INBOX before that, empty.
func TestJournalCLISeesOpenTransaction(t *testing.T) {
	t.Parallel()
	dir, s, acct := newHeldOpen(t, "answered")
	type result struct {
		n   int
		err error
	}
	got := make(chan result, 1)
	go func() {
		cli, err := Open(context.Background(), dir, Options{})
		if err != nil {
			got <- result{err: err}
			return
		}
		defer cli.Close()
		ms, err := cli.ListMessages(context.Background(), acct, "INBOX")
		got <- result{len(ms), err}
	}()
	time.Sleep(100 * time.Millisecond)
	wantInbox(t, "server", s, acct, "answered") // a read in the server commits the transaction
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.n != 1 {
		t.Errorf("the CLI's Store saw %d messages in the INBOX, want the 1 the server had answered", r.n)
	}
}

// A server whose transaction stays open (a steady stream of mail) does not keep a CLI
// command from opening: it waits serverTxWait, then reads what is committed.
func TestJournalCLIServerTxWaitBounded(t *testing.T) {
	t.Parallel()
	dir, s, acct := newHeldOpen(t, "held")
	cli := openTestStore(t, dir, Options{})
	ms, err := cli.ListMessages(context.Background(), acct, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 0 {
		t.Errorf("the CLI saw %d messages of a transaction still open", len(ms))
	}
	// The CLI's writes still wait the full busy timeout for the server, not serverTxWait:
	// once the server commits, the CLI's write goes through.
	wantInbox(t, "server", s, acct, "held")
	deliverInline(t, cli, acct, "from the CLI")
	wantInbox(t, "CLI", cli, acct, "held", "from the CLI")
}

// When the journal cannot be written, the commit is made durable by an fsync of SQLite's WAL
// instead and still succeeds; later commits do without the journal.
func TestJournalWriteFailure(t *testing.T) {
	t.Parallel()
	_, s, acct := newJournaled(t)
	ro, err := os.Open(filepath.Join(s.dir, journalName)) // writes to it fail
	if err != nil {
		t.Fatal(err)
	}
	good, direct := s.j.f, s.j.df
	s.j.f, s.j.df = ro, nil
	t.Cleanup(func() {
		good.Close()
		if direct != nil {
			direct.Close()
		}
	})
	deliverInline(t, s, acct, "one")
	if !s.j.broken {
		t.Fatal("a failed journal write did not take the journal out of use")
	}
	deliverInline(t, s, acct, "two")
	wantInbox(t, "after the failed journal write", s, acct, "one", "two")
	if s.j.head != 0 {
		t.Errorf("the journal's position moved to %d after a failed write", s.j.head)
	}
}

// holdOpen keeps the committer's open transaction open until something commits it.
func holdOpen(s *Store) {
	s.deferWait, s.deferMaxAge = time.Hour, time.Hour
}

// newHeldOpen is newJournaled with one message, body, delivered into an open transaction
// that stays open until something commits it (holdOpen).
func newHeldOpen(t *testing.T, body string) (dir string, s *Store, acct int64) {
	t.Helper()
	dir, s, acct = newJournaled(t)
	holdOpen(s)
	deliverInline(t, s, acct, body)
	if !s.deferOpen.Load() {
		t.Fatal("no transaction was left open after a journaled commit")
	}
	return dir, s, acct
}

func countIn(t *testing.T, s *Store, acct int64) int {
	t.Helper()
	var n int
	if err := s.r.QueryRow(`SELECT COUNT(*) FROM mailbox_messages mm JOIN mailboxes m ON m.id = mm.mailbox_id WHERE m.account_id = ?`, acct).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A journaled commit's rows wait in the committer's open transaction: another connection
// does not see them yet, a read through the Store does (it has the committer commit first).
func TestOpenTransactionReadYourWrites(t *testing.T) {
	t.Parallel()
	_, s, acct := newJournaled(t)
	holdOpen(s) // before the first message: the committer reads it when a transaction is open
	deliverInline(t, s, acct, "one")
	deliverInline(t, s, acct, "two")
	if !s.deferOpen.Load() {
		t.Fatal("no transaction was left open after two journaled commits")
	}
	if n := countIn(t, s, acct); n != 0 {
		t.Fatalf("another connection sees %d messages of an open transaction", n)
	}
	wantInbox(t, "the Store's read", s, acct, "one", "two")
	if s.deferOpen.Load() {
		t.Error("the read did not commit the open transaction")
	}
	if n := countIn(t, s, acct); n != 2 {
		t.Errorf("after the commit another connection sees %d messages, want 2", n)
	}
	if s.txCount.Load() != 1 {
		t.Errorf("%d transactions for two commits held open together, want 1", s.txCount.Load())
	}
}

// A writer outside the committer (here CREATE of an IMAP mailbox) has the open transaction
// commit first instead of waiting for the connection it holds.
func TestOpenTransactionYieldsToWriters(t *testing.T) {
	t.Parallel()
	_, s, acct := newHeldOpen(t, "one")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.CreateMailbox(ctx, acct, "Projects", ""); err != nil {
		t.Fatalf("CreateMailbox beside an open transaction: %v", err)
	}
	if n := countIn(t, s, acct); n != 1 {
		t.Errorf("after the write another connection sees %d messages, want 1", n)
	}
}

// The open transaction keeps a copy of each message it holds (to write it again if the
// commit fails): past deferMaxBytes of them it commits, however young.
func TestOpenTransactionBoundedBytes(t *testing.T) {
	t.Parallel()
	_, s, acct := newJournaled(t)
	holdOpen(s)
	const size = 30 << 10 // journaled (under journalMaxData)
	n := deferMaxBytes/size + 2
	for i := range n {
		deliverInline(t, s, acct, fmt.Sprintf("%04d%s", i, strings.Repeat("z", size-4)))
	}
	if got := countIn(t, s, acct); got < deferMaxBytes/size {
		t.Errorf("another connection sees %d of %d messages of %d bytes, want at least %d: the open transaction outgrew %d bytes",
			got, n, size, deferMaxBytes/size, deferMaxBytes)
	}
	if s.def != nil && s.def.bytes >= deferMaxBytes {
		t.Errorf("the open transaction holds %d bytes of messages", s.def.bytes)
	}
}

// Without a read, the open transaction commits by itself a moment after the last commit.
func TestOpenTransactionCommitsWhenIdle(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTestStore(t, dir, Options{Journal: true})
	a := mustAccount(t, s, "ana@example.org")
	deliverInline(t, s, a.ID, "one")
	for deadline := time.Now().Add(5 * time.Second); countIn(t, s, a.ID) != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the open transaction did not commit within 5s")
		}
	}
}

// A batch that fails inside the open transaction does not take the commits answered before
// it in the same transaction: they are written again; the failed one is voided.
func TestOpenTransactionFailureKeepsAnswered(t *testing.T) {
	t.Parallel()
	dir, s, acct := newHeldOpen(t, "kept")
	deliverRefused(t, s, acct)
	if s.j.broken {
		t.Error("writing the answered commit again failed")
	}
	if n := countIn(t, s, acct); n != 1 {
		t.Errorf("another connection sees %d messages after the failure, want the answered one", n)
	}
	s.Close()
	s = openTestStore(t, dir, Options{Journal: true})
	wantInbox(t, "after a restart", s, acct, "kept")
}

// The answered batches of a failed open transaction are written again in one transaction,
// not one each: one each writes the pages every message changes once per message, more than
// a disk that has just filled up may have room for.
func TestOpenTransactionFailureRewritesOnce(t *testing.T) {
	t.Parallel()
	_, s, acct := newJournaled(t)
	holdOpen(s)
	var want []string
	for i := range 5 {
		want = append(want, fmt.Sprint("kept ", i))
		deliverInline(t, s, acct, want[i])
	}
	before := s.txCount.Load()
	deliverRefused(t, s, acct)
	if n := s.txCount.Load() - before; n != 1 {
		t.Errorf("%d transactions to write 5 answered batches again, want 1", n)
	}
	if n := countIn(t, s, acct); n != 5 {
		t.Errorf("another connection sees %d messages after the failure, want the 5 answered", n)
	}
	wantInbox(t, "after the failure", s, acct, want...)
}

// A crash loses the committer's open transaction. Its messages are in the journal: a CLI
// command opening the data directory before the server starts again writes them (as the
// server would at its start), and the server then does not write them twice.
func TestCLIRecoversOpenTransaction(t *testing.T) {
	t.Parallel()
	dir, s, acct := newJournaled(t)
	deliverInline(t, s, acct, "committed")
	inboxBodies(t, s, acct) // commits it
	holdOpen(s)
	deliverInline(t, s, acct, "in the open transaction")
	if !s.deferOpen.Load() {
		t.Fatal("no transaction was left open")
	}
	// The data directory as a kill -9 leaves it now: copy the files the server has open.
	crashed := t.TempDir()
	for _, name := range []string{dbName, dbName + "-wal", dbName + "-shm", journalName} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(crashed, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"committed", "in the open transaction"}
	cli := openTestStore(t, crashed, Options{})
	wantInbox(t, "the CLI after the crash", cli, acct, want...)
	cli.Close()
	srv := openTestStore(t, crashed, Options{Journal: true})
	wantInbox(t, "the restarted server", srv, acct, want...)
}
