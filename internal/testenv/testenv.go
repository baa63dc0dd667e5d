// Package testenv holds test helpers: an in-process yubin on loopback with its own data
// directory, a raw SMTP line client, and lookups of what landed in a mailbox. Only tests
// import it.
package testenv

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"yubin/internal/app"
	"yubin/internal/config"
	"yubin/internal/directory"
	"yubin/internal/intake"
	"yubin/internal/smtp"
	"yubin/internal/testenv/fakedns"
	"yubin/internal/testenv/tool"
)

// Yubin is an in-process server started by a test; it stops when the test ends.
type Yubin struct {
	T    testing.TB
	App  *app.App
	Cfg  config.Config
	Addr string // the MX listener, host:port
	// SubmissionAddr (STARTTLS, like 587) and SubmissionsAddr (implicit TLS, like 465).
	SubmissionAddr, SubmissionsAddr string
	// IMAP (STARTTLS, like 143), IMAPS (993), POP3 (STLS, 110), POP3S (995).
	IMAPAddr, IMAPSAddr, POP3Addr, POP3SAddr string
	// DNS is the fake DNS server yubin resolves through (MX, A, TXT records for relay tests),
	// unless the test configured its own servers.
	DNS *fakedns.Server
}

// Config returns a configuration for tests: loopback, a port chosen by the kernel, a data
// directory that the test removes.
func Config(t testing.TB) config.Config {
	cfg := config.Default()
	cfg.Hostname = "mx.test"
	cfg.DataDir = t.TempDir()
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.Submission.Listen = []string{"127.0.0.1:0"}
	cfg.Submission.ListenTLS = []string{"127.0.0.1:0"}
	cfg.IMAP.Listen = []string{"127.0.0.1:0"}
	cfg.IMAP.ListenTLS = []string{"127.0.0.1:0"}
	cfg.POP3.Listen = []string{"127.0.0.1:0"}
	cfg.POP3.ListenTLS = []string{"127.0.0.1:0"}
	// A Unix socket path must stay under 108 bytes; test temp dirs can be longer.
	sockDir, err := os.MkdirTemp("", "yb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	cfg.Submission.Socket = filepath.Join(sockDir, "submit.sock")
	// Never the machine's resolver: tests stay on loopback. StartConfig points this at a
	// fake DNS server of the test's own.
	cfg.Relay.DNSServers = []string{"127.0.0.1:1"}
	cfg.ShutdownTimeout = config.Duration(5 * time.Second)
	return cfg
}

// Start runs yubin with Config(t) changed by the options, and the domain "example.test"
// with the account "user@example.test" (password "password123").
func Start(t testing.TB, opts ...func(*config.Config)) *Yubin {
	t.Helper()
	cfg := Config(t)
	for _, o := range opts {
		o(&cfg)
	}
	return StartConfig(t, cfg)
}

// StartConfig runs yubin with cfg as given.
func StartConfig(t testing.TB, cfg config.Config) *Yubin {
	t.Helper()
	ctx := context.Background()
	var dnsServer *fakedns.Server
	if len(cfg.Relay.DNSServers) == 1 && cfg.Relay.DNSServers[0] == "127.0.0.1:1" {
		dnsServer = fakedns.Start(t)
		// Domains a test did not set up are unreachable (SERVFAIL): their mail waits in the
		// queue, where tests can see it, instead of bouncing at once.
		dnsServer.SetUnknownServFail(true)
		cfg.Relay.DNSServers = []string{dnsServer.Addr()}
	}
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("YUBIN_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := a.Addrs()
	y := &Yubin{T: t, App: a, Cfg: cfg, Addr: addrs["smtp"][0].String(), DNS: dnsServer}
	if l := addrs["submission"]; len(l) > 0 {
		y.SubmissionAddr = l[0].String()
	}
	for name, dst := range map[string]*string{"submissions": &y.SubmissionsAddr, "imap": &y.IMAPAddr,
		"imaps": &y.IMAPSAddr, "pop3": &y.POP3Addr, "pop3s": &y.POP3SAddr} {
		if l := addrs[name]; len(l) > 0 {
			*dst = l[0].String()
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	y.AddDomain("example.test")
	y.AddAccount("user@example.test", "password123")
	return y
}

// AddDomain adds a hosted domain.
func (y *Yubin) AddDomain(name string) {
	y.T.Helper()
	if err := y.App.Store.AddDomain(context.Background(), name); err != nil {
		y.T.Fatal(err)
	}
}

// AddAccount adds an account; cheap hash parameters keep tests fast.
func (y *Yubin) AddAccount(addr, password string) int64 {
	y.T.Helper()
	h, err := directory.HashPassword(password, directory.HashParams{Memory: 1024, Time: 1, Threads: 1})
	if err != nil {
		y.T.Fatal(err)
	}
	a, err := y.App.Store.AddAccount(context.Background(), addr, h)
	if err != nil {
		y.T.Fatal(err)
	}
	return a.ID
}

// AddAlias adds an alias.
func (y *Yubin) AddAlias(addr string, targets ...string) {
	y.T.Helper()
	if err := y.App.Store.AddAlias(context.Background(), addr, targets); err != nil {
		y.T.Fatal(err)
	}
}

// Messages returns the stored bytes of every message in an account's mailbox, by UID order.
func (y *Yubin) Messages(addr, mailbox string) [][]byte {
	y.T.Helper()
	msgs, err := MailboxContents(y.App, addr, mailbox)
	if err != nil {
		y.T.Fatal(err)
	}
	return msgs
}

// MailboxContents reads every message of a mailbox.
func MailboxContents(a *app.App, addr, mailbox string) ([][]byte, error) {
	ctx := context.Background()
	acct, err := a.Store.GetAccount(ctx, addr)
	if err != nil {
		return nil, err
	}
	list, err := a.Store.ListMessages(ctx, acct.ID, mailbox)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, m := range list {
		f, _, err := a.Store.OpenMessage(ctx, m.MessageID)
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// Body strips the Return-Path and Received headers that yubin prepended, leaving the
// message as the client sent it.
func Body(stored []byte) []byte {
	s := stored
	for _, prefix := range []string{"Return-Path:", "Received:"} {
		if !strings.HasPrefix(string(s), prefix) {
			continue
		}
		// A header field ends at a CRLF not followed by white space.
		// A header that ends the blob (empty content) ends at its last CRLF.
		for i := 0; i+1 < len(s); i++ {
			if s[i] == '\r' && s[i+1] == '\n' && (i+2 == len(s) || s[i+2] != ' ' && s[i+2] != '\t') {
				s = s[i+2:]
				break
			}
		}
	}
	return s
}

// Conn is a raw SMTP client for protocol tests: it sends lines and checks reply codes.
type Conn struct {
	T  testing.TB
	C  net.Conn
	br *bufio.Reader
}

// Dial connects and reads the greeting, which must be 220.
func Dial(t testing.TB, addr string) *Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	return greeted(t, c, err)
}

// greeted wraps a new connection (or fails the test with the dial error) and reads the
// greeting, which must be 220.
func greeted(t testing.TB, c net.Conn, err error) *Conn {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	conn := &Conn{T: t, C: c, br: bufio.NewReader(c)}
	conn.Expect(220)
	return conn
}

// Write sends raw bytes.
func (c *Conn) Write(s string) {
	c.T.Helper()
	c.C.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.C, s); err != nil {
		c.T.Fatalf("write: %v", err)
	}
}

// Read reads one reply.
func (c *Conn) Read() (*smtp.Reply, error) {
	c.C.SetReadDeadline(time.Now().Add(10 * time.Second))
	return smtp.ReadReply(c.br, 100)
}

// Expect reads one reply and fails the test unless its code is code.
func (c *Conn) Expect(code int) *smtp.Reply {
	c.T.Helper()
	r, err := c.Read()
	if err != nil {
		c.T.Fatalf("expected %d, read failed: %v", code, err)
	}
	if r.Code != code {
		c.T.Fatalf("expected %d, got %s", code, r.Error())
	}
	return r
}

// Cmd sends a command line and expects a reply code; it returns the reply.
func (c *Conn) Cmd(line string, code int) *smtp.Reply {
	c.T.Helper()
	c.Write(line + "\r\n")
	return c.Expect(code)
}

// CmdEnh sends a command and expects a reply code and enhanced status code.
func (c *Conn) CmdEnh(line string, code int, enh string) *smtp.Reply {
	c.T.Helper()
	r := c.Cmd(line, code)
	if r.Enhanced != enh {
		c.T.Fatalf("%q: expected %d %s, got %s", line, code, enh, r.Error())
	}
	return r
}

// ExpectClosed checks that the server closed the connection.
func (c *Conn) ExpectClosed() {
	c.T.Helper()
	c.C.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 1)
	if n, err := c.br.Read(b); err == nil {
		c.T.Fatalf("connection still open, read %q", b[:n])
	}
}

// StartTLS upgrades the connection (after EHLO).
func (c *Conn) StartTLS() {
	c.T.Helper()
	c.Cmd("STARTTLS", 220)
	tc := tls.Client(c.C, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.test"})
	if err := tc.Handshake(); err != nil {
		c.T.Fatalf("TLS handshake: %v", err)
	}
	c.C = tc
	c.br = bufio.NewReader(tc)
}

// Send runs one whole transaction with DATA and returns the final reply.
func (c *Conn) Send(from string, to []string, data string) *smtp.Reply {
	c.T.Helper()
	c.Cmd(fmt.Sprintf("MAIL FROM:<%s>", from), 250)
	for _, r := range to {
		c.Cmd(fmt.Sprintf("RCPT TO:<%s>", r), 250)
	}
	c.Cmd("DATA", 354)
	c.Write(data)
	r, err := c.Read()
	if err != nil {
		c.T.Fatalf("after data: %v", err)
	}
	return r
}

// NeedTool returns the path of an external program a test drives (see tool.Need).
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	return tool.Need(t, name)
}

// DialTLS connects with implicit TLS (like port 465) and reads the greeting.
func DialTLS(t testing.TB, addr string) *Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.test"})
	return greeted(t, c, err)
}

// SetAppPassword adds an app password to an account (cheap hash parameters).
func (y *Yubin) SetAppPassword(addr, name, password string) {
	y.T.Helper()
	h, err := directory.HashPassword(password, directory.HashParams{Memory: 1024, Time: 1, Threads: 1})
	if err != nil {
		y.T.Fatal(err)
	}
	if err := y.App.Store.AddAppPassword(context.Background(), addr, name, h); err != nil {
		y.T.Fatal(err)
	}
}

// Wrap makes a Conn of an established connection (the caller reads the greeting).
func Wrap(t testing.TB, c net.Conn) *Conn {
	t.Cleanup(func() { c.Close() })
	return &Conn{T: t, C: c, br: bufio.NewReader(c)}
}

// AddDKIMKeys gives domain an Ed25519 key (selector "ed1") and an RSA key ("rsa1"), as
// "yubin dkim keygen" would, and returns their DNS records by name.
func (y *Yubin) AddDKIMKeys(domain string) map[string]string {
	y.T.Helper()
	records := map[string]string{}
	for sel, algo := range map[string]string{"ed1": "ed25519", "rsa1": "rsa"} {
		k, err := intake.GenerateDKIMKey(domain, sel, algo)
		if err != nil {
			y.T.Fatal(err)
		}
		if err := y.App.Store.AddDKIMKey(context.Background(), k); err != nil {
			y.T.Fatal(err)
		}
		name, value, err := intake.DKIMRecord(k)
		if err != nil {
			y.T.Fatal(err)
		}
		records[name] = value
	}
	return records
}
