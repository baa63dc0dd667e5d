package smtpserver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"yubin/internal/app"
	"yubin/internal/directory"
	"yubin/internal/intake"
	"yubin/internal/smtpserver"
	"yubin/internal/store"
	"yubin/internal/testenv"
)

// failingStore is a real store whose NewBlob or Deliver can be made to fail, as a full disk
// or a broken database would.
type failingStore struct {
	*store.Store
	newBlobErr error
	deliverErr error
}

func (f *failingStore) NewBufferedBlob() (*store.BlobWriter, error) {
	if f.newBlobErr != nil {
		return nil, f.newBlobErr
	}
	return f.Store.NewBufferedBlob()
}

func (f *failingStore) Deliver(ctx context.Context, c *store.Commit) error {
	if f.deliverErr != nil {
		c.Blob.Abort() // Deliver finishes the blob whatever happens
		return f.deliverErr
	}
	return f.Store.Deliver(ctx, c)
}

// serveDirect runs a Server built by hand over fs, with the domain example.test and the
// account user@example.test, and returns its address and the account id.
func serveDirect(t *testing.T, fs *failingStore) (addr string, account int64) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fs.Store = st
	if err := st.AddDomain(ctx, "example.test"); err != nil {
		t.Fatal(err)
	}
	acct, err := st.AddAccount(ctx, rcpt, "x")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // after the server's shutdown (cleanups run last first)
	srv := &smtpserver.Server{
		Hostname: "mx.test",
		Backend: &intake.Intake{
			Store:     fs,
			Directory: &directory.Directory{Backend: app.DirectoryBackend{S: st}},
		},
	}
	return serveLoopback(t, srv), acct.ID
}

// serveLoopback runs srv on a loopback port until the test ends, when it checks that the
// server shuts down cleanly, and returns the address.
func serveLoopback(t *testing.T, srv *smtpserver.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, smtpserver.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return l.Addr().String()
}

func storedCount(t *testing.T, st *store.Store, account int64) int {
	t.Helper()
	ctx := context.Background()
	msgs, err := st.ListMessages(ctx, account, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	q, err := st.QueueLen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return len(msgs) + q
}

func TestStorageFailure(t *testing.T) {
	t.Parallel()
	full := fmt.Errorf("write blob: %w", store.ErrStorageFull)
	broken := errors.New("database is locked")
	content := "Subject: lost?\r\n\r\nbody\r\n"

	for _, tc := range []struct {
		name string
		fs   failingStore
		code int
		enh  string
		// The reply to BDAT's first chunk, which comes before the commit.
		chunkCode int
		chunkEnh  string
	}{
		{"commit: full", failingStore{deliverErr: full}, 452, "4.3.1", 250, "2.0.0"},
		{"commit: other error", failingStore{deliverErr: broken}, 451, "4.3.0", 250, "2.0.0"},
		{"begin: full", failingStore{newBlobErr: full}, 452, "4.3.1", 452, "4.3.1"},
		{"begin: other error", failingStore{newBlobErr: broken}, 451, "4.3.0", 451, "4.3.0"},
	} {
		t.Run(tc.name+", DATA", func(t *testing.T) {
			t.Parallel()
			fs := tc.fs
			addr, acct := serveDirect(t, &fs)
			c := testenv.Dial(t, addr)
			c.CmdEnh("EHLO client.test", 250, "")
			c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
			c.CmdEnh("RCPT TO:<"+rcpt+">", 250, "2.1.5")
			if fs.newBlobErr != nil {
				// Nothing to write into: refused before 354.
				c.CmdEnh("DATA", tc.code, tc.enh)
			} else {
				c.Cmd("DATA", 354)
				c.Write(wire(content))
				expect(t, c, tc.code, tc.enh)
			}
			if n := storedCount(t, fs.Store, acct); n != 0 {
				t.Errorf("%d messages stored after a failed commit", n)
			}
			// The session goes on; the transaction is over.
			c.CmdEnh("NOOP", 250, "2.0.0")
			c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		})

		t.Run(tc.name+", BDAT", func(t *testing.T) {
			t.Parallel()
			fs := tc.fs
			addr, acct := serveDirect(t, &fs)
			c := testenv.Dial(t, addr)
			c.CmdEnh("EHLO client.test", 250, "")
			c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
			c.CmdEnh("RCPT TO:<"+rcpt+">", 250, "2.1.5")
			bdat(c, content[:10], false)
			expect(t, c, tc.chunkCode, tc.chunkEnh)
			bdat(c, content[10:], true)
			expect(t, c, tc.code, tc.enh)
			if n := storedCount(t, fs.Store, acct); n != 0 {
				t.Errorf("%d messages stored after a failed commit", n)
			}
			c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		})
	}

	t.Run("working store", func(t *testing.T) {
		t.Parallel()
		var fs failingStore
		addr, acct := serveDirect(t, &fs)
		c := testenv.Dial(t, addr)
		c.CmdEnh("EHLO client.test", 250, "")
		deliver(t, c, from, []string{rcpt}, content)
		if n := storedCount(t, fs.Store, acct); n != 1 {
			t.Errorf("%d messages stored, want 1", n)
		}
	})
}

// syncBuffer is a bytes.Buffer that a logger and a test may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDebugLog runs a session with the log level at debug ([log] level = "debug"): the
// session's debug lines are written, with its connection id, and the session works.
func TestDebugLog(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	srv := &smtpserver.Server{
		Hostname: "mx.test",
		Backend:  &intake.Intake{},
		Logger:   slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	c := testenv.Dial(t, serveLoopback(t, srv))
	c.CmdEnh("EHLO client.test", 250, "")
	c.CmdEnh("QUIT", 221, "2.0.0")
	c.ExpectClosed() // the session logged "connection closed" before it closed
	log := out.String()
	for _, want := range []string{`msg="connection opened"`, `msg="connection closed"`, "cid="} {
		if !strings.Contains(log, want) {
			t.Errorf("debug log lacks %s:\n%s", want, log)
		}
	}
}
