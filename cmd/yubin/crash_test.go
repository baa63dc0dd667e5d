package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"regexp"
	"strings"
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

// TestKill9LosesNothing runs the built binary under load from several sessions, kills it
// with SIGKILL at a random moment, restarts it, several times in a row, and then checks the
// mailbox: every message that got 250 is there exactly once, none that was not completely
// sent is there, and in-flight ones at most once.
func TestKill9LosesNothing(t *testing.T) {
	t.Parallel()
	in := newInstance(t)
	const sessions, cycles = 8, 3
	var mu sync.Mutex
	states := map[string]msgState{}
	set := func(tok string, s msgState) { mu.Lock(); states[tok] = s; mu.Unlock() }
	for cycle := range cycles {
		in.start()
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for s := range sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if !sendSession(in.addr, fmt.Sprintf("c%d-s%d-n%d", cycle, s, i), set) {
						return
					}
				}
			}()
		}
		time.Sleep(time.Duration(200+rand.IntN(600)) * time.Millisecond)
		in.kill()
		close(stop)
		wg.Wait()
	}
	st, err := store.Open(context.Background(), filepath.Join(in.dir, "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	acct, err := st.GetAccount(context.Background(), "user@example.test")
	if err != nil {
		t.Fatal(err)
	}
	list, err := st.ListMessages(context.Background(), acct.ID, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]int{}
	tokRe := regexp.MustCompile(`X-Token: (\S+)\r\n`)
	for _, m := range list {
		f, _, err := st.OpenMessage(context.Background(), m.MessageID)
		if err != nil {
			t.Fatalf("message %s in INBOX but its file cannot be opened: %v", m.MessageID, err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(f)
		f.Close()
		sm := tokRe.FindSubmatch(buf.Bytes())
		if sm == nil || !bytes.HasSuffix(buf.Bytes(), []byte("end of "+string(sm[1])+"\r\n")) {
			t.Errorf("stored message %s is damaged or foreign: %q", m.MessageID, buf.Bytes()[:min(buf.Len(), 200)])
			continue
		}
		found[string(sm[1])]++
	}
	var nAcked, nFlight int
	for tok, s := range states {
		n := found[tok]
		switch s {
		case acked:
			nAcked++
			if n != 1 {
				t.Errorf("%s got 250 but is stored %d times", tok, n)
			}
		case inFlight:
			nFlight++
			if n > 1 {
				t.Errorf("%s was in flight at the kill and is stored %d times", tok, n)
			}
		default:
			if n != 0 {
				t.Errorf("%s never got 250 (state %d) but is stored %d times", tok, s, n)
			}
		}
	}
	for tok := range found {
		if _, ok := states[tok]; !ok {
			t.Errorf("stored message %s was never sent", tok)
		}
	}
	if nAcked == 0 {
		t.Fatal("no message was acknowledged: the test did not test anything")
	}
	t.Logf("%d cycles: %d acknowledged, %d in flight at a kill, %d stored", cycles, nAcked, nFlight, len(list))
}

// sendSession sends messages on one connection until the connection fails; it returns false
// when it could not even connect (the server is gone).
func sendSession(addr, prefix string, set func(string, msgState)) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	expect := func(code int) bool {
		r, err := smtp.ReadReply(br, 100)
		return err == nil && r.Code == code
	}
	cmd := func(line string, code int) bool {
		if _, err := fmt.Fprintf(c, "%s\r\n", line); err != nil {
			return false
		}
		return expect(code)
	}
	if !expect(220) || !cmd("EHLO load.test", 250) {
		return true
	}
	for i := 0; i < 20; i++ {
		tok := fmt.Sprintf("%s-%d", prefix, i)
		set(tok, notSent)
		if !cmd("MAIL FROM:<load@example.org>", 250) || !cmd("RCPT TO:<user@example.test>", 250) || !cmd("DATA", 354) {
			return true
		}
		body := fmt.Sprintf("X-Token: %s\r\nSubject: load\r\n\r\n%send of %s\r\n", tok, strings.Repeat("line of text to make the message bigger\r\n", 20), tok)
		if _, err := fmt.Fprintf(c, "%s.\r\n", body); err != nil {
			return true
		}
		set(tok, inFlight)
		r, err := smtp.ReadReply(br, 100)
		if err != nil {
			return true
		}
		if r.Code == 250 {
			set(tok, acked)
		} else {
			set(tok, refused)
			return true
		}
	}
	cmd("QUIT", 221)
	return true
}
