package main

// kill -9 with a full outbound queue: the built binary queues 1,000 messages for a
// destination that is down, dies without warning, restarts, and once the destination comes
// up delivers every message. Nothing was in flight at the kill (every connection was
// refused), so each message must arrive exactly once.

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"yubin/internal/smtp"
	"yubin/internal/testenv"
	"yubin/internal/testenv/fakedns"
)

// tokenSink is a minimal SMTP server standing for a remote MX: it accepts every message and
// counts each one by its X-Token header.
type tokenSink struct {
	t  *testing.T
	ln net.Listener

	mu       sync.Mutex
	conns    map[net.Conn]bool
	tokens   map[string]int
	foreign  []string // messages without a token
	received int
}

// startTokenSink listens on addr (the port yubin was refused on while the sink was down).
func startTokenSink(t *testing.T, addr string) *tokenSink {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("bringing the destination up on %s: %v", addr, err)
	}
	s := &tokenSink{t: t, ln: ln, tokens: map[string]int{}, conns: map[net.Conn]bool{}}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		// yubin keeps idle connections open for reuse: end them rather than wait.
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					c.Close()
				}()
				s.session(c)
			}()
		}
	}()
	return s
}

var tokenRe = regexp.MustCompile(`(?m)^X-Token: (\S+)\r$`)

// session speaks just enough SMTP for yubin's client; replies go out one by one, which is
// also correct under PIPELINING (RFC 2920 3.1).
func (s *tokenSink) session(c net.Conn) {
	br := bufio.NewReader(c)
	reply := func(r string) bool {
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		_, err := fmt.Fprintf(c, "%s\r\n", r)
		return err == nil
	}
	readLine := func() (string, bool) {
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		l, err := br.ReadString('\n')
		return l, err == nil
	}
	if !reply("220 sink.test ESMTP") {
		return
	}
	for {
		line, ok := readLine()
		if !ok {
			return
		}
		cmd, err := smtp.ParseCommand([]byte(strings.TrimRight(line, "\r\n")))
		if err != nil {
			if !reply(err.Error()) {
				return
			}
			continue
		}
		switch cmd.Verb {
		case "EHLO":
			ok = reply("250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES")
		case "HELO":
			ok = reply("250 sink.test")
		case "MAIL":
			ok = reply("250 2.1.0 ok")
		case "RCPT":
			ok = reply("250 2.1.5 ok")
		case "RSET", "NOOP":
			ok = reply("250 2.0.0 ok")
		case "QUIT":
			reply("221 2.0.0 bye")
			return
		case "DATA":
			if !reply("354 go ahead") {
				return
			}
			var msg strings.Builder
			for {
				l, ok := readLine()
				if !ok {
					return // a message cut off is not accepted
				}
				if l == ".\r\n" {
					break
				}
				msg.WriteString(strings.TrimPrefix(l, "."))
			}
			s.record(msg.String())
			ok = reply("250 2.0.0 queued")
		default:
			ok = reply("502 5.5.2 not implemented")
		}
		if !ok {
			return
		}
	}
}

func (s *tokenSink) record(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received++
	head, _, _ := strings.Cut(msg, "\r\n\r\n")
	if m := tokenRe.FindStringSubmatch(head + "\r\n"); m != nil {
		s.tokens[m[1]]++
	} else {
		s.foreign = append(s.foreign, msg[:min(len(msg), 200)])
	}
}

// distinct returns how many different tokens arrived.
func (s *tokenSink) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tokens)
}

