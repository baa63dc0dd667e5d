package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"
)

func newTestStore(t testing.TB, opt Options) *Store {
	t.Helper()
	return openTestStore(t, t.TempDir(), opt)
}

// newTestStoreIn opens a Store on dir with default options, closed when the test ends.
func newTestStoreIn(t testing.TB, dir string) *Store {
	t.Helper()
	return openTestStore(t, dir, Options{})
}

func openTestStore(t testing.TB, dir string, opt Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// mustAccount adds the domain if needed and an account.
func mustAccount(t testing.TB, s *Store, address string) Account {
	t.Helper()
	ctx := context.Background()
	domain, err := splitAddress(address)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddDomain(ctx, domain); err != nil && !errors.Is(err, ErrExists) {
		t.Fatal(err)
	}
	a, err := s.AddAccount(ctx, address, "hash")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// deliverInline commits a small message into acct's INBOX as the SMTP server does (a
// buffered blob, stored inside the database).
func deliverInline(t testing.TB, s *Store, acct int64, body string) {
	t.Helper()
	w, err := s.NewBufferedBlob()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(body))
	if err := s.Deliver(context.Background(), &Commit{Blob: w, From: "x@remote.example", Recipients: []Recipient{local(acct)}}); err != nil {
		t.Fatal(err)
	}
}

// newBlob returns a blob holding body.
func newBlob(t testing.TB, s *Store, body []byte) *BlobWriter {
	t.Helper()
	b, err := s.NewBlob()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write(body); err != nil {
		t.Fatal(err)
	}
	return b
}

func local(id int64) Recipient { return Recipient{Address: "local", AccountID: id} }

func uids(t *testing.T, s *Store, acct int64) []uint32 {
	t.Helper()
	ms, err := s.ListMessages(context.Background(), acct, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	var u []uint32
	for _, m := range ms {
		u = append(u, m.UID)
	}
	return u
}

func TestOpenReopen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"", "tmp", "blobs"} {
		fi, err := os.Stat(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want 0700", sub, fi.Mode().Perm())
		}
	}
	a := mustAccount(t, s, "ana@example.org")
	b := newBlob(t, s, []byte("hello\r\n"))
	id := b.ID()
	if err := s.Deliver(ctx, &Commit{Blob: b, Recipients: []Recipient{local(a.ID)}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s, err = Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.SchemaVersion(ctx); err != nil || v != schemaVersion {
		t.Errorf("schema version %d, %v; want %d", v, err, schemaVersion)
	}
	got, err := s.GetAccount(ctx, "ana@example.org")
	if err != nil || got.ID != a.ID {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
	ms, err := s.ListMessages(ctx, a.ID, "INBOX")
	if err != nil || len(ms) != 1 || ms[0].MessageID != id {
		t.Fatalf("after reopen: %+v, %v", ms, err)
	}
}

// A new database gets pageSize pages; one made with SQLite's default pages (by an earlier
// yubin) keeps them and opens as before.
func TestPageSize(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pageOf := func(s *Store) int {
		t.Helper()
		var n int
		if err := s.r.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	s := newTestStore(t, Options{})
	if got := pageOf(s); got != pageSize {
		t.Errorf("new database: page size %d, want %d", got, pageSize)
	}

	dir := t.TempDir()
	old, err := sql.Open("sqlite", filepath.Join(dir, dbName)+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Exec(`CREATE TABLE t (x)`); err != nil {
		t.Fatal(err)
	}
	old.Close()
	s2, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := pageOf(s2); got != 4096 {
		t.Errorf("existing database: page size %d, want SQLite's default 4096 kept", got)
	}
	a := mustAccount(t, s2, "ana@example.org")
	if err := s2.Deliver(ctx, &Commit{Blob: newBlob(t, s2, []byte("hi\r\n")), Recipients: []Recipient{local(a.ID)}}); err != nil {
		t.Fatal(err)
	}
	if got := uids(t, s2, a.ID); !slices.Equal(got, []uint32{1}) {
		t.Errorf("existing database: INBOX UIDs %v, want [1]", got)
	}
}

func TestDeliverClosed(t *testing.T) {
	t.Parallel()
	s, err := Open(context.Background(), t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := mustAccount(t, s, "ana@example.org")
	b := newBlob(t, s, []byte("x"))
	s.Close()
	err = s.Deliver(context.Background(), &Commit{Blob: b, Recipients: []Recipient{local(a.ID)}})
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Deliver after Close: %v, want ErrClosed", err)
	}
	assertNoFile(t, s, b.ID())
}

// assertNoFile fails if a tmp or blob file named id exists.
func assertNoFile(t *testing.T, s *Store, id string) {
	t.Helper()
	for _, pattern := range []string{filepath.Join(s.dir, "tmp", id), filepath.Join(s.dir, "blobs", "*", id)} {
		m, _ := filepath.Glob(pattern)
		if len(m) > 0 {
			t.Errorf("file left behind: %v", m)
		}
	}
}

// twoHandles opens two Stores on one new directory, standing for the server and the CLI
// beside it; both close when the test ends.
func twoHandles(t *testing.T) (server, cli *Store) {
	t.Helper()
	dir := t.TempDir()
	server = newTestStoreIn(t, dir)
	cli = newTestStoreIn(t, dir)
	return server, cli
}

// Two Stores on one directory stand for the CLI and the server: each sees
// the other's writes at once, and their writers take turns.
func TestTwoHandles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	server, cli := twoHandles(t)

	a := mustAccount(t, cli, "ana@example.org")
	got, err := server.GetAccount(ctx, "ana@example.org")
	if err != nil || got != a {
		t.Fatalf("server sees %+v, %v; want %+v", got, err, a)
	}

	const each = 15
	var wg sync.WaitGroup
	errs := make(chan error, 2*each)
	for _, s := range []*Store{server, cli} {
		for range each {
			wg.Go(func() {
				b, err := s.NewBlob()
				if err != nil {
					errs <- err
					return
				}
				b.Write([]byte("m"))
				errs <- s.Deliver(ctx, &Commit{Blob: b, Recipients: []Recipient{local(a.ID)}})
			})
		}
	}
	// Meanwhile the CLI keeps writing too.
	for i := range 5 {
		if err := cli.AddDomain(ctx, string(rune('a'+i))+".example"); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	u := uids(t, server, a.ID)
	if len(u) != 2*each {
		t.Fatalf("%d messages, want %d", len(u), 2*each)
	}
	for i, uid := range u {
		if uid != uint32(i+1) {
			t.Fatalf("UIDs %v, want 1..%d", u, 2*each)
		}
	}
}

func TestOpenMessage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	a := mustAccount(t, s, "ana@example.org")
	// Larger than the 64 KiB write buffer, with every byte value.
	body := bytes.Repeat([]byte{0, 1, 2, '\r', '\n', 0xff, '.', 'x'}, 20000)
	b, err := s.NewBlob()
	if err != nil {
		t.Fatal(err)
	}
	for chunk := range slices.Chunk(body, 1000) {
		if _, err := b.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if b.Size() != int64(len(body)) {
		t.Errorf("Size %d, want %d", b.Size(), len(body))
	}
	// 23:30 in New York on March 5 is March 6 in UTC.
	ny := time.FixedZone("EST", -5*3600)
	received := time.Date(2024, 3, 5, 23, 30, 0, 0, ny)
	if err := s.Deliver(ctx, &Commit{Blob: b, From: "x@y.example", Recipients: []Recipient{local(a.ID)}, ReceivedAt: received}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "blobs", "20240306", b.ID())); err != nil {
		t.Errorf("blob not under blobs/20240306: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "tmp", b.ID())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp file still there: %v", err)
	}
	f, size, err := s.OpenMessage(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(len(body)) || !bytes.Equal(got, body) {
		t.Errorf("read back %d bytes (size %d), want the %d bytes written", len(got), size, len(body))
	}
	ms, err := s.ListMessages(ctx, a.ID, "INBOX")
	if err != nil || len(ms) != 1 {
		t.Fatal(ms, err)
	}
	if !ms[0].InternalDate.Equal(received) || ms[0].Size != int64(len(body)) || ms[0].Flags != nil {
		t.Errorf("message info %+v", ms[0])
	}
	if _, _, err := s.OpenMessage(ctx, "nosuchmessage000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenMessage of unknown id: %v", err)
	}
}

func TestIDsSortAndDiffer(t *testing.T) {
	t.Parallel()
	var g idSource
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var ids []string
	seen := map[string]bool{}
	for i := range 3000 {
		// Many ids per millisecond, and the clock going back once.
		at := now.Add(time.Duration(i/100) * time.Millisecond)
		if i == 1500 {
			at = now
		}
		id := g.next(at)
		if len(id) != 16 {
			t.Fatalf("id %q: length %d", id, len(id))
		}
		for _, c := range id {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'v') {
				t.Fatalf("id %q: character %q", id, c)
			}
		}
		if seen[id] {
			t.Fatalf("id %q drawn twice", id)
		}
		seen[id] = true
		ids = append(ids, id)
	}
	if !sort.StringsAreSorted(ids) {
		t.Error("ids do not sort in the order drawn")
	}
	if a, b := new(idSource).next(now), new(idSource).next(now.Add(time.Millisecond)); a >= b {
		t.Errorf("id %s of a later millisecond does not sort after %s", b, a)
	}
}

// TestReaderProcessLeavesServerAlone: a second Store on the same directory that only reads
// (a CLI command such as "yubin mail count" beside the server) opens while the writer's lock
// is held and, closing, leaves the server's WAL as it was instead of checkpointing it.
func TestReaderProcessLeavesServerAlone(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	server, err := Open(ctx, dir, Options{CheckpointEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	a := mustAccount(t, server, "ana@example.org")
	deliverInline(t, server, a.ID, "Subject: x\r\n\r\nbody\r\n")
	wal := filepath.Join(dir, dbName+"-wal")
	before, err := os.Stat(wal)
	if err != nil || before.Size() == 0 {
		t.Fatalf("the server's WAL should hold its commits: %v %v", before, err)
	}

	// Another connection holds the writer's lock, as a busy server's committer does.
	lock, err := sql.Open("sqlite", filepath.Join(dir, dbName)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	lockConn, err := lock.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockConn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	openCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	start := time.Now()
	cli, err := Open(openCtx, dir, Options{})
	if err != nil {
		t.Fatalf("open beside a held writer lock: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("open waited %v for the writer's lock", d)
	}
	if msgs, err := cli.ListMessages(ctx, a.ID, "INBOX"); err != nil || len(msgs) != 1 {
		t.Fatalf("messages seen by the second store: %d, %v", len(msgs), err)
	}
	lockConn.ExecContext(ctx, `ROLLBACK`)
	lockConn.Close()
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(wal)
	if err != nil || after.Size() != before.Size() {
		t.Fatalf("WAL after the reader closed: %v (before %d), %v", after, before.Size(), err)
	}
}
