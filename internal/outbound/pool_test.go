package outbound

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// Two messages to one destination go over one connection; the second
// transaction starts without RSET, since the first one ended.
func TestConnectionReuse(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo("PIPELINING"),
		readCommands("MAIL FROM:<a@example.net>", "RCPT TO:<b@example.test>", "DATA"),
		say("250 ok", "250 ok", "354 go"), readData(), say("250 2.0.0 first"),
		readCommands("MAIL FROM:<a@example.net>", "RCPT TO:<c@example.test>", "DATA"),
		say("250 ok", "250 ok", "354 go"), readData(), say("250 2.0.0 second"),
		quit()))
	c := newClient(t, mxResolver(), p)
	c.IdleTimeout = time.Minute
	wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=250 2.0.0")
	res := c.Deliver(t.Context(), delivery("c@example.test"))
	wantCodes(t, res, "c@example.test=250 2.0.0")
	if len(res.Attempts) != 1 || res.Attempts[0].Reply != "250 2.0.0 second" {
		t.Errorf("attempts: %+v", res.Attempts)
	}
	if n := p.connections(); n != 1 {
		t.Errorf("%d connections", n)
	}
	c.Close()
}

// A transaction that failed is reset before the connection serves again.
func TestConnectionReuseAfterFailure(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo(),
		expect("MAIL FROM:<a@example.net>"), say("250 ok"),
		expect("RCPT TO:<b@example.test>"), say("550 5.1.1 unknown"),
		expect("RSET"), say("250 ok"),
		txn("a@example.net", "c@example.test"),
		quit()))
	c := newClient(t, mxResolver(), p)
	c.IdleTimeout = time.Minute
	wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=550 5.1.1")
	wantCodes(t, c.Deliver(t.Context(), delivery("c@example.test")), "c@example.test=250 2.0.0")
	c.Close()
}

// A kept connection that the peer closed, or answers with 421, is
// replaced by a new one.
func TestConnectionReuseStale(t *testing.T) {
	t.Parallel()
	t.Run("closed", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t,
			seq(greet(), ehlo(), txn("a@example.net", "b@example.test")), // then closes
			seq(greet(), ehlo(), txn("a@example.net", "c@example.test"), quit()))
		c := newClient(t, mxResolver(), p)
		c.IdleTimeout = time.Minute
		wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=250 2.0.0")
		waitClosed(t, p) // the peer has closed its end
		res := c.Deliver(t.Context(), delivery("c@example.test"))
		wantCodes(t, res, "c@example.test=250 2.0.0")
		if n := p.connections(); n != 2 || len(res.Attempts) != 1 {
			t.Errorf("%d connections, attempts %+v", n, res.Attempts)
		}
		c.Close()
	})
	t.Run("421", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t,
			seq(greet(), ehlo(), txn("a@example.net", "b@example.test"),
				expect("MAIL FROM:<a@example.net>"), say("421 4.4.2 idle too long")),
			seq(greet(), ehlo(), txn("a@example.net", "c@example.test"), quit()))
		c := newClient(t, mxResolver(), p)
		c.IdleTimeout = time.Minute
		wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=250 2.0.0")
		res := c.Deliver(t.Context(), delivery("c@example.test"))
		wantCodes(t, res, "c@example.test=250 2.0.0")
		if n := p.connections(); n != 2 || len(res.Attempts) != 2 || res.Attempts[0].Reply != "421 4.4.2 idle too long" {
			t.Errorf("%d connections, attempts %+v", n, res.Attempts)
		}
		c.Close()
	})
}

// waitClosed waits until the peer has run all its scripts so far.
func waitClosed(t *testing.T, p *peer) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		// The accept loop is still running; wait for the sessions only by
		// polling their count of finished scripts.
		for p.finished() < p.connections() {
			time.Sleep(time.Millisecond)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("peer sessions did not finish")
	}
}

// After a timeout the connection is never kept; after IdleTimeout an idle
// connection is closed with QUIT.
func TestConnectionNotReusedAfterTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newClient(t, mxResolver(), nil)
		c.IdleTimeout = time.Minute
		p := pipePeer(t, c,
			seq(greet(), ehlo(), expect("MAIL FROM:*"), stall()),
			seq(greet(), ehlo(), txn("a@example.net", "c@example.test"), quit()))
		wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=451 4.4.2")
		wantCodes(t, c.Deliver(t.Context(), delivery("c@example.test")), "c@example.test=250 2.0.0")
		if p.conns != 2 {
			t.Errorf("%d connections", p.conns)
		}
		start := time.Now()
		p.wg.Wait() // the second script ends with QUIT, sent when the idle time is over
		if d := time.Since(start); d != time.Minute {
			t.Errorf("idle connection closed after %v", d)
		}
	})
}

// Up to MaxIdle connections per destination are kept (deliveries to one host run in
// parallel, and each finds a connection when the next message comes); the most recently
// used is taken first; one more is closed with QUIT.
func TestConnectionPoolKeepsSeveral(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	quits := make(chan int, 3)
	go func() {
		for i := 0; ; i++ {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func(i int) {
				defer nc.Close()
				sc := bufio.NewScanner(nc)
				for sc.Scan() {
					if sc.Text() == "QUIT" {
						quits <- i
						io.WriteString(nc, "221 bye\r\n")
						return
					}
				}
			}(i)
		}
	}()
	c := &Client{IdleTimeout: time.Minute, MaxIdle: 2}
	var ss []*session
	for range 3 {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, newSession(context.Background(), nc, "peer.example", Timeouts{}.withDefaults()))
	}
	for _, s := range ss {
		c.release("k", s)
	}
	select {
	case <-quits:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection over MaxIdle was not closed")
	}
	if got := c.take("k"); got != ss[1] {
		t.Errorf("first take: session %p, want the last kept (%p)", got, ss[1])
	}
	if got := c.take("k"); got != ss[0] {
		t.Errorf("second take: session %p, want %p", got, ss[0])
	}
	if got := c.take("k"); got != nil {
		t.Errorf("third take: %p, want none", got)
	}
	ss[0].close()
	ss[1].close()
	c.Close()
}
