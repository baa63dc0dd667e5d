package smtpserver_test

import (
	"fmt"
	"strings"
	"testing"

	"yubin/internal/testenv"
)

// bdat sends one chunk: the command and its bytes in one write, as a pipelining client does.
func bdat(c *testenv.Conn, chunk string, last bool) {
	cmd := fmt.Sprintf("BDAT %d", len(chunk))
	if last {
		cmd += " LAST"
	}
	c.Write(cmd + "\r\n" + chunk)
}

func TestBDAT(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)

	t.Run("three chunks", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := session(t, y)
		c.CmdEnh("MAIL FROM:<"+from+"> BODY=8BITMIME", 250, "2.1.0")
		c.CmdEnh("RCPT TO:<"+rcpt+">", 250, "2.1.5")
		// Chunk borders fall inside a CRLF and right before a dot line; BDAT content is
		// not dot-stuffed, so ".\r\n" and ".." are content.
		chunks := []string{"Subject: chunked\r\n\r\nfirst\r", "\n.\r\n..not stuffed\r\ncafé ", "\xe9\r\nend\r\n"}
		bdat(c, chunks[0], false)
		if r := expect(t, c, 250, "2.0.0"); !strings.Contains(r.Lines[0], fmt.Sprint(len(chunks[0]))) {
			t.Errorf("chunk reply %q does not count the octets", r.Lines[0])
		}
		bdat(c, chunks[1], false)
		expect(t, c, 250, "2.0.0")
		bdat(c, chunks[2], true)
		id := queuedID(t, expect(t, c, 250, "2.0.0"))
		_, rec := traceOf(t, onlyMessage(t, y, rcpt), strings.Join(chunks, ""))
		if !strings.Contains(rec, "\tid "+id+"\r\n") {
			t.Errorf("Received header lacks id %s:\n%s", id, rec)
		}
		// The transaction is over: a new one can start.
		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
	})

	t.Run("BDAT 0 LAST", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := transaction(t, y)
		bdat(c, "Subject: zero\r\n\r\nbody\r\n", false)
		expect(t, c, 250, "2.0.0")
		c.Write("BDAT 0 LAST\r\n")
		queuedID(t, expect(t, c, 250, "2.0.0"))
		traceOf(t, onlyMessage(t, y, rcpt), "Subject: zero\r\n\r\nbody\r\n")

		// An empty message in one empty chunk.
		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		c.CmdEnh("RCPT TO:<"+rcpt+">", 250, "2.1.5")
		c.Write("BDAT 0 LAST\r\n")
		queuedID(t, expect(t, c, 250, "2.0.0"))
		if msgs := inbox(t, y, rcpt); len(msgs) != 2 || len(testenv.Body(msgs[1])) != 0 {
			t.Fatalf("want a second, empty message; have %d", len(msgs))
		}
	})

	t.Run("without MAIL", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		// The chunk looks like commands: it must be consumed, not executed.
		bdat(c, "QUIT\r\nQUIT\r\n", false)
		expect(t, c, 503, "5.5.1")
		c.CmdEnh("NOOP", 250, "2.0.0")
		bdat(c, "RSET\r\n", true)
		expect(t, c, 503, "5.5.1")
		c.CmdEnh("NOOP", 250, "2.0.0")
	})

	t.Run("without accepted RCPT", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		bdat(c, "QUIT\r\n", true)
		expect(t, c, 554, "5.5.1")
		c.CmdEnh("NOOP", 250, "2.0.0")
	})

	t.Run("DATA after BDAT", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := transaction(t, y)
		bdat(c, "Subject: mixed\r\n\r\n", false)
		expect(t, c, 250, "2.0.0")
		c.CmdEnh("DATA", 503, "5.5.1")
		c.CmdEnh("RCPT TO:<"+rcpt+">", 503, "5.5.1")
		// The transfer goes on after the refused commands.
		bdat(c, "body\r\n", true)
		queuedID(t, expect(t, c, 250, "2.0.0"))
		traceOf(t, onlyMessage(t, y, rcpt), "Subject: mixed\r\n\r\nbody\r\n")
	})

	t.Run("RSET aborts a transfer", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := transaction(t, y)
		bdat(c, "Subject: dropped\r\n\r\n", false)
		expect(t, c, 250, "2.0.0")
		c.CmdEnh("RSET", 250, "2.0.0")
		bdat(c, "body\r\n", true)
		expect(t, c, 503, "5.5.1")
		expectEmpty(t, y, rcpt)
	})

	for _, arg := range []string{"x", "", "-1", "10 FIRST", "10 LAST x", "99999999999999999999"} {
		t.Run("malformed BDAT "+arg, func(t *testing.T) {
			t.Parallel()
			c := session(t, y)
			c.Write("BDAT " + arg + "\r\n")
			expect(t, c, 501, "5.5.4")
			// Without a size the client's bytes cannot be told from commands.
			expect(t, c, 421, "4.5.0")
			c.ExpectClosed()
		})
	}
}
