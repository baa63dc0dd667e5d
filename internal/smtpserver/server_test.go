package smtpserver_test

// Black-box tests of the MX listener: an in-process yubin (testenv) driven by a raw line
// client, checking reply codes, enhanced codes and the bytes that land in the mailbox.
// Files: server_test.go (helpers, greeting, EHLO, STARTTLS, command sequence),
// delivery_test.go (DATA, 8BITMIME, SMTPUTF8, recipients and relay policy),
// bdat_test.go (CHUNKING), limits_test.go (sizes, errors, connections, timeouts),
// smuggling_test.go (bare line endings, hop count, STARTTLS injection, pipelining),
// shutdown_test.go and backend_test.go (graceful shutdown, storage failures), and
// synctest_test.go (timeouts on a fake clock, over in-memory connections).

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"yubin/internal/smtp"
	"yubin/internal/testenv"
)

const (
	rcpt = "user@example.test"
	from = "sender@example.org"
)

// session dials y and says EHLO.
func session(t *testing.T, y *testenv.Yubin) *testenv.Conn {
	t.Helper()
	c := testenv.Dial(t, y.Addr)
	c.CmdEnh("EHLO client.test", 250, "")
	return c
}

// transaction dials y, says EHLO and opens a transaction from "from" to "rcpt".
func transaction(t *testing.T, y *testenv.Yubin) *testenv.Conn {
	t.Helper()
	c := session(t, y)
	c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
	c.CmdEnh("RCPT TO:<"+rcpt+">", 250, "2.1.5")
	return c
}

// expect reads one reply and checks its code and enhanced code.
func expect(t *testing.T, c *testenv.Conn, code int, enh string) *smtp.Reply {
	t.Helper()
	r, err := c.Read()
	if err != nil {
		t.Fatalf("expected %d %s, read failed: %v", code, enh, err)
	}
	if r.Code != code || r.Enhanced != enh {
		t.Fatalf("expected %d %s, got %s", code, enh, r.Error())
	}
	return r
}

// wire dot-stuffs content (CRLF text ending in CRLF) and appends the terminator.
func wire(content string) string {
	if strings.HasPrefix(content, ".") {
		content = "." + content
	}
	return strings.ReplaceAll(content, "\r\n.", "\r\n..") + ".\r\n"
}

// queuedID returns the message id of a "250 2.0.0 OK queued as <id>" reply.
func queuedID(t *testing.T, r *smtp.Reply) string {
	t.Helper()
	if r.Code != 250 || r.Enhanced != "2.0.0" {
		t.Fatalf("message not accepted: %s", r.Error())
	}
	id, ok := strings.CutPrefix(r.Lines[0], "OK queued as ")
	if !ok || id == "" {
		t.Fatalf("no message id in %q", r.Error())
	}
	return id
}

// deliver sends content to rcpts in one transaction and returns the message id.
func deliver(t *testing.T, c *testenv.Conn, sender string, rcpts []string, content string) string {
	t.Helper()
	return queuedID(t, c.Send(sender, rcpts, wire(content)))
}

// inbox returns the messages in addr's INBOX.
func inbox(t *testing.T, y *testenv.Yubin, addr string) [][]byte {
	t.Helper()
	return y.Messages(addr, "INBOX")
}

// expectEmpty checks that nothing was stored: no INBOX message and no queue row.
func expectEmpty(t *testing.T, y *testenv.Yubin, addrs ...string) {
	t.Helper()
	for _, a := range addrs {
		if msgs := inbox(t, y, a); len(msgs) != 0 {
			t.Fatalf("%s: %d messages stored, want none; first:\n%s", a, len(msgs), msgs[0])
		}
	}
	if n, err := y.App.Store.QueueLen(context.Background()); err != nil || n != 0 {
		t.Fatalf("queue length %d (%v), want 0", n, err)
	}
}

