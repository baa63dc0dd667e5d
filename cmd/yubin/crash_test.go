package main

// kill -9 under load (issue 6, "Durability under load"): the built binary takes mail from 20
// sessions, dies by SIGKILL at a random moment, restarts, several times in a row. After every
// restart the mailbox is checked against what the clients know: a message that got 250 is
// stored exactly once and intact, one in flight at the kill (its end of data sent, no reply
// read) at most once, and one that was not completely sent, or was refused, not at all.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"regexp"
	"sync"
	"testing"
	"time"

	"yubin/internal/smtp"
	"yubin/internal/store"
)

// msgState is what a client knows about one message when the server dies.
type msgState int

const (
	notSent  msgState = iota // the end of data was never written: must not be stored
	inFlight                 // data complete, no reply read: stored at most once
	acked                    // 250 read: stored exactly once
	refused                  // another reply: must not be stored
)

func (s msgState) String() string {
	return [...]string{"not completely sent", "in flight", "acknowledged", "refused"}[s]
}

// crashMsg is one message a load session tried to send.
type crashMsg struct {
	state msgState
	size  int // the body's size: crashBody(token, size) is the content the client sent
}

// crashLedger records every message of the load, by token.
type crashLedger struct {
	mu   sync.Mutex
	msgs map[string]*crashMsg
}

func (l *crashLedger) set(tok string, size int, s msgState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs[tok] = &crashMsg{state: s, size: size}
}

// counts returns how many messages are in each state.
func (l *crashLedger) counts() map[msgState]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := map[msgState]int{}
	for _, m := range l.msgs {
		n[m.state]++
	}
	return n
}

// Message sizes of the load: most are small and stored inside the database; every fifth
// session sends some larger than store.InlineMax, which become blob files (fsync, rename,
// directory fsync), so a kill can also land in that path.
const (
	crashSmall = 1 << 10
	crashLarge = 150 << 10
)

// crashBody is the content of the message with token tok: an X-Token header, filler lines up
// to about size bytes, and a last line naming the token, so a truncated or mixed-up message
// is seen. No line starts with a dot, so DATA needs no dot-stuffing.
func crashBody(tok string, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "X-Token: %s\r\nSubject: load %s\r\n\r\n", tok, tok)
	const line = "line of text to make the message bigger, 0123456789 abcdefghij\r\n"
	for b.Len()+len(line) < size {
		b.WriteString(line)
	}
	fmt.Fprintf(&b, "end of %s\r\n", tok)
	return b.Bytes()
}

var crashTokenRe = regexp.MustCompile(`X-Token: (\S+)\r\n`)

// storedMessage is one message read back from a mailbox.
type storedMessage struct {
	id   string
	size int64 // the size the store reports
	data []byte
}

