package smtpserver_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"

	"yubin/internal/testenv"
)

// TestSmuggling sends data with an end-of-data look-alike followed by a second transaction
// (CVE-2023-51764). A server that took the look-alike for the end would answer the message
// and then run the smuggled commands. Only the real "\r\n.\r\n" ends the data; the message
// is refused for its bare line ending and nothing is executed or stored.
func TestSmuggling(t *testing.T) {
	t.Parallel()
	smuggled := "MAIL FROM:<admin@example.test>\r\nRCPT TO:<user@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nforged\r\n"
	for _, tc := range []struct{ name, data string }{
		{`LF.CRLF`, "Subject: a\r\n\r\nbody\n.\r\n" + smuggled + ".\r\n"},
		{`CRLF.LF`, "Subject: a\r\n\r\nbody\r\n.\n" + smuggled + ".\r\n"},
		{`LF.LF`, "Subject: a\r\n\r\nbody\n.\n" + smuggled + ".\r\n"},
		{`CR.CR`, "Subject: a\r\n\r\nbody\r.\r" + smuggled + ".\r\n"},
		{`CR.CRLF`, "Subject: a\r\n\r\nbody\r.\r\n" + smuggled + ".\r\n"},
		{`CRLF.CR`, "Subject: a\r\n\r\nbody\r\n.\r" + smuggled + ".\r\n"},
		{"bare LF", "Subject: a\r\n\r\nline one\nline two\r\n.\r\n"},
		{"bare CR", "Subject: a\r\n\r\nline one\rline two\r\n.\r\n"},
		{"bare LF in the header", "Subject: a\nX-Other: b\r\n\r\nbody\r\n.\r\n"},
		{"LF at the start", "\nSubject: a\r\n\r\nbody\r\n.\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			y := testenv.Start(t)
			c := transaction(t, y)
			c.Cmd("DATA", 354)
			c.Write(tc.data)
			expect(t, c, 550, "5.6.0")
			// One reply only: the next one answers HELP, not a smuggled MAIL or DATA.
			c.CmdEnh("HELP", 214, "2.0.0")
			// And no transaction was left open by the smuggled MAIL.
			c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
			expectEmpty(t, y, rcpt)
		})
	}

	for _, tc := range []struct {
		name   string
		chunks []string
	}{
		{"BDAT bare LF", []string{"Subject: a\r\n\r\nbody\n.\r\n"}},
		{"BDAT bare CR", []string{"Subject: a\r\n\r\nbo\rdy\r\n"}},
		{"BDAT CR at a chunk border", []string{"Subject: a\r\n\r\nbody\r", "x\r\n"}},
		{"BDAT LF at a chunk border", []string{"Subject: a\r\n\r\nbody", "\nx\r\n"}},
		{"BDAT CR at the end", []string{"Subject: a\r\n\r\nbody\r"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			y := testenv.Start(t)
			c := transaction(t, y)
			for i, ch := range tc.chunks {
				last := i == len(tc.chunks)-1
				bdat(c, ch, last)
				if !last {
					expect(t, c, 250, "2.0.0")
				}
			}
			expect(t, c, 550, "5.6.0")
			c.CmdEnh("HELP", 214, "2.0.0")
			c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
			expectEmpty(t, y, rcpt)
		})
	}
}

func TestHopCount(t *testing.T) {
	t.Parallel()
	content := func(n int) string {
		var b strings.Builder
		for i := range n {
			// Folded, as real ones are; a continuation line does not count twice.
			fmt.Fprintf(&b, "Received: from hop%d.example.org\r\n\tby relay.example.org; Mon, 1 Jan 2024 00:00:00 +0000\r\n", i)
		}
		b.WriteString("Subject: loop\r\n\r\nReceived: in the body does not count\r\n")
		return b.String()
	}

	t.Run("101 is a loop", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := session(t, y)
		r := c.Send(from, []string{rcpt}, wire(content(101)))
		if r.Code != 554 || r.Enhanced != "5.4.6" {
			t.Fatalf("got %s, want 554 5.4.6", r.Error())
		}
		expectEmpty(t, y, rcpt)
		c.CmdEnh("NOOP", 250, "2.0.0")
	})

	t.Run("100 pass", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := session(t, y)
		deliver(t, c, from, []string{rcpt}, content(100))
		traceOf(t, onlyMessage(t, y, rcpt), content(100))
	})

	t.Run("lower case, over BDAT", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := transaction(t, y)
		bdat(c, strings.ReplaceAll(content(101), "Received:", "received:"), true)
		expect(t, c, 554, "5.4.6")
		expectEmpty(t, y, rcpt)
	})
}

// TestStartTLSInjection: commands pipelined after STARTTLS in clear text must not run inside
// the TLS session (CVE-2011-0411).
func TestStartTLSInjection(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)
	r := dialRaw(t, y.Addr)
	r.expect(220, "")
	r.write("EHLO client.test\r\n")
	r.expect(250, "")
	r.write("STARTTLS\r\nRSET\r\nMAIL FROM:<" + from + ">\r\n")
	r.expect(220, "2.0.0")
	tc := tls.Client(r.c, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.test"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	r.c, r.br = tc, bufio.NewReader(tc)
	r.write("EHLO client.test\r\n")
	ehlo := r.expect(250, "")
	if !strings.HasPrefix(ehlo.Lines[0], "mx.test greets") {
		t.Fatalf("first reply over TLS is not EHLO's: %q", ehlo.Lines)
	}
	// The injected MAIL did not open a transaction either.
	r.write("RCPT TO:<" + rcpt + ">\r\n")
	r.expect(503, "5.5.1")
}

func TestPipelining(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)
	c := session(t, y)
	content := "Subject: pipelined\r\n\r\nbody\r\n"
	c.Write("MAIL FROM:<" + from + ">\r\nRCPT TO:<" + rcpt + ">\r\nRCPT TO:<nobody@example.test>\r\nDATA\r\n")
	expect(t, c, 250, "2.1.0")
	expect(t, c, 250, "2.1.5")
	expect(t, c, 550, "5.1.1")
	c.Expect(354)
	// The content, the next transaction and QUIT in one more write.
	c.Write(wire(content) + "MAIL FROM:<" + from + ">\r\nRCPT TO:<" + rcpt + ">\r\nDATA\r\n")
	queuedID(t, expect(t, c, 250, "2.0.0"))
	expect(t, c, 250, "2.1.0")
	expect(t, c, 250, "2.1.5")
	c.Expect(354)
	c.Write(wire(content) + "QUIT\r\n")
	queuedID(t, expect(t, c, 250, "2.0.0"))
	expect(t, c, 221, "2.0.0")
	c.ExpectClosed()
	msgs := inbox(t, y, rcpt)
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	for _, m := range msgs {
		traceOf(t, m, content)
	}
}
