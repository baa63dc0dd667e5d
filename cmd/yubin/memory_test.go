package main

// Memory of the built binary (issue 6, "Targets"): 1,000 idle SMTP connections cost at most
// 64 MB more than an idle server; a 50 MB message through DATA or BDAT raises peak memory by at
// most 16 MB. These are measurements with the targets as the assertion; the figures
// are logged (go test -v) so a change that moves them is seen.

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"yubin/internal/smtp"
	"yubin/internal/testenv"
)

// procStatusKB reads a "kB" field (VmRSS, VmHWM) of /proc/<pid>/status.
func procStatusKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("/proc/%d/status: %q: %v", pid, line, err)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

// raiseNoFile makes room for n more descriptors in the test process (root may raise the hard
// limit too).
func raiseNoFile(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	lim.Cur = n
	lim.Max = max(lim.Max, n)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("raising RLIMIT_NOFILE to %d: %v", n, err)
	}
}

// TestMemoryIdleConnections: 1,000 connections, each greeted and past EHLO, then idle.
func TestMemoryIdleConnections(t *testing.T) {
	t.Parallel()
	const conns = 1000
	const limitMB = 64
	raiseNoFile(t, 4*conns)
	in := newInstance(t)
	in.patchConfig("max_connections_per_ip = 100", "max_connections = 2000\nmax_connections_per_ip = 2000")
	in.start()
	pid := in.cmd.Process.Pid

	// One whole session first, so the idle figure is that of a server that has worked.
	c := testenv.Dial(t, in.addr)
	c.Cmd("EHLO warm.test", 250)
	if r := c.Send("a@example.org", []string{"user@example.test"}, "Subject: warm up\r\n\r\nhello\r\n.\r\n"); r.Code != 250 {
		t.Fatalf("warm-up message: %s", r.Error())
	}
	c.Cmd("QUIT", 221)
	time.Sleep(200 * time.Millisecond)
	idle := procStatusKB(t, pid, "VmRSS")

	start := time.Now()
	held := make([]net.Conn, conns)
	t.Cleanup(func() {
		for _, c := range held {
			if c != nil {
				c.Close()
			}
		}
	})
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	next := make(chan int, conns)
	for i := range conns {
		next <- i
	}
	close(next)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := idleSession(in.addr, i)
				if err != nil {
					errs <- err
					return
				}
				held[i] = c
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("opening %d idle connections: %v\n%s", conns, err, tail(in.logText(), 10))
	}
	opened := time.Since(start)
	time.Sleep(500 * time.Millisecond) // let the sessions settle in their wait for a command
	busy := procStatusKB(t, pid, "VmRSS")
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if len(fds) < conns {
		t.Errorf("the server holds %d descriptors, fewer than the %d connections", len(fds), conns)
	}
	delta := busy - idle
	t.Logf("%d idle connections (opened in %v): VmRSS %d KiB -> %d KiB, +%.1f MB (%.1f KiB per connection; target %d MB)",
		conns, opened.Round(time.Millisecond), idle, busy, float64(delta)/1024, float64(delta)/conns, limitMB)
	if delta > limitMB<<10 {
		t.Errorf("%d idle connections cost %.1f MB of RSS, more than %d MB", conns, float64(delta)/1024, limitMB)
	}
	// The server still serves a new session.
	c = testenv.Dial(t, in.addr)
	c.Cmd("EHLO after.test", 250)
	c.Cmd("QUIT", 221)
}