// readMailbox opens the data directory with the store package (the server may be running or
// not: the CLI does the same) and reads every message in addr's INBOX.
func readMailbox(t *testing.T, dataDir, addr string) []storedMessage {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dataDir, store.Options{})
	if err != nil {
		t.Fatalf("reopening the data directory: %v", err)
	}
	defer st.Close()
	acct, err := st.GetAccount(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	list, err := st.ListMessages(ctx, acct.ID, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	var out []storedMessage
	for _, m := range list {
		f, size, err := st.OpenMessage(ctx, m.MessageID)
		if err != nil {
			t.Errorf("message %s is in the INBOX but cannot be opened: %v", m.MessageID, err)
			continue
		}
		var buf bytes.Buffer
		_, err = buf.ReadFrom(f)
		f.Close()
		if err != nil {
			t.Errorf("reading message %s: %v", m.MessageID, err)
			continue
		}
		out = append(out, storedMessage{id: m.MessageID, size: size, data: buf.Bytes()})
	}
	return out
}

// checkLedger compares the mailbox with the ledger and returns how many times each token is
// stored. Stored messages must be intact: the content sent, after the trace header yubin adds.
func checkLedger(t *testing.T, when string, stored []storedMessage, l *crashLedger) map[string]int {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	found := map[string]int{}
	for _, m := range stored {
		sm := crashTokenRe.FindSubmatch(m.data)
		if sm == nil {
			t.Errorf("%s: stored message %s has no token: %q", when, m.id, m.data[:min(len(m.data), 200)])
			continue
		}
		tok := string(sm[1])
		msg, ok := l.msgs[tok]
		if !ok {
			t.Errorf("%s: stored message %s (token %s) was never sent", when, m.id, tok)
			continue
		}
		if body := crashBody(tok, msg.size); !bytes.HasSuffix(m.data, body) || int64(len(m.data)) != m.size {
			t.Errorf("%s: stored message %s (token %s, %s) is damaged: %d bytes (store says %d), want the %d bytes sent after the trace header",
				when, m.id, tok, msg.state, len(m.data), m.size, len(body))
		}
		found[tok]++
	}
	for tok, msg := range l.msgs {
		n := found[tok]
		switch msg.state {
		case acked:
			if n != 1 {
				t.Errorf("%s: %s got 250 but is stored %d times", when, tok, n)
			}
		case inFlight:
			if n > 1 {
				t.Errorf("%s: %s was in flight at a kill and is stored %d times", when, tok, n)
			}
		default:
			if n != 0 {
				t.Errorf("%s: %s never got 250 (%s) but is stored %d times", when, tok, msg.state, n)
			}
		}
	}
	return found
}

// TestKill9LosesNothing: 20 sessions of load, four SIGKILLs at random moments, a restart and a
// check of the mailbox after each.
func TestKill9LosesNothing(t *testing.T) {
	t.Parallel()
	in := newInstance(t)
	dataDir := in.dir + "/data"
	const sessions, cycles = 20, 4
	ledger := &crashLedger{msgs: map[string]*crashMsg{}}
	var seen map[string]int // what the previous check found: nothing may disappear later
	check := func(when string) {
		found := checkLedger(t, when, readMailbox(t, dataDir, "user@example.test"), ledger)
		for tok, n := range seen {
			if found[tok] < n {
				t.Errorf("%s: %s was stored at the previous check and is gone", when, tok)
			}
		}
		seen = found
	}
	start := time.Now()
	for cycle := range cycles {
		in.start()
		if cycle > 0 {
			// The restart has run its recovery (orphan cleanup) before listening.
			check(fmt.Sprintf("after kill %d", cycle))
		}
		before := ledger.counts()[acked]
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for s := range sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				bdat := s%4 == 3 // some sessions use BDAT, whose chunks get 250 before the message is complete
				large := s%5 == 0
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if !sendSession(in.addr, fmt.Sprintf("c%d-s%d-n%d", cycle, s, i), bdat, large, ledger) {
						return
					}
				}
			}()
		}
		// Two sessions stall in the middle of a message, so the kill always finds a
		// partial message (DATA) and one whose first BDAT chunk got 250.
		for _, bdat := range []bool{false, true} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				stallSession(in.addr, fmt.Sprintf("c%d-stall-bdat%v", cycle, bdat), bdat, ledger, stop)
			}()
		}
		time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
		in.kill()
		close(stop)
		wg.Wait()
		if ledger.counts()[acked] == before {
			t.Fatalf("cycle %d: no message was acknowledged before the kill\n%s", cycle, in.logText())
		}
	}
	// The last restart: checked, and it takes mail again.
	in.start()
	check(fmt.Sprintf("after kill %d", cycles))
	before := ledger.counts()[acked]
	sendSession(in.addr, "final", false, false, ledger)
	if ledger.counts()[acked] == before {
		t.Fatalf("the server takes no mail after the last restart\n%s", in.logText())
	}
	in.kill()
	check("at the end")
	n := ledger.counts()
	var flightStored int
	for tok, msg := range ledger.msgs {
		if msg.state == inFlight && seen[tok] > 0 {
			flightStored++
		}
	}
	t.Logf("%d kills under %d sessions in %v: %d acknowledged, %d in flight at a kill (%d of them stored), %d not completely sent, %d refused",
		cycles, sessions, time.Since(start).Round(time.Millisecond), n[acked], n[inFlight], flightStored, n[notSent], n[refused])
}

