package smtpserver_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"yubin/internal/config"
	"yubin/internal/testenv"
)

func TestMessageSize(t *testing.T) {
	t.Parallel()
	small := func(cfg *config.Config) { cfg.SMTP.MaxMessageSize = 2048 }

	t.Run("EHLO advertises the limit", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t, small)
		c := testenv.Dial(t, y.Addr)
		r := c.CmdEnh("EHLO client.test", 250, "")
		if !strings.Contains(strings.Join(r.Lines, "\n"), "\nSIZE 2048\n") {
			t.Errorf("EHLO does not say SIZE 2048: %q", r.Lines)
		}
	})

	t.Run("declared SIZE", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t, small)
		c := session(t, y)
		// RFC 1870 6: refused at MAIL when the declared size is over the limit.
		c.CmdEnh("MAIL FROM:<"+from+"> SIZE=2049", 552, "5.3.4")
		c.CmdEnh("MAIL FROM:<"+from+"> SIZE=99999999999999999999", 501, "5.5.4")
		c.CmdEnh("MAIL FROM:<"+from+"> SIZE=2048", 250, "2.1.0")
	})

	big := "Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n", 50)
	okMsg := "Subject: small\r\n\r\nbody\r\n"

	t.Run("DATA over the limit, then a small one", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t, small)
		c := transaction(t, y)
		c.Cmd("DATA", 354)
		// Past the limit the server reads on to the terminator and answers then.
		c.Write(wire(big))
		expect(t, c, 552, "5.3.4")
		expectEmpty(t, y, rcpt)
		id := deliver(t, c, from, []string{rcpt}, okMsg)
		_, rec := traceOf(t, onlyMessage(t, y, rcpt), okMsg)
		if !strings.Contains(rec, id) {
			t.Errorf("stored message is not %s", id)
		}
	})

	t.Run("exactly the limit", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t, small)
		c := session(t, y)
		content := "Subject: full\r\n\r\n" + strings.Repeat("x", 2048-len("Subject: full\r\n\r\n")-2) + "\r\n"
		deliver(t, c, from, []string{rcpt}, content)
		traceOf(t, onlyMessage(t, y, rcpt), content)
	})

	t.Run("BDAT over the limit, then a small one", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t, small)
		c := transaction(t, y)
		half := big[:len(big)/2]
		bdat(c, half, false)
		expect(t, c, 250, "2.0.0")
		// The chunk that crosses the limit is refused; chunks already pipelined after it
		// are read and dropped (RFC 3030 3), and LAST ends the transaction.
		bdat(c, big[len(half):], false)
		bdat(c, "more\r\n", true)
		expect(t, c, 552, "5.3.4")
		expect(t, c, 552, "5.3.4")
		expectEmpty(t, y, rcpt)

		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		c.CmdEnh("RCPT TO:<"+rcpt+">", 250, "2.1.5")
		bdat(c, big, true)
		expect(t, c, 552, "5.3.4")
		expectEmpty(t, y, rcpt)

		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		c.CmdEnh("RCPT TO:<"+rcpt+">", 250, "2.1.5")
		bdat(c, okMsg, true)
		queuedID(t, expect(t, c, 250, "2.0.0"))
		traceOf(t, onlyMessage(t, y, rcpt), okMsg)
	})

	t.Run("100000-octet line", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := session(t, y)
		// README: text lines longer than RFC 5321's 1000 octets are accepted as they are.
		line := strings.Repeat("0123456789", 10000)
		content := "Subject: long line\r\n\r\n" + line + "\r\n." + line + "\r\n"
		deliver(t, c, from, []string{rcpt}, content)
		traceOf(t, onlyMessage(t, y, rcpt), content)
	})
}

func TestCommandLimits(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)

	for _, tc := range []struct {
		name, line string
	}{
		{"600 octets", "NOOP " + strings.Repeat("x", 595)},
		{"600-octet MAIL", "MAIL FROM:<" + strings.Repeat("a", 570) + "@example.org>"},
		{"beyond the AUTH limit", "NOOP " + strings.Repeat("x", 20000)},
		{"NUL byte", "NOOP a\x00b"},
		{"control character", "NO\x01OP"},
		{"invalid UTF-8", "MAIL FROM:<caf\xe9@example.org> SMTPUTF8"},
		{"empty line", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := session(t, y)
			c.CmdEnh(tc.line, 500, "5.5.2")
			// The session survives, in step with the client, with no transaction open.
			c.CmdEnh("NOOP", 250, "2.0.0")
			c.CmdEnh("RCPT TO:<"+rcpt+">", 503, "5.5.1")
		})
	}
	t.Run("512 octets is fine", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		// RFC 5321 4.5.3.1.4: 512 octets including CRLF.
		c.CmdEnh("NOOP "+strings.Repeat("x", 505), 250, "2.0.0")
		c.CmdEnh("NOOP "+strings.Repeat("x", 506), 500, "5.5.2")
	})
}

func TestTooManyErrors(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t, func(cfg *config.Config) { cfg.SMTP.MaxErrors = 3 })
	c := session(t, y)
	c.CmdEnh("FOO", 500, "5.5.1")
	// A refused recipient counts too: that is how address harvesting looks.
	c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
	c.CmdEnh("RCPT TO:<nobody@example.test>", 550, "5.1.1")
	c.CmdEnh("BAR", 500, "5.5.1")
	expect(t, c, 421, "4.7.0")
	c.ExpectClosed()
}

func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	for name, limit := range map[string]func(*config.Config){
		"per IP": func(cfg *config.Config) { cfg.SMTP.MaxConnectionsPerIP = 2 },
		"total":  func(cfg *config.Config) { cfg.SMTP.MaxConnections = 2 },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			y := testenv.Start(t, limit)
			first := testenv.Dial(t, y.Addr)
			testenv.Dial(t, y.Addr)
			r := dialRaw(t, y.Addr)
			r.expect(421, "4.7.0")
			r.expectClosed()
			// A slot frees up when a session ends.
			first.CmdEnh("QUIT", 221, "2.0.0")
			first.ExpectClosed()
			redial(t, y.Addr)
		})
	}
}

// redial connects until the greeting is 220: the server frees a slot just after it closed
// the connection, so the first attempts may still be refused.
func redial(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := dialRaw(t, addr)
		rep, err := readReply(r)
		if err == nil && rep.Code == 220 {
			return
		}
		if err == nil && (rep.Code != 421 || rep.Enhanced != "4.7.0") {
			t.Fatalf("unexpected greeting %s", rep.Error())
		}
		r.c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("no free slot after a session ended: %v %v", rep, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTimeouts(t *testing.T) {
	t.Parallel()
	short := func(cfg *config.Config) {
		cfg.SMTP.CommandTimeout = config.Duration(time.Second)
		cfg.SMTP.DataTimeout = config.Duration(time.Second)
	}

	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t, short)
		c := session(t, y)
		expect(t, c, 421, "4.4.2")
		c.ExpectClosed()
	})

	t.Run("inside DATA", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t, short)
		c := transaction(t, y)
		c.Cmd("DATA", 354)
		c.Write("Subject: stalled\r\n\r\npart")
		expect(t, c, 421, "4.4.2")
		c.ExpectClosed()
		expectEmpty(t, y, rcpt)
	})

	t.Run("inside BDAT", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t, short)
		c := transaction(t, y)
		c.Write(fmt.Sprintf("BDAT %d LAST\r\nSubject: stalled\r\n", 100))
		expect(t, c, 421, "4.4.2")
		c.ExpectClosed()
		expectEmpty(t, y, rcpt)
	})
}
