package pop3server

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

func TestPythonPOP3(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"starttls", "tls"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t)
			for i := 1; i <= 3; i++ {
				msg := mailtest.Message(i, fmt.Sprintf("pop %d", i))
				if i == 2 {
					msg += ".starts with a dot\r\n"
				}
				ts.Deliver(ts.Account.ID, msg)
			}
			addr := ts.Plain
			if mode == "tls" {
				addr = ts.Implicit
			}
			host, port, _ := net.SplitHostPort(addr)
			mailtest.Script(t, "pop3_scenario.py", nil, mode, host, port, "user@example.test", mailtest.Password)
		})
	}
}

type client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialTLS(t testing.TB, addr string) *client {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl := &client{t: t, c: c, br: bufio.NewReader(c)}
	if l := cl.line(); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("greeting %q", l)
	}
	return cl
}

func (cl *client) line() string {
	cl.t.Helper()
	cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := cl.br.ReadString('\n')
	if err != nil {
		cl.t.Fatalf("read: %v", err)
	}
	return strings.TrimRight(l, "\r\n")
}

func (cl *client) cmd(s string) string {
	cl.t.Helper()
	io.WriteString(cl.c, s+"\r\n")
	return cl.line()
}

func TestBadInputAndGuard(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	cl := dialTLS(t, ts.Implicit)
	for _, c := range []string{"BOGUS", "STAT", "RETR 1", "PASS x", strings.Repeat("A", 5000)} {
		if r := cl.cmd(c); !strings.HasPrefix(r, "-ERR") {
			t.Errorf("%.20q: %q", c, r)
		}
	}
	for i := range 10 {
		cl.cmd("USER user@example.test")
		if r := cl.cmd(fmt.Sprintf("PASS wrong%d", i)); !strings.Contains(r, "[AUTH]") {
			t.Fatalf("attempt %d: %q", i, r)
		}
	}
	cl.cmd("USER user@example.test")
	if r := cl.cmd("PASS " + mailtest.Password); !strings.Contains(r, "[SYS/TEMP]") {
		t.Errorf("locked out: %q", r)
	}
}

func TestAuthPlainAndLimits(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(s *Server) { s.Limits.MaxConnectionsPerIP = 1 })
	ts.Deliver(ts.Account.ID, mailtest.Message(1, "x"))
	cl := dialTLS(t, ts.Implicit)
	c, err := net.Dial("tcp", ts.Plain)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	c.Close()
	if !strings.HasPrefix(string(b), "-ERR [SYS/TEMP]") {
		t.Errorf("second connection: %q", b)
	}
	// AUTH PLAIN with an initial response (RFC 5034).
	if r := cl.cmd("AUTH PLAIN AHVzZXJAZXhhbXBsZS50ZXN0AGNvcnJlY3QgaG9yc2UgYmF0dGVyeQ=="); !strings.HasPrefix(r, "+OK 1 messages") {
		t.Fatalf("AUTH PLAIN: %q", r)
	}
	if r := cl.cmd("UIDL 1"); !strings.HasPrefix(r, "+OK 1 ") {
		t.Errorf("UIDL 1: %q", r)
	}
}
