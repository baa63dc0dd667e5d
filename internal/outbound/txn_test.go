package outbound

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// readCommands reads n command lines before any reply: it fails unless the
// client pipelined them (a client waiting for a reply would block, and
// the peer's read deadline would end the test).
func readCommands(want ...string) step {
	return func(c *peerConn) error {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		defer c.SetReadDeadline(time.Time{})
		for _, w := range want {
			if err := expect(w)(c); err != nil {
				return fmt.Errorf("pipelined group: %v", err)
			}
		}
		return nil
	}
}

// With PIPELINING, MAIL, the RCPTs and DATA go in one group and the replies
// are matched in order: the refused recipient is never reported accepted.
func TestPipelining(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo("PIPELINING", "8BITMIME"),
		readCommands("MAIL FROM:<a@example.net> BODY=8BITMIME", "RCPT TO:<b@example.test>", "RCPT TO:<c@example.test>",
			"RCPT TO:<d@example.test>", "DATA"),
		say("250 2.1.0 ok", "250 2.1.5 ok", "550 5.1.1 <c@example.test> unknown", "451 4.3.0 later", "354 go"),
		readData(), say("250 2.0.0 queued"), quit()))
	d := delivery("b@example.test", "c@example.test", "d@example.test")
	d.EightBit = true
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), d)
	wantCodes(t, res, "b@example.test=250 2.0.0, c@example.test=550 5.1.1, d@example.test=451 4.3.0")
	if msgs := p.messages(); len(msgs) != 1 || msgs[0] != testContent {
		t.Errorf("received %q", msgs)
	}
}

// Pipelined, MAIL refused: the replies to RCPT and DATA are read (and not
// taken as the recipients' answers) and a 354 gets empty data.
func TestPipeliningMailRefused(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo("PIPELINING"),
		readCommands("MAIL FROM:<a@example.net>", "RCPT TO:<b@example.test>", "DATA"),
		say("550 5.7.1 go away", "503 5.5.1 need MAIL", "354 odd, but go"),
		expect("."), say("554 5.5.1 no valid recipients"), quit()))
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=550 5.7.1")
}

// Pipelined, the connection drops after the RCPT replies and before the
// DATA reply: the accepted recipient is not delivered, the refused one keeps
// its 550.
func TestPipeliningConnectionLost(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo("PIPELINING"),
		readCommands("MAIL FROM:<a@example.net>", "RCPT TO:<b@example.test>", "RCPT TO:<c@example.test>", "DATA"),
		say("250 ok", "250 ok", "550 5.1.1 unknown")))
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), delivery("b@example.test", "c@example.test"))
	wantCodes(t, res, "b@example.test=451 4.4.2, c@example.test=550 5.1.1")
	if got := res.Rcpts[0].Reply.Error(); !strings.Contains(got, "lost during DATA") {
		t.Errorf("reply: %s", got)
	}
}

// More recipients than the pipelining window: replies still match.
func TestPipeliningWindow(t *testing.T) {
	t.Parallel()
	n := window + 30
	var rcpts []string
	steps := []step{greet()}
	steps = append(steps, ehlo("PIPELINING")...)
	steps = append(steps, expect("MAIL FROM:<a@example.net>"))
	for i := range n {
		rcpts = append(rcpts, fmt.Sprintf("r%d@example.test", i))
		steps = append(steps, expect("RCPT TO:<"+rcpts[i]+">"))
		if i == window-2 {
			// The window is full: the client waits for replies now.
			steps = append(steps, say("250 ok"))
			for j := 0; j <= i; j++ {
				steps = append(steps, say(rcptAnswer(j)))
			}
		}
	}
	for j := window - 1; j < n; j++ {
		steps = append(steps, say(rcptAnswer(j)))
	}
	steps = append(steps, expect("DATA"), say("354 go"), readData(), say("250 ok"))
	steps = append(steps, quit()...)
	p := startPeer(t, steps)
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), delivery(rcpts...))
	for i, r := range res.Rcpts {
		want := 250
		if i%7 == 3 {
			want = 550
		}
		if r.Reply == nil || r.Reply.Code != want {
			t.Fatalf("recipient %d: %v, want %d", i, r.Reply, want)
		}
	}
}

func rcptAnswer(i int) string {
	if i%7 == 3 {
		return fmt.Sprintf("550 5.1.1 r%d unknown", i)
	}
	return "250 ok"
}

