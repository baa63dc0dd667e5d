package interop

// Mail clients submitting on the two submission listeners: msmtp, swaks and Python's smtplib
// over STARTTLS (like 587) and implicit TLS (like 465) with AUTH, read back from the
// recipient's mailbox; and the TLS rules those listeners keep (TLS 1.2 or newer, RFC 8996;
// no STARTTLS command injection, CVE-2011-0411; no session tickets, golang/go#70232).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/mail"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"yubin/internal/smtp"
	"yubin/internal/testenv"
	"yubin/internal/tlsutil"
)

// The account testenv.Start creates.
const (
	subUser = "user@example.test"
	subPass = "password123"
)

// clientMessage is a message as a mail client writes it, from the account to itself, with
// CRLF line endings. withIDs adds the Message-ID and Date headers that some clients leave to
// the submission server (RFC 6409 8).
func clientMessage(subject string, withIDs bool, body ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\n", subUser, subUser, subject)
	if withIDs {
		fmt.Fprintf(&b, "Message-ID: <%s@client.test>\r\nDate: Mon, 02 Jan 2006 15:04:05 +0000\r\n", strings.ReplaceAll(subject, " ", "."))
	}
	b.WriteString("\r\n")
	for _, l := range body {
		b.WriteString(l + "\r\n")
	}
	return b.Bytes()
}

var addedMessageID = regexp.MustCompile(`^<[A-Za-z0-9._-]+@mx\.test>$`)

// checkSubmitted compares a stored message with what the client submitted. The body must be
// the client's byte for byte. The header section must be the client's followed by exactly
// what yubin adds on submission (RFC 6409 8): a Message-ID and a Date when the client left
// them out, nothing when it gave them. The Received header says ESMTPSA (RFC 3848: TLS and
// AUTH) and, by default, carries no client IP (privacy of submitters).
func checkSubmitted(t *testing.T, stored, sent []byte) {
	t.Helper()
	sentHead, sentBody, ok := bytes.Cut(sent, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("test message has no header section: %q", sent)
	}
	got := testenv.Body(stored)
	gotHead, gotBody, ok := bytes.Cut(got, []byte("\r\n\r\n"))
	if !ok {
		t.Errorf("stored message has no empty line after the header:\n%q", got)
		return
	}
	if !bytes.Equal(gotBody, sentBody) {
		t.Errorf("stored body differs from what was sent (%d vs %d bytes):\n got %q\nwant %q", len(gotBody), len(sentBody), gotBody[:min(len(gotBody), 300)], sentBody[:min(len(sentBody), 300)])
	}
	if !bytes.HasPrefix(gotHead, sentHead) {
		t.Errorf("the client's header section was not kept as sent:\n got %q\nwant prefix %q", gotHead, sentHead)
		return
	}
	added := map[string]string{}
	if rest := string(gotHead[len(sentHead):]); rest != "" {
		if !strings.HasPrefix(rest, "\r\n") {
			t.Errorf("stored header section changes the client's last field: %q", rest)
			return
		}
		for _, l := range strings.Split(rest[2:], "\r\n") {
			name, value, _ := strings.Cut(l, ": ")
			added[name] = value
		}
	}
	hdr := func(name string) bool {
		return bytes.HasPrefix(sentHead, []byte(name+":")) || bytes.Contains(sentHead, []byte("\r\n"+name+":"))
	}
	if hdr("Message-ID") {
		if v, ok := added["Message-ID"]; ok {
			t.Errorf("Message-ID %s added although the client gave one", v)
		}
	} else if v := added["Message-ID"]; !addedMessageID.MatchString(v) {
		t.Errorf("no Message-ID <id@mx.test> added to a message without one: added fields %q", added)
	}
	if hdr("Date") {
		if v, ok := added["Date"]; ok {
			t.Errorf("Date %s added although the client gave one", v)
		}
	} else if d, err := mail.ParseDate(added["Date"]); err != nil {
		t.Errorf("no valid Date added to a message without one (%v): added fields %q", err, added)
	} else if time.Since(d).Abs() > 5*time.Minute {
		t.Errorf("added Date %s is not now", added["Date"])
	}
	delete(added, "Message-ID")
	delete(added, "Date")
	if len(added) > 0 {
		t.Errorf("unexpected header fields added: %q", added)
	}
	received := stored[:len(stored)-len(got)]
	if !bytes.Contains(received, []byte(" with ESMTPSA")) {
		t.Errorf("Received header does not say ESMTPSA: %q", received)
	}
	if bytes.Contains(received, []byte("127.0.0.1")) {
		t.Errorf("Received header names the submitter's IP: %q", received)
	}
}

