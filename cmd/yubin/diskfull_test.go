package main

// Disk full (issue 6, "Durability under load"): the data directory sits on a small tmpfs the
// test mounts. With the disk filled up, yubin must answer 452 4.3.1 (or 451), lose nothing it
// acknowledged, store nothing it refused, keep serving, and take mail again as soon as space
// returns, without a restart.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"yubin/internal/smtp"
	"yubin/internal/testenv"
)

// needRoot skips a test that must mount a filesystem, except under CI=true, where the tests
// run as root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test mounts a tmpfs and must run as root under CI=true")
	}
	t.Skip("mounting a tmpfs needs root")
}

// mountTmpfs mounts a tmpfs of the given size ("8m") on a new directory and unmounts it when
// the test ends (lazily if something still holds it open).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mount -t tmpfs -o size=%s tmpfs %s: %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
				t.Errorf("unmounting %s: %v", dir, err)
			}
		}
	})
	return dir
}

// patchConfig replaces old with new in the instance's config file; old must be there.
func (in *instance) patchConfig(old, new string) {
	in.t.Helper()
	b, err := os.ReadFile(in.config)
	if err != nil {
		in.t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		in.t.Fatalf("config has no %q:\n%s", old, b)
	}
	if err := os.WriteFile(in.config, bytes.Replace(b, []byte(old), []byte(new), 1), 0o600); err != nil {
		in.t.Fatal(err)
	}
}

// freeBytes is the room left for an unprivileged writer on the filesystem of dir.
func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// trySend runs one transaction with DATA and returns the first reply that is not the expected
// one, or the reply to the end of data. A broken connection fails the test: the server must
// stay up whatever the disk does.
func trySend(c *testenv.Conn, rcpt string, body []byte) *smtp.Reply {
	c.T.Helper()
	for _, step := range []struct {
		line string
		code int
	}{{"MAIL FROM:<sender@example.org>", 250}, {"RCPT TO:<" + rcpt + ">", 250}, {"DATA", 354}} {
		c.Write(step.line + "\r\n")
		r, err := c.Read()
		if err != nil {
			c.T.Fatalf("%s: the server did not answer: %v", step.line, err)
		}
		if r.Code != step.code {
			c.Write("RSET\r\n")
			c.Expect(250)
			return r
		}
	}
	c.Write(string(body) + ".\r\n")
	r, err := c.Read()
	if err != nil {
		c.T.Fatalf("end of data: the server did not answer: %v", err)
	}
	return r
}