// With CHUNKING, the content goes as one BDAT LAST, not dot-stuffed.
func TestChunking(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo("CHUNKING", "PIPELINING"),
		readCommands("MAIL FROM:<a@example.net>", "RCPT TO:<b@example.test>", "RCPT TO:<c@example.test>"),
		say("250 ok", "250 ok", "550 5.1.1 unknown"),
		readBDAT(), say("250 2.0.0 queued"), quit()))
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), delivery("b@example.test", "c@example.test"))
	wantCodes(t, res, "b@example.test=250 2.0.0, c@example.test=550 5.1.1")
	if msgs := p.messages(); len(msgs) != 1 || msgs[0] != testContent {
		t.Errorf("received %q, want %q", msgs, testContent)
	}
}

func TestChunkingWithoutPipelining(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo("CHUNKING"),
		expect("MAIL FROM:<a@example.net>"), say("250 ok"),
		expect("RCPT TO:<b@example.test>"), say("250 ok"),
		readBDAT(), say("250 2.0.0 queued"), quit()))
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=250 2.0.0")
	if msgs := p.messages(); len(msgs) != 1 || msgs[0] != testContent {
		t.Errorf("received %q", msgs)
	}
}

// The peer's SIZE limit is checked before MAIL (RFC 1870).
func TestSizeExceeded(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo("SIZE 100"), quit()))
	d := delivery("b@example.test")
	d.Size = 5000
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), d)
	wantCodes(t, res, "b@example.test=552 5.3.4")
	if got := res.Rcpts[0].Reply.Error(); !strings.Contains(got, "(5000 octets)") || !strings.Contains(got, "(100 octets)") {
		t.Errorf("reply: %s", got)
	}
}

func TestSMTPUTF8(t *testing.T) {
	t.Parallel()
	t.Run("not offered", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, seq(greet(), ehlo("8BITMIME"), quit()))
		d := delivery("b@example.test")
		d.SMTPUTF8 = true
		res := newClient(t, mxResolver(), p).Deliver(t.Context(), d)
		wantCodes(t, res, "b@example.test=553 5.6.7")
		if got := res.Rcpts[0].Reply.Error(); !strings.Contains(got, "needs SMTPUTF8") || !strings.Contains(got, mxName) {
			t.Errorf("reply: %s", got)
		}
	})
	t.Run("UTF-8 address needs it", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, seq(greet(), ehlo(), quit()))
		res := newClient(t, mxResolver(), p).Deliver(t.Context(), delivery("ゆうびん@example.test"))
		wantCodes(t, res, "ゆうびん@example.test=553 5.6.7")
	})
	t.Run("offered", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, seq(greet(), ehlo("SMTPUTF8", "8BITMIME"),
			expect("MAIL FROM:<a@example.net> SMTPUTF8"), say("250 ok"),
			expect("RCPT TO:<ゆうびん@example.test>"), say("250 ok"),
			expect("DATA"), say("354 go"), readData(), say("250 ok"), quit()))
		res := newClient(t, mxResolver(), p).Deliver(t.Context(), delivery("ゆうびん@example.test"))
		wantCodes(t, res, "ゆうびん@example.test=250 ")
	})
}

// DSN parameters go only to a peer that offers DSN (RFC 3461).
func TestDSNParameters(t *testing.T) {
	t.Parallel()
	mk := func() *Delivery {
		d := delivery()
		d.Recipients = []Recipient{
			{Address: "b@example.test", Notify: "success,failure", ORCPT: "rfc822;b+tag@example.test"},
			{Address: "c@example.test", Notify: "NEVER", ORCPT: "rfc822;ç@example.test"},
			{Address: "d@example.test", Notify: "SOMETIMES", ORCPT: "junk"},
		}
		d.Ret, d.EnvID = "hdrs", "id=1 +x"
		return d
	}
	p := startPeer(t, seq(greet(), ehlo("DSN"),
		expect("MAIL FROM:<a@example.net> RET=HDRS ENVID=id+3D1+20+2Bx"), say("250 ok"),
		expect("RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Btag@example.test"), say("250 ok"),
		expect(`RCPT TO:<c@example.test> NOTIFY=NEVER ORCPT=utf-8;\x{E7}@example.test`), say("250 ok"),
		expect("RCPT TO:<d@example.test>"), say("250 ok"),
		expect("DATA"), say("354 go"), readData(), say("250 ok"), quit()))
	wantCodes(t, newClient(t, mxResolver(), p).Deliver(t.Context(), mk()), "b@example.test=250 , c@example.test=250 , d@example.test=250 ")

	p = startPeer(t, seq(greet(), ehlo(), txn("a@example.net", "b@example.test", "c@example.test", "d@example.test"), quit()))
	wantCodes(t, newClient(t, mxResolver(), p).Deliver(t.Context(), mk()), "b@example.test=250 2.0.0, c@example.test=250 2.0.0, d@example.test=250 2.0.0")
}