// onlyMessage returns the one message in addr's INBOX.
func onlyMessage(t *testing.T, y *testenv.Yubin, addr string) []byte {
	t.Helper()
	msgs := inbox(t, y, addr)
	if len(msgs) != 1 {
		t.Fatalf("%s: %d messages in INBOX, want 1", addr, len(msgs))
	}
	return msgs[0]
}

// traceOf splits a stored message into the Return-Path line, the Received header and the
// content, checking that the content is want byte for byte.
func traceOf(t *testing.T, stored []byte, want string) (returnPath, received string) {
	t.Helper()
	body := testenv.Body(stored)
	if string(body) != want {
		t.Fatalf("stored content differs:\n got %q\nwant %q", trunc(string(body)), trunc(want))
	}
	head := string(stored[:len(stored)-len(body)])
	i := strings.Index(head, "\r\n")
	if i < 0 || !strings.HasPrefix(head[i+2:], "Received: ") {
		t.Fatalf("stored message does not start with Return-Path and Received: %q", head)
	}
	return head[:i], head[i+2:]
}

func trunc(s string) string {
	if len(s) > 300 {
		return s[:150] + "..." + s[len(s)-150:]
	}
	return s
}

// rawConn is a client below testenv.Conn, for connections that are refused before the
// greeting and for TLS done by hand.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) write(s string) {
	r.t.Helper()
	r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.c.Write([]byte(s)); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *rawConn) expect(code int, enh string) *smtp.Reply {
	r.t.Helper()
	rep, err := readReply(r)
	if err != nil {
		r.t.Fatalf("expected %d %s, read failed: %v", code, enh, err)
	}
	if rep.Code != code || rep.Enhanced != enh {
		r.t.Fatalf("expected %d %s, got %s", code, enh, rep.Error())
	}
	return rep
}

func readReply(r *rawConn) (*smtp.Reply, error) {
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return smtp.ReadReply(r.br, 100)
}

func (r *rawConn) expectClosed() {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := r.br.ReadByte(); err == nil {
		r.t.Fatalf("connection still open, read %q", b)
	}
}

func TestGreetingAndEHLO(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)

	t.Run("greeting", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, y.Addr)
		g := r.expect(220, "")
		if !strings.HasPrefix(g.Lines[0], "mx.test ") {
			t.Errorf("greeting %q does not name mx.test", g.Lines[0])
		}
	})

	t.Run("EHLO keywords", func(t *testing.T) {
		t.Parallel()
		c := testenv.Dial(t, y.Addr)
		r := c.CmdEnh("EHLO client.test", 250, "")
		if !strings.HasPrefix(r.Lines[0], "mx.test") {
			t.Errorf("EHLO reply starts %q", r.Lines[0])
		}
		for _, kw := range []string{"PIPELINING", "SIZE 52428800", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "STARTTLS"} {
			if !slices.Contains(r.Lines[1:], kw) {
				t.Errorf("EHLO lacks %q: %q", kw, r.Lines)
			}
		}
	})

	t.Run("EHLO after STARTTLS", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		c.StartTLS()
		if _, ok := c.C.(*tls.Conn); !ok {
			t.Fatal("StartTLS did not switch to TLS")
		}
		r := c.CmdEnh("EHLO client.test", 250, "")
		if slices.Contains(r.Lines, "STARTTLS") {
			t.Errorf("STARTTLS offered inside TLS: %q", r.Lines)
		}
		if !slices.Contains(r.Lines, "CHUNKING") {
			t.Errorf("EHLO over TLS lacks CHUNKING: %q", r.Lines)
		}
		c.CmdEnh("STARTTLS", 503, "5.5.1")
		// The session goes on over TLS (TestShutdownTLS sends a message this way).
		c.CmdEnh("NOOP", 250, "2.0.0")
	})

	t.Run("HELO", func(t *testing.T) {
		t.Parallel()
		c := testenv.Dial(t, y.Addr)
		c.CmdEnh("HELO client.test", 250, "")
		// HELO is enough for a transaction, without parameters.
		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		c.CmdEnh("RSET", 250, "2.0.0")
		c.CmdEnh("MAIL FROM:<"+from+"> BODY=8BITMIME", 555, "5.5.4")
	})

	t.Run("EHLO without argument", func(t *testing.T) {
		t.Parallel()
		c := testenv.Dial(t, y.Addr)
		c.CmdEnh("EHLO", 501, "5.5.4")
		c.CmdEnh("HELO", 501, "5.5.4")
		c.CmdEnh("EHLO client.test", 250, "")
	})
}