// checkInbox checks that the account's INBOX holds exactly the submitted messages, in order.
func checkInbox(t *testing.T, y *testenv.Yubin, sent ...[]byte) {
	t.Helper()
	got := y.Messages(subUser, "INBOX")
	if len(got) != len(sent) {
		t.Fatalf("INBOX has %d messages, want %d", len(got), len(sent))
	}
	for i := range sent {
		checkSubmitted(t, got[i], sent[i])
	}
}

func TestMsmtpSubmission(t *testing.T) {
	t.Parallel()
	msmtp := testenv.NeedTool(t, "msmtp")
	y := testenv.Start(t)
	send := func(addr string, starttls bool, data []byte) {
		t.Helper()
		host, port, _ := net.SplitHostPort(addr)
		onOff := map[bool]string{true: "on", false: "off"}
		// The header options off: msmtp must send the message as written, so that what
		// the test reads back shows what yubin added.
		rc := fmt.Sprintf(`defaults
timeout 30

account default
host %s
port %s
from %s
tls on
tls_starttls %s
tls_certcheck off
auth on
user %s
password %s
set_from_header off
set_date_header off
set_msgid_header off
`, host, port, subUser, onOff[starttls], subUser, subPass)
		cmd := exec.Command(msmtp, "-C", writeFile(t, "msmtprc", []byte(rc)), "-a", "default", subUser)
		cmd.Stdin = bytes.NewReader(data)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("msmtp (tls_starttls %s) to %s: %v\n%s", onOff[starttls], addr, err, out)
		}
	}
	m1 := clientMessage("msmtp starttls", false, dotBody...)
	m2 := clientMessage("msmtp implicit tls", true, dotBody...)
	m3 := clientMessage("msmtp implicit tls no ids", false, "one line")
	send(y.SubmissionAddr, true, m1)
	send(y.SubmissionsAddr, false, m2)
	send(y.SubmissionsAddr, false, m3)
	checkInbox(t, y, m1, m2, m3)
}

func TestSwaksSubmission(t *testing.T) {
	t.Parallel()
	swaks := testenv.NeedTool(t, "swaks")
	y := testenv.Start(t)
	swaksRun := func(addr string, data []byte, extra ...string) (string, error) {
		args := append([]string{"--server", addr, "--from", subUser, "--helo", "client.test",
			"--data", "@" + writeFile(t, "msg.eml", data), "--timeout", "60"}, extra...)
		out, err := exec.Command(swaks, args...).CombinedOutput()
		return string(out), err
	}
	auth := func(mech, password string) []string {
		return []string{"--auth", mech, "--auth-user", subUser, "--auth-password", password}
	}
	// send submits a message that must be accepted; swaks marks replies read inside TLS "<~".
	send := func(addr string, data []byte, extra ...string) string {
		t.Helper()
		out, err := swaksRun(addr, data, extra...)
		if err != nil {
			t.Fatalf("swaks %v: %v\n%s", extra, err, lastLines([]byte(out), 20))
		}
		for _, want := range []string{"<~  235 2.7.0", "<~  250 2.0.0 OK queued as "} {
			if !strings.Contains(out, want) {
				t.Fatalf("swaks %v: no %q:\n%s", extra, want, lastLines([]byte(out), 20))
			}
		}
		return out
	}
	m1 := clientMessage("swaks starttls plain", false, dotBody...)
	m2 := clientMessage("swaks implicit tls plain", true, eightBitBody...)
	m3 := clientMessage("swaks starttls login", false, "login")
	m4 := clientMessage("swaks local and remote", true, "to two")

	send(y.SubmissionAddr, m1, append([]string{"--to", subUser, "--tls"}, auth("PLAIN", subPass)...)...)
	send(y.SubmissionsAddr, m2, append([]string{"--to", subUser, "--tlsc"}, auth("PLAIN", subPass)...)...)
	out := send(y.SubmissionAddr, m3, append([]string{"--to", subUser, "--tls"}, auth("LOGIN", subPass)...)...)
	if !strings.Contains(out, "~> AUTH LOGIN") {
		t.Errorf("swaks --auth LOGIN did not use LOGIN:\n%s", lastLines([]byte(out), 20))
	}

	// A wrong password: 535 5.7.8 (RFC 4954 6), and swaks fails.
	out, err := swaksRun(y.SubmissionAddr, m1, append([]string{"--to", subUser, "--tls"}, auth("PLAIN", "wrong-password")...)...)
	if err == nil {
		t.Errorf("swaks with a wrong password succeeded:\n%s", lastLines([]byte(out), 20))
	}
	if !strings.Contains(out, "535 5.7.8") {
		t.Errorf("wrong password not answered 535 5.7.8:\n%s", lastLines([]byte(out), 20))
	}

	// One transaction to a local and a remote recipient: the local copy is in the INBOX at
	// once, the remote one waits in the queue for relay.
	send(y.SubmissionAddr, m4, append([]string{"--to", subUser + ",someone@remote.test", "--tls"}, auth("PLAIN", subPass)...)...)
	if n, err := y.App.Store.QueueLen(context.Background()); err != nil || n != 1 {
		t.Errorf("queue length %d (%v), want 1 for someone@remote.test", n, err)
	}

	// swaks always sends a line ending of its own before the final ".".
	sent := func(m []byte) []byte { return append(bytes.Clone(m), "\r\n"...) }
	checkInbox(t, y, sent(m1), sent(m2), sent(m3), sent(m4))
}

