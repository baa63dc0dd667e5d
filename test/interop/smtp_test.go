package interop

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"yubin/internal/testenv"
)

// message builds a test message with CRLF line endings.
func message(subject string, body ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: sender@example.org\r\nTo: user@example.test\r\nSubject: %s\r\nMessage-ID: <%s@client.test>\r\n\r\n", subject, strings.ReplaceAll(subject, " ", "."))
	for _, l := range body {
		b.WriteString(l + "\r\n")
	}
	return b.Bytes()
}

// bigMessage is about n bytes of lines of printable text, some starting with a dot.
func bigMessage(subject string, n int) []byte {
	var lines []string
	for i := 0; len(lines)*80 < n; i++ {
		l := fmt.Sprintf("%06d %s", i, strings.Repeat("abcdefghij", 7))
		if i%10 == 0 {
			l = "." + l
		}
		lines = append(lines, l)
	}
	return message(subject, lines...)
}

var dotBody = []string{"first line", ".a line starting with a dot", "..two dots", ".", "", "last line"}
var eightBitBody = []string{"Grüße aus Köln — 郵便", "naïve café"}

// checkStored fails unless the account's INBOX holds exactly the wanted messages (as the
// client sent them) in order.
func checkStored(t *testing.T, y *testenv.Yubin, want ...[]byte) {
	t.Helper()
	got := y.Messages("user@example.test", "INBOX")
	if len(got) != len(want) {
		t.Fatalf("INBOX has %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if b := testenv.Body(got[i]); !bytes.Equal(b, want[i]) {
			t.Errorf("message %d differs from what was sent (%d vs %d bytes); first 200 stored bytes:\n%q", i+1, len(b), len(want[i]), b[:min(len(b), 200)])
		}
		if !bytes.HasPrefix(got[i], []byte("Return-Path: <")) || !bytes.Contains(got[i], []byte("\r\nReceived: from ")) {
			t.Errorf("message %d lacks Return-Path or Received: %q", i+1, got[i][:min(len(got[i]), 300)])
		}
	}
}

func writeFile(t *testing.T, name string, data []byte) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSwaks(t *testing.T) {
	t.Parallel()
	swaks := testenv.NeedTool(t, "swaks")
	y := testenv.Start(t)
	send := func(data []byte, extra ...string) {
		t.Helper()
		args := append([]string{"--server", y.Addr, "--from", "sender@example.org", "--to", "user@example.test",
			"--helo", "client.test", "--data", "@" + writeFile(t, "msg.eml", data), "--timeout", "60"}, extra...)
		out, err := exec.Command(swaks, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("swaks %v: %v\n%s", extra, err, lastLines(out, 15))
		}
		// swaks marks replies "<-" in clear text and "<~" inside TLS.
		if !bytes.Contains(out, []byte("<-  250 2.0.0 OK queued as ")) && !bytes.Contains(out, []byte("<~  250 2.0.0 OK queued as ")) {
			t.Fatalf("swaks: no 250 for the message:\n%s", lastLines(out, 15))
		}
	}
	m1 := message("swaks dots", dotBody...)
	m2 := message("swaks 8bit", eightBitBody...)
	m3 := message("swaks starttls", dotBody...)
	m4 := bigMessage("swaks 10MB", 10<<20)
	send(m1)
	send(m2)
	send(m3, "--tls")
	send(m4, "--suppress-data") // do not echo 10 MB of data into the output
	// swaks always sends a line ending of its own before the final ".": that CRLF is part of
	// what it transmitted, and yubin stores exactly what was transmitted.
	sent := func(m []byte) []byte { return append(bytes.Clone(m), "\r\n"...) }
	checkStored(t, y, sent(m1), sent(m2), sent(m3), sent(m4))
	if got := y.Messages("user@example.test", "INBOX")[2]; !bytes.Contains(got, []byte("with ESMTPS")) {
		t.Errorf("the STARTTLS message's Received header does not say ESMTPS")
	}
}

func TestPythonSmtplib(t *testing.T) {
	t.Parallel()
	py := testenv.NeedTool(t, "python3")
	y := testenv.Start(t)
	y.AddAlias("δοκιμή@example.test", "user@example.test")
	host, port, _ := strings.Cut(y.Addr, ":")
	send := func(from, to string, data []byte, flags ...string) {
		t.Helper()
		args := append([]string{"testdata/send.py", host, port, from, to, writeFile(t, "msg.eml", data)}, flags...)
		out, err := exec.Command(py, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("send.py %v: %v\n%s", flags, err, out)
		}
	}
	m1 := message("smtplib dots", dotBody...)
	m2 := message("smtplib 8bit starttls", eightBitBody...)
	m3 := message("smtplib utf8", eightBitBody...)
	m4 := bigMessage("smtplib 10MB", 10<<20)
	send("sender@example.org", "user@example.test", m1)
	send("sender@example.org", "user@example.test", m2, "--starttls")
	send("χρήστης@παράδειγμα.δοκιμή", "δοκιμή@example.test", m3, "--smtputf8")
	send("sender@example.org", "user@example.test", m4)
	checkStored(t, y, m1, m2, m3, m4)
	got := y.Messages("user@example.test", "INBOX")[2]
	if !bytes.HasPrefix(got, []byte("Return-Path: <χρήστης@παράδειγμα.δοκιμή>\r\n")) {
		t.Errorf("SMTPUTF8 sender not kept in Return-Path: %q", got[:min(len(got), 120)])
	}
	if !bytes.Contains(got, []byte("with UTF8SMTPS")) && !bytes.Contains(got, []byte("with UTF8SMTP")) {
		t.Errorf("SMTPUTF8 message's Received header does not say UTF8SMTP")
	}
}

// TestBDAT10MB sends a 10 MB message in 1 MB BDAT chunks (no packaged client here speaks
// CHUNKING, so this is a raw client) and compares the stored bytes.
func TestBDAT10MB(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)
	c := testenv.Dial(t, y.Addr)
	c.Cmd("EHLO client.test", 250)
	c.Cmd("MAIL FROM:<sender@example.org> BODY=8BITMIME", 250)
	c.Cmd("RCPT TO:<user@example.test>", 250)
	m := bigMessage("bdat 10MB", 10<<20)
	for off := 0; off < len(m); off += 1 << 20 {
		chunk := m[off:min(off+1<<20, len(m))]
		last := ""
		if off+len(chunk) == len(m) {
			last = " LAST"
		}
		c.Write(fmt.Sprintf("BDAT %d%s\r\n", len(chunk), last))
		c.Write(string(chunk))
		r := c.Expect(250)
		if last != "" && !strings.HasPrefix(r.Lines[0], "OK queued as ") {
			t.Fatalf("BDAT LAST: %s", r.Error())
		}
	}
	checkStored(t, y, m)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