// A reply where none makes sense (a 250 to DATA) is a protocol error, never
// a delivery.
func TestUnexpectedReplies(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo(),
		expect("MAIL FROM:<a@example.net>"), say("250 ok"),
		expect("RCPT TO:<b@example.test>"), say("250 ok"),
		expect("DATA"), say("250 sure"), expectClose()))
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=451 4.5.0")

	p = startPeer(t, seq(say("250 not a greeting"), expectClose()))
	res = newClient(t, mxResolver(), p).Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=451 4.5.0")
}

// pipePeer runs the scripts, one per connection, on one end of a net.Pipe
// and gives the client the other: inside a synctest bubble, the client's
// deadlines run on the fake clock.
func pipePeer(t *testing.T, c *Client, scripts ...[]step) *peer {
	p := &peer{t: t}
	c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		p.mu.Lock()
		i := p.conns
		p.conns++
		p.mu.Unlock()
		if i >= len(scripts) {
			return nil, fmt.Errorf("unexpected connection #%d to %s", i+1, addr)
		}
		client, server := net.Pipe()
		p.wg.Go(func() { p.serve(server, scripts[i]) })
		return client, nil
	}
	return p
}

// recordUntilClose reads everything the client sends until it closes.
func recordUntilClose(out *strings.Builder) step {
	return func(c *peerConn) error {
		_, err := io.Copy(out, c.br)
		if err != nil && err != io.ErrClosedPipe {
			return err
		}
		return nil
	}
}

// A peer that stops in the middle of a reply: after the RCPT timeout
// (RFC 5321 4.5.3.2.3, 5 minutes) the connection is dropped, nothing more
// is sent on it (no QUIT: it is out of step), and no recipient is reported
// accepted, although one 250 had been read.
func TestStallMidReply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var after strings.Builder
		c := newClient(t, mxResolver(), nil)
		p := pipePeer(t, c, seq(greet(), ehlo("PIPELINING"),
			readCommands("MAIL FROM:<a@example.net>", "RCPT TO:<b@example.test>", "RCPT TO:<c@example.test>", "DATA"),
			func(c *peerConn) error {
				// Replies, the last one cut after its first line.
				_, err := io.WriteString(c, "250 ok\r\n250 ok\r\n550-5.1.1 no such user,\r\n")
				return err
			},
			recordUntilClose(&after)))
		start := time.Now()
		res := c.Deliver(t.Context(), delivery("b@example.test", "c@example.test"))
		p.wg.Wait()
		wantCodes(t, res, "b@example.test=451 4.4.2, c@example.test=451 4.4.2")
		if d := time.Since(start); d != 5*time.Minute {
			t.Errorf("gave up after %v, want the RCPT timeout of 5m", d)
		}
		if after.Len() != 0 {
			t.Errorf("client sent %q after the timeout", after.String())
		}
		if got := res.Attempts[0].Reply; got != errTimeout.Error() {
			t.Errorf("attempt reply %q", got)
		}
	})
}

// A peer that stops reading the content: the write deadline (RFC 5321
// 4.5.3.2.5, 3 minutes per block) ends the delivery.
func TestStallWhileSendingData(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newClient(t, mxResolver(), nil)
		release := make(chan struct{})
		p := pipePeer(t, c, seq(greet(), ehlo(), expect("MAIL FROM:*"), say("250 ok"),
			expect("RCPT TO:*"), say("250 ok"), expect("DATA"), say("354 go"),
			func(*peerConn) error { <-release; return nil }, stall()))
		start := time.Now()
		res := c.Deliver(t.Context(), delivery("b@example.test"))
		close(release)
		p.wg.Wait()
		wantCodes(t, res, "b@example.test=451 4.4.2")
		if d := time.Since(start); d != 3*time.Minute {
			t.Errorf("gave up after %v, want the data block timeout of 3m", d)
		}
	})
}

// Timeouts from the Client override the defaults.
func TestShortTimeouts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newClient(t, mxResolver(), nil)
		c.Timeouts.Greeting = 10 * time.Second
		p := pipePeer(t, c, seq(stall()))
		start := time.Now()
		res := c.Deliver(t.Context(), delivery("b@example.test"))
		p.wg.Wait()
		wantCodes(t, res, "b@example.test=451 4.4.2")
		if d := time.Since(start); d != 10*time.Second {
			t.Errorf("gave up after %v", d)
		}
	})
}