func TestPythonSubmission(t *testing.T) {
	t.Parallel()
	py := testenv.NeedTool(t, "python3")
	y := testenv.Start(t)
	run := func(mode, addr string, data []byte) (string, error) {
		host, port, _ := net.SplitHostPort(addr)
		out, err := exec.Command(py, "testdata/submit.py", mode, host, port, subUser, subPass, subUser, subUser, writeFile(t, "msg.eml", data)).CombinedOutput()
		return string(out), err
	}
	send := func(mode, addr string, data []byte) string {
		t.Helper()
		out, err := run(mode, addr, data)
		if err != nil || !strings.Contains(out, "sent") {
			t.Fatalf("submit.py %s: %v\n%s", mode, err, out)
		}
		return out
	}
	m1 := clientMessage("smtplib starttls", false, dotBody...)
	m2 := clientMessage("smtplib smtp_ssl", true, dotBody...)
	m3 := clientMessage("smtplib starttls login", false, "login with an initial response")
	send("starttls", y.SubmissionAddr, m1)
	send("ssl", y.SubmissionsAddr, m2)
	if out := send("starttls-login", y.SubmissionAddr, m3); !strings.Contains(out, "auth: 235 2.7.0") {
		t.Errorf("AUTH LOGIN not answered 235 2.7.0:\n%s", out)
	}

	// Before STARTTLS no AUTH is offered (RFC 4954 4), so login() cannot even try, and an
	// unauthenticated MAIL is refused (RFC 6409 4.3).
	out, err := run("cleartext", y.SubmissionAddr, m1)
	if err != nil {
		t.Errorf("submit.py cleartext: %v\n%s", err, out)
	}
	for _, want := range []string{"auth offered: False", "starttls offered: True", "login refused:", "mail refused: 530 5.7.0"} {
		if !strings.Contains(out, want) {
			t.Errorf("submit.py cleartext: no %q in:\n%s", want, out)
		}
	}
	checkInbox(t, y, m1, m2, m3)
}

// dialSTARTTLS connects to addr, says EHLO and runs STARTTLS with cfg; it returns the TLS
// connection and the handshake's error.
func dialSTARTTLS(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	c := testenv.Dial(t, addr)
	c.Cmd("EHLO client.test", 250)
	c.Cmd("STARTTLS", 220)
	tc := tls.Client(c.C, cfg)
	tc.SetDeadline(time.Now().Add(20 * time.Second))
	return tc, tc.Handshake()
}

// dialImplicitTLS connects to an implicit-TLS listener with cfg.
func dialImplicitTLS(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if tc != nil {
		t.Cleanup(func() { tc.Close() })
	}
	return tc, err
}