// sendSession sends up to 20 messages on one connection until the connection fails; it
// returns false when it could not even connect (the server is gone).
func sendSession(addr, prefix string, bdat, large bool, l *crashLedger) bool {
	connected, _ := loadSession(addr, prefix, bdat, large, l)
	return connected
}

// loadSession is sendSession that also returns the reply that refused a message, if one did.
func loadSession(addr, prefix string, bdat, large bool, l *crashLedger) (connected bool, refusal *smtp.Reply) {
	lc, err := dialLoad(addr)
	if err != nil {
		return false, nil
	}
	defer lc.Close()
	c, br, expect, cmd := lc.Conn, lc.br, lc.expect, lc.cmd
	if !expect(220) || !cmd("EHLO load.test", 250) {
		return true, nil
	}
	for i := range 20 {
		tok := fmt.Sprintf("%s-%d", prefix, i)
		size := crashSmall
		if large && i%3 == 0 {
			size = crashLarge
		}
		body := crashBody(tok, size)
		l.set(tok, size, notSent)
		if !cmd("MAIL FROM:<load@example.org>", 250) || !cmd("RCPT TO:<user@example.test>", 250) {
			return true, nil
		}
		if bdat {
			// Two chunks: the first one's 250 acknowledges the chunk, not the message.
			half := len(body) / 2
			if _, err := fmt.Fprintf(c, "BDAT %d\r\n%s", half, body[:half]); err != nil || !expect(250) {
				return true, nil
			}
			if _, err := fmt.Fprintf(c, "BDAT %d LAST\r\n%s", len(body)-half, body[half:]); err != nil {
				return true, nil
			}
		} else {
			if !cmd("DATA", 354) {
				return true, nil
			}
			// One write: when it fails, the terminating dot did not go out whole.
			if _, err := c.Write(append(body, ".\r\n"...)); err != nil {
				return true, nil
			}
		}
		l.set(tok, size, inFlight)
		r, err := smtp.ReadReply(br, 100)
		if err != nil {
			return true, nil
		}
		if r.Code != 250 {
			l.set(tok, size, refused)
			return true, r
		}
		l.set(tok, size, acked)
	}
	cmd("QUIT", 221)
	return true, nil
}

// stallSession starts a message, sends part of it and waits for stop: the message must never
// be stored. With BDAT, the first chunk is acknowledged (250) and the last one is cut short.
func stallSession(addr, tok string, bdat bool, l *crashLedger, stop <-chan struct{}) {
	lc, err := dialLoad(addr)
	if err != nil {
		return
	}
	defer lc.Close()
	c, expect, cmd := lc.Conn, lc.expect, lc.cmd
	if !expect(220) {
		return
	}
	body := crashBody(tok, crashSmall)
	l.set(tok, crashSmall, notSent)
	if !cmd("EHLO stall.test", 250) || !cmd("MAIL FROM:<load@example.org>", 250) || !cmd("RCPT TO:<user@example.test>", 250) {
		return
	}
	half := len(body) / 2
	if bdat {
		if _, err := fmt.Fprintf(c, "BDAT %d\r\n%s", half, body[:half]); err != nil || !expect(250) {
			return
		}
		// The LAST chunk announces the rest but carries only part of it.
		fmt.Fprintf(c, "BDAT %d LAST\r\n%s", len(body)-half, body[half:len(body)-10])
	} else {
		if !cmd("DATA", 354) {
			return
		}
		c.Write(body[:half])
	}
	<-stop
}

// loadConn is a load client's SMTP connection: expect reads a reply and checks its code, cmd
// sends a line and checks the reply. Every step is bounded by a 30 s deadline.
type loadConn struct {
	net.Conn
	br *bufio.Reader
}

func dialLoad(addr string) (*loadConn, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &loadConn{Conn: c, br: bufio.NewReader(c)}, nil
}

func (l *loadConn) expect(code int) bool {
	r, err := smtp.ReadReply(l.br, 100)
	return err == nil && r.Code == code
}

func (l *loadConn) cmd(line string, code int) bool {
	if _, err := fmt.Fprintf(l, "%s\r\n", line); err != nil {
		return false
	}
	return l.expect(code)
}
