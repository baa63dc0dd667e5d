package imapserver

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"yubin/internal/mailbox/mailtest"
)

// testServer is an IMAP server on loopback over a real store: Plain offers STARTTLS,
// Implicit is TLS from the first byte (port 993 style).
type testServer struct {
	*mailtest.Env
	Srv      *Server
	Plain    string
	Implicit string
}

func startServer(t testing.TB, opts ...func(*Server)) *testServer {
	t.Helper()
	env := mailtest.New(t)
	srv := &Server{Store: env.Store, Directory: env.Dir, TLSConfig: env.TLS, Logger: mailtest.Logger()}
	for _, o := range opts {
		o(srv)
	}
	plain, implicit := env.Serve(srv, ErrServerClosed)
	return &testServer{Env: env, Srv: srv, Plain: plain, Implicit: implicit}
}

// loginTLS connects over implicit TLS and logs in as the test account.
func (ts *testServer) loginTLS(t testing.TB) *client {
	t.Helper()
	cl := dialTLS(t, ts.Implicit)
	cl.login()
	return cl
}

// client is a raw IMAP client for protocol tests.
type client struct {
	t   testing.TB
	c   net.Conn
	br  *bufio.Reader
	tag int
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl := &client{t: t, c: c, br: bufio.NewReader(c)}
	if g := cl.line(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting %q", g)
	}
	return cl
}

func dialTLS(t testing.TB, addr string) *client {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl := &client{t: t, c: c, br: bufio.NewReader(c)}
	if g := cl.line(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting %q", g)
	}
	return cl
}

func (cl *client) write(s string) {
	cl.t.Helper()
	cl.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(cl.c, s); err != nil {
		cl.t.Fatalf("write: %v", err)
	}
}

// line reads one line without its CRLF.
func (cl *client) line() string {
	cl.t.Helper()
	cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := cl.br.ReadString('\n')
	if err != nil {
		cl.t.Fatalf("read: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// cmd sends a tagged command and returns the untagged lines and the tagged completion
// (without the tag). Literals in responses are read as part of their line.
func (cl *client) cmd(format string, args ...any) ([]string, string) {
	cl.t.Helper()
	cl.tag++
	tag := fmt.Sprintf("t%d", cl.tag)
	cl.write(tag + " " + fmt.Sprintf(format, args...) + "\r\n")
	return cl.until(tag)
}

func (cl *client) until(tag string) ([]string, string) {
	cl.t.Helper()
	var untagged []string
	for {
		l := cl.line()
		for {
			n, _, ok := literalAt([]byte(l))
			if !ok {
				break
			}
			buf := make([]byte, n)
			if _, err := io.ReadFull(cl.br, buf); err != nil {
				cl.t.Fatal(err)
			}
			l += "\r\n" + string(buf) + cl.line()
		}
		if strings.HasPrefix(l, tag+" ") {
			return untagged, strings.TrimPrefix(l, tag+" ")
		}
		untagged = append(untagged, l)
	}
}

// ok runs a command that must succeed.
func (cl *client) ok(format string, args ...any) []string {
	cl.t.Helper()
	u, status := cl.cmd(format, args...)
	if !strings.HasPrefix(status, "OK") {
		cl.t.Fatalf("%s: %s (untagged %q)", fmt.Sprintf(format, args...), status, u)
	}
	return u
}

func (cl *client) login() {
	cl.t.Helper()
	cl.ok(`LOGIN user@example.test "%s"`, mailtest.Password)
}

// expectClosed checks that the server closed the connection, skipping what it sent first.
func (cl *client) expectClosed() []string {
	cl.t.Helper()
	cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []string
	for {
		l, err := cl.br.ReadString('\n')
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				cl.t.Fatalf("connection still open after %q", got)
			}
			return got
		}
		got = append(got, strings.TrimRight(l, "\r\n"))
	}
}

// upgrade starts TLS on the connection after an OK to STARTTLS.
func (cl *client) upgrade() {
	cl.t.Helper()
	tc := tls.Client(cl.c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		cl.t.Fatalf("TLS handshake: %v", err)
	}
	cl.c = tc
	cl.br = bufio.NewReader(tc)
}