// setRelay replaces the [relay] section's dns_servers line that newInstance writes with
// the given settings.
func (in *instance) setRelay(settings string) {
	in.t.Helper()
	b, err := os.ReadFile(in.config)
	if err != nil {
		in.t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^dns_servers\s*=.*$`)
	if n := len(re.FindAll(b, -1)); n != 1 {
		in.t.Fatalf("newInstance's config has %d dns_servers lines, want 1 under [relay]:\n%s", n, b)
	}
	b = re.ReplaceAllLiteral(b, []byte(settings))
	if err := os.WriteFile(in.config, b, 0o600); err != nil {
		in.t.Fatal(err)
	}
	in.cli("", "config", "check")
}

// queueStats reads "yubin queue list": the number of entries, how many have been attempted
// at least once, and how many are in each state.
func (in *instance) queueStats() (entries, attempted int, states map[string]int) {
	in.t.Helper()
	out := in.cli("", "queue", "list")
	m := regexp.MustCompile(`(?m)^(\d+) entr(y|ies)$`).FindStringSubmatch(out)
	if m == nil {
		in.t.Fatalf("queue list printed no entry count:\n%s", out[max(0, len(out)-500):])
	}
	entries, _ = strconv.Atoi(m[1])
	// ID MESSAGE RCPT STATE ATTEMPTS ...
	row := regexp.MustCompile(`(?m)^\d+\s+\S+\s+\S+\s+(\S+)\s+(\d+)\s`)
	states = map[string]int{}
	for _, r := range row.FindAllStringSubmatch(out, -1) {
		states[r[1]]++
		if r[2] != "0" {
			attempted++
		}
	}
	return entries, attempted, states
}

// queueTokens sends messages through the sendmail socket (local programs may relay), on
// several sessions at once.
func queueTokens(t *testing.T, socket string, tokens []string, sessions int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := net.Dial("unix", socket)
			if err != nil {
				errs <- err
				return
			}
			c := testenv.Wrap(t, nc)
			c.Expect(220)
			c.Cmd("EHLO localhost", 250)
			for i := s; i < len(tokens); i += sessions {
				tok := tokens[i]
				data := fmt.Sprintf("From: user@example.test\r\nTo: bob@remote.test\r\nSubject: queued %s\r\nX-Token: %s\r\n"+
					"Message-ID: <%s@example.test>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\nbody of %s\r\n.\r\n", tok, tok, tok, tok)
				if r := c.Send("user@example.test", []string{"bob@remote.test"}, data); r.Code != 250 {
					errs <- fmt.Errorf("%s: %s", tok, r.Error())
					return
				}
			}
			c.Cmd("QUIT", 221)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("submitting: %v", err)
	}
}

// waitUntil polls cond until it holds or d passes (bounded; not a timing assertion).
func waitUntil(t *testing.T, in *instance, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			logs := in.logText()
			t.Fatalf("timed out after %v waiting for %s; last yubin log:\n%s", d, what, logs[max(0, len(logs)-3000):])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKill9WithFullQueue: 1,000 messages wait for a destination that refuses connections;
// yubin is killed with SIGKILL and restarted, the destination comes up, and every message
// arrives exactly once (none was in flight at the kill), with no bounce or warning.
func TestKill9WithFullQueue(t *testing.T) {
	t.Parallel()
	const n = 1000
	begin := time.Now()
	dns := fakedns.Start(t)
	dns.AddMX("remote.test", 10, "mx.remote.test")
	dns.AddA("mx.remote.test", "127.0.0.1")
	// The destination's address: free now, and nothing listens there until the sink starts,
	// so every attempt before that is refused (a temporary failure).
	sinkAddr := testenv.FreeAddr(t)
	_, sinkPort, _ := net.SplitHostPort(sinkAddr)

	in := newInstance(t)
	in.setRelay(fmt.Sprintf(`dns_servers = [%q]
port = %s
retry_first = "1s"
retry_max = "2s"`, dns.Addr(), sinkPort))
	in.start()

	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("q%04d", i)
	}
	queueTokens(t, in.socket, tokens, 8)
	submitted := time.Now()

	// Every entry has been tried and deferred at least once: the destination is really down
	// and the queue is full when the kill comes.
	waitUntil(t, in, "every queue entry to be attempted once", 60*time.Second, func() bool {
		e, a, _ := in.queueStats()
		return e == n && a == n
	})
	attempted := time.Now()
	in.kill()
	e, _, states := in.queueStats()
	if e != n {
		t.Fatalf("after kill -9 the queue holds %d entries, want %d", e, n)
	}
	t.Logf("queue at the kill: %v", states)

	in.start()
	sink := startTokenSink(t, sinkAddr)
	waitUntil(t, in, fmt.Sprintf("all %d messages at the destination", n), 120*time.Second, func() bool { return sink.distinct() == n })
	delivered := time.Now()
	// Once the queue is empty nothing more can arrive: only then are duplicates counted.
	waitUntil(t, in, "the queue to empty", 30*time.Second, func() bool { e, _, _ := in.queueStats(); return e == 0 })

	sink.mu.Lock()
	defer sink.mu.Unlock()
	for _, tok := range tokens {
		if c := sink.tokens[tok]; c != 1 {
			t.Errorf("%s arrived %d times, want exactly once", tok, c)
		}
	}
	if len(sink.tokens) != n || sink.received != n || len(sink.foreign) != 0 {
		t.Errorf("the destination received %d messages with %d distinct tokens (want %d), %d without a token: %q",
			sink.received, len(sink.tokens), n, len(sink.foreign), sink.foreign)
	}
	// No bounce and no delay warning came back to the sender.
	if out := strings.TrimSpace(in.cli("", "mail", "count", "user@example.test")); out != "0" {
		t.Errorf("the sender's INBOX holds %s messages (a bounce or warning?), want 0", out)
	}
	t.Logf("queued %d in %v; all attempted after %v more; delivered after restart in %v; total %v",
		n, submitted.Sub(begin).Round(time.Millisecond), attempted.Sub(submitted).Round(time.Millisecond),
		delivered.Sub(attempted).Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
}