// TestSubmissionRefusesTLS11: RFC 8996 deprecates TLS 1.0 and 1.1, so both submission
// listeners refuse a client that offers nothing newer. The MX listener allows TLS 1.0+
// (opportunistic TLS, RFC 7435); the same client succeeding there is the control showing
// that it really offered TLS 1.1 and that the refusal is about the version.
func TestSubmissionRefusesTLS11(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)

	t.Run("openssl", func(t *testing.T) {
		openssl := testenv.NeedTool(t, "openssl")
		sClient := func(addr string, starttls bool) (string, error) {
			// OpenSSL 3 allows TLS 1.1 only at security level 0.
			args := []string{"s_client", "-connect", addr, "-servername", "mx.test", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"}
			if starttls {
				args = append(args, "-starttls", "smtp")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, openssl, args...)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		out, err := sClient(y.Addr, true)
		if err != nil || !strings.Contains(out, "Protocol  : TLSv1.1") || strings.Contains(out, "Cipher is (NONE)") {
			t.Fatalf("control failed: openssl s_client -tls1_1 could not use TLS 1.1 with the MX listener (%v):\n%s", err, lastLines([]byte(out), 30))
		}
		for _, l := range []struct {
			name, addr string
			starttls   bool
		}{{"submission", y.SubmissionAddr, true}, {"submissions", y.SubmissionsAddr, false}} {
			out, err := sClient(l.addr, l.starttls)
			if err == nil || !strings.Contains(out, "Cipher is (NONE)") {
				t.Errorf("%s: openssl s_client -tls1_1 was not refused (%v):\n%s", l.name, err, lastLines([]byte(out), 30))
			} else if !strings.Contains(out, "protocol version") {
				t.Errorf("%s: refused, but not with a protocol_version alert:\n%s", l.name, lastLines([]byte(out), 30))
			}
		}
	})

	t.Run("go", func(t *testing.T) {
		cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "mx.test", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
		tc, err := dialSTARTTLS(t, y.Addr, cfg)
		if err != nil {
			t.Fatalf("control failed: a TLS 1.1 client cannot STARTTLS with the MX listener: %v", err)
		}
		if v := tc.ConnectionState().Version; v != tls.VersionTLS11 {
			t.Fatalf("control: MX listener negotiated %s, want TLS 1.1", tls.VersionName(v))
		}
		if _, err := dialSTARTTLS(t, y.SubmissionAddr, cfg); err == nil {
			t.Error("submission listener completed a TLS 1.1 handshake")
		}
		if _, err := dialImplicitTLS(t, y.SubmissionsAddr, cfg); err == nil {
			t.Error("submissions listener completed a TLS 1.1 handshake")
		}
		// And TLS 1.2 is enough (RFC 8996 asks for 1.2 or newer, not 1.3 only).
		cfg12 := &tls.Config{InsecureSkipVerify: true, ServerName: "mx.test", MaxVersion: tls.VersionTLS12}
		if _, err := dialSTARTTLS(t, y.SubmissionAddr, cfg12); err != nil {
			t.Errorf("submission listener refused TLS 1.2: %v", err)
		}
		if _, err := dialImplicitTLS(t, y.SubmissionsAddr, cfg12); err != nil {
			t.Errorf("submissions listener refused TLS 1.2: %v", err)
		}
	})
}

// TestSubmissionSTARTTLSInjection (CVE-2011-0411): a command pipelined after STARTTLS was
// sent in clear text, so the server must answer it neither in clear text nor inside TLS.
func TestSubmissionSTARTTLSInjection(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)
	c, err := net.DialTimeout("tcp", y.SubmissionAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	expect := func(br *bufio.Reader, code int) *smtp.Reply {
		t.Helper()
		r, err := smtp.ReadReply(br, 100)
		if err != nil {
			t.Fatalf("expected %d: %v", code, err)
		}
		if r.Code != code {
			t.Fatalf("expected %d, got %s", code, r.Error())
		}
		return r
	}
	write := func(w io.Writer, s string) {
		t.Helper()
		if _, err := io.WriteString(w, s); err != nil {
			t.Fatal(err)
		}
	}
	expect(br, 220)
	write(c, "EHLO client.test\r\n")
	expect(br, 250)
	write(c, "STARTTLS\r\nEHLO injected.test\r\n") // one write, one segment
	expect(br, 220)
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		t.Fatalf("the server answered the pipelined command in clear text: %q", b)
	}
	// A clear-text answer arriving later would be read as a TLS record and break the handshake.
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.test"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake after STARTTLS: %v", err)
	}
	tbr := bufio.NewReader(tc)
	write(tc, "EHLO after.test\r\n")
	r := expect(tbr, 250)
	if !strings.Contains(r.Lines[0], "after.test") {
		t.Fatalf("the first reply inside TLS is not for the EHLO sent inside TLS (the injected EHLO was run): %q", r.Lines)
	}
	if !strings.Contains(strings.Join(r.Lines, "\n"), "AUTH PLAIN") {
		t.Errorf("no AUTH offered inside TLS: %q", r.Lines)
	}
	write(tc, "QUIT\r\n")
	expect(tbr, 221)
}

