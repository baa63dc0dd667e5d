// Package mailtest holds test helpers shared by the IMAP and POP3 servers' tests: a real
// store in a temporary directory, a directory.Directory over it (the adapter app uses), an
// account with a password, a self-signed TLS configuration, SMTP-like deliveries, and a
// runner for the Python client scripts. Only tests import it.
package mailtest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"yubin/internal/directory"
	"yubin/internal/store"
	"yubin/internal/testenv/tool"
	"yubin/internal/tlsutil"
)

// Password is the password of every account Env creates.
const Password = "correct horse battery"

// Env is a store with one domain and account, and a directory for logins.
type Env struct {
	T       testing.TB
	Store   *store.Store
	Dir     *directory.Directory
	Guard   *directory.Guard
	Account store.Account
	TLS     *tls.Config // server side, self-signed for "mail.example.test" and 127.0.0.1
	CertPEM []byte      // its certificate, for clients to trust
}

// New opens a store in t.TempDir() with the account "user@example.test".
func New(t testing.TB) *Env {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &Env{T: t, Store: st}
	e.Guard = directory.NewGuard(directory.GuardConfig{MaxDelay: time.Millisecond}, nil)
	cheap := directory.HashParams{Memory: 1024, Time: 1, Threads: 1}
	e.Dir = &directory.Directory{Backend: Backend{st}, Guard: e.Guard, HashParams: cheap}
	if err := st.AddDomain(ctx, "example.test"); err != nil {
		t.Fatal(err)
	}
	e.Account = e.AddAccount("user@example.test")
	certPEM, keyPEM, err := tlsutil.SelfSigned("mail.example.test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	e.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	e.CertPEM = certPEM
	return e
}

// AddAccount adds an account with Password.
func (e *Env) AddAccount(addr string) store.Account {
	e.T.Helper()
	h, err := directory.HashPassword(Password, directory.HashParams{Memory: 1024, Time: 1, Threads: 1})
	if err != nil {
		e.T.Fatal(err)
	}
	a, err := e.Store.AddAccount(context.Background(), addr, h)
	if err != nil {
		e.T.Fatal(err)
	}
	return a
}

// Deliver commits a message into the account's INBOX the way SMTP does (store.Deliver).
func (e *Env) Deliver(accountID int64, msg string) {
	e.T.Helper()
	if err := e.DeliverErr(accountID, msg); err != nil {
		e.T.Fatal(err)
	}
}

// DeliverErr is Deliver for use outside the test goroutine.
func (e *Env) DeliverErr(accountID int64, msg string) error {
	b, err := e.Store.NewBlob()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(b, msg); err != nil {
		b.Abort()
		return err
	}
	return e.Store.Deliver(context.Background(), &store.Commit{Blob: b, From: "sender@example.net",
		Recipients: []store.Recipient{{Address: "user@example.test", AccountID: accountID}}})
}

// Message returns a small test message with a subject, a Message-ID and n lines of body.
func Message(i int, subject string) string {
	return fmt.Sprintf("From: Sender <sender@example.net>\r\n"+
		"To: user@example.test\r\n"+
		"Subject: %s\r\n"+
		"Message-ID: <msg%d@example.net>\r\n"+
		"Date: Mon, 06 May 2024 10:00:00 +0000\r\n"+
		"X-Seq: %d\r\n"+
		"\r\n"+
		"Body of message %d.\r\nSecond line.\r\n", subject, i, i, i)
}

// Backend adapts the store to directory.Backend, as app.DirectoryBackend does.
type Backend struct{ S *store.Store }

func notFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %w", directory.ErrNotFound, err)
	}
	return err
}

func (b Backend) GetDomain(ctx context.Context, name string) (directory.Domain, error) {
	d, err := b.S.GetDomain(ctx, name)
	if err != nil {
		return directory.Domain{}, notFound(err)
	}
	return directory.Domain{Name: d.Name, CatchAll: d.CatchAll}, nil
}

func (b Backend) GetAccount(ctx context.Context, addr string) (directory.Account, error) {
	a, err := b.S.GetAccount(ctx, addr)
	if err != nil {
		return directory.Account{}, notFound(err)
	}
	return directory.Account{ID: a.ID, Address: a.Address, PasswordHash: a.PasswordHash, Disabled: a.Disabled}, nil
}

func (b Backend) GetAlias(ctx context.Context, addr string) ([]string, error) {
	t, err := b.S.GetAlias(ctx, addr)
	return t, notFound(err)
}

func (b Backend) AppPasswordHashes(ctx context.Context, accountID int64) ([]string, error) {
	return b.S.AppPasswordHashes(ctx, accountID)
}

// Script runs a Python script from the caller's testdata directory. Every line the script
// prints is passed to onLine (which may be nil) as it comes; the script's exit status and
// stderr decide the result.
func Script(t testing.TB, script string, onLine func(line string), args ...string) {
	t.Helper()
	py := tool.Need(t, "python3")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, append([]string{"-u", filepath.Join("testdata", script)}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var lines []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if onLine != nil {
				onLine(sc.Text())
			}
		}
	}()
	wg.Wait()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s %v: %v\nstdout:\n%s\nstderr:\n%s", script, args, err, strings.Join(lines, "\n"), stderr.String())
	}
	if os.Getenv("YUBIN_TEST_LOG") != "" {
		t.Logf("%s:\n%s", script, strings.Join(lines, "\n"))
	}
}

// Logger discards, unless YUBIN_TEST_LOG is set: then debug lines go to standard error.
func Logger() *slog.Logger {
	if os.Getenv("YUBIN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// Server is what Serve needs of a protocol server (IMAP, POP3).
type Server interface {
	Serve(l net.Listener) error
	Shutdown(ctx context.Context) error
}

// Serve runs srv on two loopback listeners until the test ends: plain (STARTTLS or STLS
// offered) and implicit TLS with the environment's certificate. At the end it shuts srv
// down and checks that both Serve calls returned closedErr.
func (e *Env) Serve(srv Server, closedErr error) (plain, implicit string) {
	t := e.T
	t.Helper()
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() { done <- srv.Serve(pl) }()
	go func() { done <- srv.Serve(tls.NewListener(raw, e.TLS)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		for range 2 {
			if err := <-done; err != closedErr {
				t.Errorf("Serve returned %v", err)
			}
		}
	})
	return pl.Addr().String(), raw.Addr().String()
}