// TestDiskFullAnswers452AndRecovers fills the data directory's filesystem while messages of
// both storage paths (inside the database, and blob files) arrive.
func TestDiskFullAnswers452AndRecovers(t *testing.T) {
	t.Parallel()
	needRoot(t)
	mnt := mountTmpfs(t, "8m")
	in := newInstance(t) // after the mount: its cleanup (kill yubin) runs before the unmount
	in.patchConfig(`data_dir = "data"`, fmt.Sprintf("data_dir = %q", mnt))
	in.cli("", "domain", "add", "example.test")
	in.cli("secret-password\n", "account", "add", "user@example.test", "--password-stdin")
	in.start()

	const (
		small = 1 << 10   // stored inside the database
		large = 200 << 10 // larger than store.InlineMax: a blob file
		rcpt  = "user@example.test"
	)
	ledger := &crashLedger{msgs: map[string]*crashMsg{}}
	n := 0
	// send sends one message and records the outcome; a 5xx (nothing here is too large) or a
	// 4xx other than 452 4.3.1 / 451 4.3.0 is an error.
	send := func(c *testenv.Conn, size int) *smtp.Reply {
		t.Helper()
		n++
		tok := fmt.Sprintf("full-%d-%d", n, size)
		ledger.set(tok, size, notSent)
		r := trySend(c, rcpt, crashBody(tok, size))
		switch {
		case r.Code == 250:
			ledger.set(tok, size, acked)
		case r.Code == 452 && r.Enhanced == "4.3.1", r.Code == 451 && r.Enhanced == "4.3.0":
			ledger.set(tok, size, refused)
		default:
			ledger.set(tok, size, refused)
			t.Errorf("message %s (%d bytes): %s, want 250, 452 4.3.1 or 451 4.3.0", tok, size, r.Error())
		}
		return r
	}

	// With room to spare, both paths work.
	c := testenv.Dial(t, in.addr)
	c.Cmd("EHLO full.test", 250)
	for _, size := range []int{small, large} {
		if r := send(c, size); r.Code != 250 {
			t.Fatalf("a %d-byte message with an empty disk: %s\n%s", size, r.Error(), in.logText())
		}
	}

	// Fill the disk up to a little room: room for two or three large messages.
	const room = 600 << 10
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	fill := freeBytes(t, mnt) - room
	chunk := make([]byte, 1<<20)
	for left := fill; left > 0; left -= int64(len(chunk)) {
		if _, err := f.Write(chunk[:min(left, int64(len(chunk)))]); err != nil {
			t.Fatalf("writing the filler file: %v", err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("filler: %d KiB; %d KiB left", fill>>10, freeBytes(t, mnt)>>10)

	// Phase 1: small and large messages in turn until the server refuses one.
	deadline := time.Now().Add(30 * time.Second)
	var first *smtp.Reply
	acked1 := 0
	for i := 0; first == nil; i++ {
		if i == 200 || time.Now().After(deadline) {
			t.Fatalf("%d messages (%d acknowledged) with %d KiB of room and no refusal", i, acked1, room>>10)
		}
		size := small
		if i%2 == 1 {
			size = large
		}
		if r := send(c, size); r.Code == 250 {
			acked1++
		} else {
			first = r
			t.Logf("phase 1: %d acknowledged, then a %d-byte message got %s", acked1, size, r.Error())
		}
	}
	if acked1 == 0 {
		t.Errorf("no message was acknowledged with %d KiB of room", room>>10)
	}

	// Phase 2: the server answers the next sessions. Four at once (two with BDAT), so that
	// refusals also come out of a group commit whose batch failed; each goes on with small
	// messages until the database cannot grow either and it is refused.
	before := ledger.counts()[acked]
	refusals := make([]*smtp.Reply, 4)
	var wg sync.WaitGroup
	for s := range refusals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50 && refusals[s] == nil; i++ {
				connected, r := loadSession(in.addr, fmt.Sprintf("full2-s%d-%d", s, i), s%2 == 1, false, ledger)
				if !connected {
					return
				}
				refusals[s] = r
			}
		}()
	}
	wg.Wait()
	for s, r := range refusals {
		switch {
		case r == nil:
			t.Errorf("phase 2: session %d was never refused on a full disk", s)
		case !(r.Code == 452 && r.Enhanced == "4.3.1" || r.Code == 451 && r.Enhanced == "4.3.0"):
			t.Errorf("phase 2: session %d got %s, want 452 4.3.1 or 451 4.3.0", s, r.Error())
		}
	}
	t.Logf("phase 2: %d small messages acknowledged in 4 sessions, then each refused", ledger.counts()[acked]-before)
	c2 := testenv.Dial(t, in.addr)
	c2.Cmd("EHLO full2.test", 250)
	if r := send(c2, large); r.Code == 250 {
		t.Errorf("a large message was acknowledged on a disk that refused small ones")
	}
	c2.Cmd("NOOP", 250)
	c.Cmd("NOOP", 250) // the first session is still served too

	if !strings.Contains(in.logText(), "storage full") || !hasErrorLine(in.logText(), "storage full") {
		t.Errorf("the log has no error line about storage full:\n%s", tail(in.logText(), 20))
	}

	// Space returns: the next message of each kind is taken, without a restart.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{small, large} {
		if r := send(c2, size); r.Code != 250 {
			t.Errorf("a %d-byte message after space returned: %s, want 250\n%s", size, r.Error(), tail(in.logText(), 20))
		}
	}
	c3 := testenv.Dial(t, in.addr)
	c3.Cmd("EHLO after.test", 250)
	if r := send(c3, small); r.Code != 250 {
		t.Errorf("a new session after space returned: %s, want 250", r.Error())
	}
	c3.Cmd("QUIT", 221)

	// Stop gracefully: a crash earlier would show as a non-zero exit here.
	in.cmd.Process.Signal(syscall.SIGTERM)
	if err := in.cmd.Wait(); err != nil {
		t.Errorf("yubin exited with %v\n%s", err, tail(in.logText(), 20))
	}
	checkLedger(t, "after the disk was full", readMailbox(t, mnt, rcpt), ledger)

	// A refused message leaves no file behind: tmp/ is empty and blobs/ holds exactly the
	// acknowledged large messages.
	counts := map[msgState]int{}
	largeAcked := 0
	for _, m := range ledger.msgs {
		counts[m.state]++
		if m.state == acked && m.size == large {
			largeAcked++
		}
	}
	if tmp, _ := os.ReadDir(filepath.Join(mnt, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ holds %d files after a graceful stop", len(tmp))
	}
	blobs, _ := filepath.Glob(filepath.Join(mnt, "blobs", "*", "*"))
	if len(blobs) != largeAcked {
		t.Errorf("blobs/ holds %d files, want the %d acknowledged large messages", len(blobs), largeAcked)
	}
	t.Logf("%d messages: %d acknowledged (%d large), %d refused", len(ledger.msgs), counts[acked], largeAcked, counts[refused])
}

// hasErrorLine reports whether some log line at level ERROR contains s.
func hasErrorLine(log, s string) bool {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "level=ERROR") && strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