// ticketRecorder is a client session cache that counts the session tickets it is given.
type ticketRecorder struct {
	tls.ClientSessionCache
	mu   sync.Mutex
	puts int
}

func (r *ticketRecorder) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		r.mu.Lock()
		r.puts++
		r.mu.Unlock()
	}
	r.ClientSessionCache.Put(key, cs)
}

func (r *ticketRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.puts
}

// TestNoSessionTickets: Microsoft's SMTP clients fail STARTTLS when a Go TLS 1.3 server sends
// session tickets (golang/go#70232; mox#237, maddy#730, chasquid#64), so yubin never sends
// one. A control against a Go server with tickets on shows that the recorder sees them.
func TestNoSessionTickets(t *testing.T) {
	t.Parallel()
	clientConfig := func(rec *ticketRecorder) *tls.Config {
		return &tls.Config{InsecureSkipVerify: true, ServerName: "mx.test", MinVersion: tls.VersionTLS13, ClientSessionCache: rec}
	}
	// ehloQuit reads the greeting when the session began inside TLS, then runs EHLO and QUIT:
	// reading the replies makes the client process any NewSessionTicket message the server
	// sent after the handshake.
	ehloQuit := func(t *testing.T, tc *tls.Conn, greeting bool) {
		t.Helper()
		br := bufio.NewReader(tc)
		expect := func(what string, code int) {
			t.Helper()
			r, err := smtp.ReadReply(br, 100)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if r.Code != code {
				t.Fatalf("%s: got %s, want %d", what, r.Error(), code)
			}
		}
		if greeting {
			expect("greeting", 220)
		}
		for _, step := range []struct {
			cmd  string
			code int
		}{{"EHLO client.test", 250}, {"QUIT", 221}} {
			if _, err := io.WriteString(tc, step.cmd+"\r\n"); err != nil {
				t.Fatal(err)
			}
			expect(step.cmd, step.code)
		}
	}

	t.Run("control", func(t *testing.T) {
		certPEM, keyPEM, err := tlsutil.SelfSigned("mx.test", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			for _, reply := range []string{"250 ok\r\n", "221 bye\r\n"} { // EHLO, QUIT
				if _, err := br.ReadString('\n'); err != nil {
					return
				}
				io.WriteString(c, reply)
			}
		}()
		rec := &ticketRecorder{ClientSessionCache: tls.NewLRUClientSessionCache(4)}
		tc, err := dialImplicitTLS(t, l.Addr().String(), clientConfig(rec))
		if err != nil {
			t.Fatal(err)
		}
		ehloQuit(t, tc, false)
		if rec.count() == 0 {
			t.Fatal("the recorder saw no ticket from a Go server with tickets on: the test cannot see tickets")
		}
	})

	y := testenv.Start(t)
	for _, l := range []struct {
		name, addr string
		starttls   bool
	}{{"submission", y.SubmissionAddr, true}, {"submissions", y.SubmissionsAddr, false}, {"mx", y.Addr, true}} {
		t.Run(l.name, func(t *testing.T) {
			rec := &ticketRecorder{ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			dial := dialImplicitTLS
			if l.starttls {
				dial = dialSTARTTLS
			}
			tc, err := dial(t, l.addr, clientConfig(rec))
			if err != nil {
				t.Fatalf("TLS 1.3 handshake: %v", err)
			}
			if v := tc.ConnectionState().Version; v != tls.VersionTLS13 {
				t.Fatalf("negotiated %s, want TLS 1.3", tls.VersionName(v))
			}
			ehloQuit(t, tc, !l.starttls)
			if n := rec.count(); n != 0 {
				t.Errorf("the server sent %d session ticket(s)", n)
			}
		})
	}
}
