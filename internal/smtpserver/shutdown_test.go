package smtpserver_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"yubin/internal/app"
	"yubin/internal/testenv"
)

// TestGracefulShutdown: Shutdown ends an idle session at once with 421 4.3.2, but lets a
// session in the middle of DATA finish; its message is acknowledged and stored.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)
	idle := session(t, y)
	busy := transaction(t, y)
	busy.Cmd("DATA", 354)
	busy.Write("Subject: in flight\r\n\r\nfirst half, ")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- y.App.Shutdown(ctx)
	}()
	expect(t, idle, 421, "4.3.2")
	idle.ExpectClosed()

	// Shutdown is under way (the idle session is gone) and waits for this one.
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a message was in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	busy.Write("second half\r\n.\r\n")
	id := queuedID(t, expect(t, busy, 250, "2.0.0"))
	expect(t, busy, 421, "4.3.2")
	busy.ExpectClosed()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// The listener is closed.
	if c, err := net.DialTimeout("tcp", y.Addr, time.Second); err == nil {
		c.Close()
		t.Error("still accepting connections after Shutdown")
	}

	// The store is closed now; open the data directory again to look.
	msgs, err := testenv.MailboxContents(reopen(t, y), rcpt, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("%d messages after shutdown, want 1", len(msgs))
	}
	_, rec := traceOf(t, msgs[0], "Subject: in flight\r\n\r\nfirst half, second half\r\n")
	if !strings.Contains(rec, id) {
		t.Errorf("stored message is not %s", id)
	}
	// testenv's cleanup shuts down a second time: that must be harmless.
	if err := y.App.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

// reopen opens y's data directory again after Shutdown closed its store.
func reopen(t *testing.T, y *testenv.Yubin) *app.App {
	t.Helper()
	a, err := app.New(context.Background(), y.Cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Store.Close() })
	return a
}

// TestShutdownDeadline: when the deadline passes, sessions still in DATA are cut off; their
// message was never acknowledged, and it is not stored either.
func TestShutdownDeadline(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)
	plain := session(t, y)
	secure := session(t, y)
	secure.StartTLS()
	secure.CmdEnh("EHLO client.test", 250, "")
	for _, c := range []*testenv.Conn{plain, secure} {
		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		c.CmdEnh("RCPT TO:<"+rcpt+">", 250, "2.1.5")
		c.Cmd("DATA", 354)
		c.Write("Subject: too slow\r\n\r\nfirst half, ")
	}
	// A third client stops in the middle of the STARTTLS handshake.
	stuck := session(t, y)
	stuck.Cmd("STARTTLS", 220)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := y.App.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown past its deadline: %v", err)
	}
	stuck.ExpectClosed()
	for _, c := range []*testenv.Conn{plain, secure} {
		if r, err := c.Read(); err == nil {
			t.Errorf("got a reply from a session cut off: %s", r.Error())
		}
	}
	msgs, err := testenv.MailboxContents(reopen(t, y), rcpt, "INBOX")
	if err != nil || len(msgs) != 0 {
		t.Fatalf("%d messages (%v) after an interrupted DATA, want none", len(msgs), err)
	}
}

// TestShutdownTLS: an idle session inside TLS is told 421 4.3.2 over TLS.
func TestShutdownTLS(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)
	c := session(t, y)
	c.StartTLS()
	c.CmdEnh("EHLO client.test", 250, "")
	content := "Subject: over TLS\r\n\r\nbody\r\n"
	deliver(t, c, from, []string{rcpt}, content)
	_, rec := traceOf(t, onlyMessage(t, y, rcpt), content)
	// RFC 3848: ESMTPS records that the message came over TLS.
	if !strings.Contains(rec, " with ESMTPS\r\n\t(TLS 1.3 ") {
		t.Errorf("Received header does not record TLS:\n%s", rec)
	}
	done := make(chan error, 1)
	go func() { done <- y.App.Shutdown(context.Background()) }()
	expect(t, c, 421, "4.3.2")
	c.ExpectClosed()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