// idleSession connects, reads the greeting and says EHLO.
func idleSession(addr string, i int) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	if r, err := smtp.ReadReply(br, 100); err != nil || r.Code != 220 {
		c.Close()
		return nil, fmt.Errorf("connection %d: greeting: %v %v", i, r, err)
	}
	fmt.Fprintf(c, "EHLO idle%d.test\r\n", i)
	if r, err := smtp.ReadReply(br, 100); err != nil || r.Code != 250 {
		c.Close()
		return nil, fmt.Errorf("connection %d: EHLO: %v %v", i, r, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// TestMemoryLargeMessage: a 50 MB message through DATA, and through BDAT in 1 MB chunks, each
// on a fresh server.
func TestMemoryLargeMessage(t *testing.T) {
	t.Parallel()
	const size = 50 << 20
	const limitMB = 16
	in := newInstance(t)
	in.patchConfig("max_connections_per_ip = 100", "max_connections_per_ip = 100\nmax_message_size = \"60MiB\"")
	ledger := &crashLedger{msgs: map[string]*crashMsg{}}
	for _, bdat := range []bool{false, true} {
		mode := map[bool]string{false: "DATA", true: "BDAT"}[bdat]
		in.start()
		pid := in.cmd.Process.Pid
		// A small message first, the same way, so the baseline is a server that has worked.
		if _, r := loadSession(in.addr, "warm-"+mode, bdat, false, ledger); r != nil {
			t.Fatalf("%s warm-up: %s", mode, r.Error())
		}
		time.Sleep(200 * time.Millisecond)
		rss0, hwm0 := procStatusKB(t, pid, "VmRSS"), procStatusKB(t, pid, "VmHWM")

		tok := "big-" + mode
		body := crashBody(tok, size)
		ledger.set(tok, size, notSent)
		start := time.Now()
		r, err := sendBig(in.addr, body, bdat)
		if err != nil {
			t.Fatalf("%s: %v\n%s", mode, err, tail(in.logText(), 10))
		}
		took := time.Since(start)
		hwm1 := procStatusKB(t, pid, "VmHWM")
		if r.Code != 250 {
			ledger.set(tok, size, refused)
			t.Errorf("a %d-byte message through %s: %s, want 250", len(body), mode, r.Error())
		} else {
			ledger.set(tok, size, acked)
		}
		delta := hwm1 - hwm0
		t.Logf("%d MB through %s in %v: VmRSS before %d KiB, VmHWM %d KiB -> %d KiB: peak +%.1f MB (+%.1f MB over the RSS before; target %d MB)",
			size>>20, mode, took.Round(time.Millisecond), rss0, hwm0, hwm1, float64(delta)/1024, float64(hwm1-rss0)/1024, limitMB)
		if delta > limitMB<<10 {
			t.Errorf("a %d MB message through %s raised peak RSS by %.1f MB, more than %d MB", size>>20, mode, float64(delta)/1024, limitMB)
		}
		in.cmd.Process.Signal(syscall.SIGTERM)
		if err := in.cmd.Wait(); err != nil {
			t.Fatalf("yubin exited with %v\n%s", err, tail(in.logText(), 10))
		}
	}
	// Both are stored, whole: the bytes sent after the trace header, and the size the store
	// reports is the size of what it returns.
	stored := readMailbox(t, in.dir+"/data", "user@example.test")
	found := checkLedger(t, "after the large messages", stored, ledger)
	for _, m := range stored {
		if sm := crashTokenRe.FindSubmatch(m.data); sm != nil && strings.HasPrefix(string(sm[1]), "big-") {
			t.Logf("%s stored as %s: %d bytes", sm[1], m.id, m.size)
		}
	}
	if found["big-DATA"] != 1 || found["big-BDAT"] != 1 {
		t.Errorf("large messages stored: DATA %d, BDAT %d; want 1 each", found["big-DATA"], found["big-BDAT"])
	}
}

// sendBig sends one message with DATA, or with BDAT in 1 MB chunks, and returns the final
// reply. A refused command or chunk is returned as the reply.
func sendBig(addr string, body []byte, bdat bool) (*smtp.Reply, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(120 * time.Second))
	br := bufio.NewReader(c)
	cmd := func(line string, code int) (*smtp.Reply, error) {
		if line != "" {
			if _, err := fmt.Fprintf(c, "%s\r\n", line); err != nil {
				return nil, err
			}
		}
		r, err := smtp.ReadReply(br, 100)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", line, err)
		}
		if r.Code != code {
			return r, fmt.Errorf("%q: %s", line, r.Error())
		}
		return r, nil
	}
	for _, s := range []struct {
		line string
		code int
	}{{"", 220}, {"EHLO big.test", 250}, {fmt.Sprintf("MAIL FROM:<big@example.org> SIZE=%d", len(body)), 250}, {"RCPT TO:<user@example.test>", 250}} {
		if _, err := cmd(s.line, s.code); err != nil {
			return nil, err
		}
	}
	if !bdat {
		if _, err := cmd("DATA", 354); err != nil {
			return nil, err
		}
		if _, err := c.Write(append(body, ".\r\n"...)); err != nil {
			return nil, err
		}
		return smtp.ReadReply(br, 100)
	}
	const chunk = 1 << 20
	for off := 0; off < len(body); off += chunk {
		end := min(off+chunk, len(body))
		last := ""
		if end == len(body) {
			last = " LAST"
		}
		if _, err := fmt.Fprintf(c, "BDAT %d%s\r\n", end-off, last); err != nil {
			return nil, err
		}
		if _, err := c.Write(body[off:end]); err != nil {
			return nil, err
		}
		r, err := smtp.ReadReply(br, 100)
		if err != nil || r.Code != 250 || last != "" {
			return r, err
		}
	}
	return nil, fmt.Errorf("unreachable")
}