func TestCommandSequence(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)

	t.Run("MAIL before EHLO", func(t *testing.T) {
		t.Parallel()
		c := testenv.Dial(t, y.Addr)
		c.CmdEnh("MAIL FROM:<"+from+">", 503, "5.5.1")
	})
	t.Run("RCPT before MAIL", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		c.CmdEnh("RCPT TO:<"+rcpt+">", 503, "5.5.1")
	})
	t.Run("DATA before MAIL", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		c.CmdEnh("DATA", 503, "5.5.1")
		c.CmdEnh("NOOP", 250, "2.0.0")
	})
	t.Run("DATA without accepted RCPT", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		c.CmdEnh("RCPT TO:<nobody@example.test>", 550, "5.1.1")
		c.CmdEnh("DATA", 554, "5.5.1")
		// The DATA was refused before 354: the next line is a command again.
		c.CmdEnh("NOOP", 250, "2.0.0")
	})
	t.Run("nested MAIL", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		c.CmdEnh("MAIL FROM:<"+from+">", 503, "5.5.1")
	})
	t.Run("unknown command", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		c.CmdEnh("FROB nicate", 500, "5.5.1")
		c.CmdEnh("EXPN staff", 502, "5.5.1")
	})
	t.Run("RSET", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		c.CmdEnh("MAIL FROM:<other@example.org>", 250, "2.1.0")
		c.CmdEnh("RCPT TO:<"+rcpt+">", 250, "2.1.5")
		c.CmdEnh("RSET", 250, "2.0.0")
		// The old transaction is gone: a new MAIL is not nested, and the old recipient
		// and sender do not carry over.
		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		c.CmdEnh("DATA", 554, "5.5.1")
		c.CmdEnh("RCPT TO:<"+rcpt+">", 250, "2.1.5")
		c.Cmd("DATA", 354)
		c.Write(wire("Subject: after RSET\r\n\r\nbody\r\n"))
		queuedID(t, expect(t, c, 250, "2.0.0"))
		rp, _ := traceOf(t, onlyMessage(t, y, rcpt), "Subject: after RSET\r\n\r\nbody\r\n")
		if rp != "Return-Path: <"+from+">" {
			t.Errorf("Return-Path is %q, want the sender of the second transaction", rp)
		}
	})
	t.Run("NOOP", func(t *testing.T) {
		t.Parallel()
		c := testenv.Dial(t, y.Addr)
		c.CmdEnh("NOOP", 250, "2.0.0")
		c.CmdEnh("noop", 250, "2.0.0")
	})
	t.Run("VRFY does not enumerate", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		known := c.CmdEnh("VRFY "+rcpt, 252, "2.5.0")
		unknown := c.CmdEnh("VRFY nobody@example.test", 252, "2.5.0")
		if known.Error() != unknown.Error() {
			t.Errorf("VRFY tells users apart: %q vs %q", known.Error(), unknown.Error())
		}
		c.CmdEnh("VRFY", 501, "5.5.4")
	})
	t.Run("HELP", func(t *testing.T) {
		t.Parallel()
		c := testenv.Dial(t, y.Addr)
		c.CmdEnh("HELP", 214, "2.0.0")
	})
	t.Run("QUIT", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		c.CmdEnh("QUIT", 221, "2.0.0")
		c.ExpectClosed()
	})
	t.Run("HTTP request", func(t *testing.T) {
		t.Parallel()
		c := testenv.Dial(t, y.Addr)
		c.CmdEnh("GET / HTTP/1.1", 221, "2.7.0")
		c.ExpectClosed()
	})
}
