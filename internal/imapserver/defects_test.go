package imapserver

// One test per go-imap v2.0.0-beta.8 defect that yubin works around (see the package
// comment), plus the abuse limits of the issue.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"yubin/internal/mailbox/mailtest"
)

func fill(ts *testServer, n int) {
	for i := 1; i <= n; i++ {
		ts.Deliver(ts.Account.ID, mailtest.Message(i, fmt.Sprintf("msg %d", i)))
	}
}

func joined(u []string) string { return strings.Join(u, "\n") }

// System flags go out in standard case (mbsync drops \seen), whatever case the client used.
func TestFlagsStandardCase(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	fill(ts, 1)
	cl := ts.loginTLS(t)
	cl.ok("SELECT INBOX")
	u := cl.ok(`STORE 1 +FLAGS (\seen \FLAGGED \answered \deleted \draft $Junk)`)
	if got := joined(u); !strings.Contains(got, `FLAGS (\Seen \Answered \Flagged \Deleted \Draft $Junk)`) {
		t.Errorf("STORE answer %q", got)
	}
	u = cl.ok("FETCH 1 FLAGS")
	if got := joined(u); !strings.Contains(got, `(\Seen \Answered \Flagged \Deleted \Draft $Junk)`) {
		t.Errorf("FETCH FLAGS %q", got)
	}
	u = cl.ok(`APPEND INBOX (\SEEN) {3}` + "\r\nx\r\n")
	u = cl.ok("FETCH 2 FLAGS")
	if got := joined(u); !strings.Contains(got, `FLAGS (\Seen)`) {
		t.Errorf("appended flags %q", got)
	}
	u = cl.ok(`STORE 1 +FLAGS (\Recent)`)
	if _, st := cl.cmd(`STORE 1 +FLAGS (\Bogus)`); !strings.HasPrefix(st, "BAD") {
		t.Errorf("unknown system flag: %s", st)
	}
}

// SPECIAL-USE attributes are kept: in LIST, in LIST (SPECIAL-USE), after RENAME, on CREATE.
func TestSpecialUse(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	cl := ts.loginTLS(t)
	u := cl.ok(`LIST "" *`)
	for _, want := range []string{`(\HasNoChildren \Sent) "/" "Sent"`, `\Drafts`, `\Trash`, `\Junk`, `\Archive`} {
		if !strings.Contains(joined(u), want) {
			t.Errorf("LIST lacks %s: %q", want, u)
		}
	}
	u = cl.ok(`LIST (SPECIAL-USE) "" *`)
	if len(u) != 5 || strings.Contains(joined(u), "INBOX") {
		t.Errorf("LIST (SPECIAL-USE): %q", u)
	}
	cl.ok(`RENAME Sent "Sent Items"`)
	u = cl.ok(`LIST "" "Sent Items"`)
	if !strings.Contains(joined(u), `\Sent`) {
		t.Errorf("special use lost on RENAME: %q", u)
	}
	cl.ok(`CREATE All (USE (\All))`)
	u = cl.ok(`LIST "" All`)
	if !strings.Contains(joined(u), `\All`) {
		t.Errorf("CREATE USE: %q", u)
	}
	if _, st := cl.cmd(`CREATE Bad (USE (\Bogus))`); !strings.Contains(st, "USEATTR") {
		t.Errorf("bad special use: %s", st)
	}
}

// After EXAMINE the mailbox is read-only: STORE, EXPUNGE, UID EXPUNGE, MOVE and COPY into
// it are refused (upstream #672), CLOSE expunges nothing, FETCH BODY[] does not set \Seen.
func TestExamineReadOnly(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	fill(ts, 2)
	cl := ts.loginTLS(t)
	cl.ok("SELECT INBOX")
	cl.ok(`STORE 1 +FLAGS (\Deleted)`)
	if u := cl.ok("EXAMINE INBOX"); !strings.Contains(joined(u), "PERMANENTFLAGS ()") {
		t.Errorf("EXAMINE: %q", u)
	}
	for _, c := range []string{`STORE 2 +FLAGS (\Seen)`, `UID STORE 2 FLAGS ()`, "EXPUNGE", "UID EXPUNGE 1", "MOVE 1 Trash", "UID MOVE 1 Trash", "COPY 1 INBOX"} {
		if _, st := cl.cmd("%s", c); !strings.HasPrefix(st, "NO") {
			t.Errorf("%s after EXAMINE: %s", c, st)
		}
	}
	cl.ok("COPY 2 Archive") // copying out of a read-only mailbox is fine
	cl.ok("FETCH 2 BODY[]")
	cl.ok("CLOSE")
	cl.ok("SELECT INBOX")
	u := cl.ok("FETCH 1:* FLAGS")
	if len(u) != 2 || strings.Contains(u[1], `\Seen`) || !strings.Contains(u[0], `\Deleted`) {
		t.Errorf("after EXAMINE session: %q", u)
	}
}

// EXPUNGE numbers after MOVE and EXPUNGE are right in the moving session and in another
// session that has the mailbox selected (the reference backend's MOVE sends wrong ones).
func TestExpungeNumbers(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	fill(ts, 6)
	a := ts.loginTLS(t)
	a.ok("SELECT INBOX")
	b := ts.loginTLS(t)
	b.ok("SELECT INBOX")

	// MOVE of messages 2, 4 and 5: EXPUNGE in descending order, each valid when sent.
	u := a.ok("MOVE 2,4:5 Trash")
	var exp []string
	for _, l := range u {
		if strings.HasSuffix(l, "EXPUNGE") {
			exp = append(exp, l)
		}
	}
	if got := strings.Join(exp, ","); got != "* 5 EXPUNGE,* 4 EXPUNGE,* 2 EXPUNGE" {
		t.Errorf("MOVE expunges %s (all %q)", got, u)
	}
	if !strings.Contains(joined(u), "COPYUID") {
		t.Errorf("MOVE without COPYUID: %q", u)
	}
	// b learns of it on its next command, with its own numbers.
	u = b.ok("NOOP")
	if got := joined(u); got != "* 5 EXPUNGE\n* 4 EXPUNGE\n* 2 EXPUNGE" {
		t.Errorf("other session: %q", u)
	}
	// FETCH may not send EXPUNGE (RFC 9051 7.5.1): b keeps the numbers until NOOP.
	a.ok(`STORE 1 +FLAGS (\Deleted)`)
	a.ok("EXPUNGE")
	u = b.ok("FETCH 1:* UID")
	if strings.Contains(joined(u), "EXPUNGE") || len(u) != 2 {
		t.Errorf("FETCH after another's EXPUNGE: %q", u)
	}
	u = b.ok("NOOP")
	if joined(u) != "* 1 EXPUNGE" {
		t.Errorf("NOOP after another's EXPUNGE: %q", u)
	}
	u = b.ok("FETCH 1:* UID")
	if joined(u) != "* 1 FETCH (UID 3)\n* 2 FETCH (UID 6)" {
		t.Errorf("final view %q", u)
	}
}

// APPEND checks the literal's length: a connection that ends inside the literal stores
// nothing (upstream #650).
func TestAppendTruncated(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	cl := ts.loginTLS(t)
	cl.write("a1 APPEND INBOX {100+}\r\nSubject: cut short\r\n\r\nonly part")
	time.Sleep(100 * time.Millisecond)
	cl.c.Close()
	// The session is gone; a new one sees an empty INBOX.
	time.Sleep(200 * time.Millisecond)
	cl = dialTLS(t, ts.Implicit)
	cl.login()
	if u := cl.ok("STATUS INBOX (MESSAGES)"); !strings.Contains(joined(u), "MESSAGES 0") {
		t.Errorf("truncated APPEND stored: %q", u)
	}
	// A complete APPEND works and is durable before OK.
	u := cl.ok("APPEND INBOX {12+}\r\nSubject: x\r\n\r\n")
	_ = u
	if u := cl.ok("STATUS INBOX (MESSAGES)"); !strings.Contains(joined(u), "MESSAGES 1") {
		t.Errorf("complete APPEND: %q", u)
	}
}

// UID COPY and UID MOVE of UIDs that no longer exist answer OK without COPYUID (a COPYUID
// with an empty set garbles the stream).
func TestCopyVanishedUIDs(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	fill(ts, 2)
	cl := ts.loginTLS(t)
	cl.ok("SELECT INBOX")
	for _, c := range []string{"UID COPY 50:60 Trash", "UID MOVE 50:60 Trash", "UID COPY 7 Trash"} {
		u, st := cl.cmd("%s", c)
		if !strings.HasPrefix(st, "OK") || strings.Contains(st, "COPYUID") || strings.Contains(joined(u), "COPYUID") {
			t.Errorf("%s: %q %s", c, u, st)
		}
	}
	// The stream is still in step.
	if u := cl.ok("UID COPY 1:2 Trash"); len(u) != 0 {
		t.Errorf("untagged %q", u)
	}
	if _, st := cl.cmd("UID COPY 1 Nowhere"); !strings.Contains(st, "TRYCREATE") {
		t.Errorf("copy to missing mailbox: %s", st)
	}
}

// A LIST pattern that makes a backtracking matcher spin is answered at once.
func TestListPathologicalPattern(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	cl := ts.loginTLS(t)
	name := strings.Repeat("a", 200)
	cl.ok("CREATE %s", name)
	done := make(chan struct{})
	go func() {
		defer close(done)
		u, st := cl.cmd(`LIST "" "*a*a*a*a*a*a*a*a*a*a*a*a*b"`)
		if !strings.HasPrefix(st, "OK") || len(u) != 0 {
			t.Errorf("LIST: %q %s", u, st)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("LIST with a pathological pattern did not finish")
	}
}

// Changes between IDLE's DONE and the next IDLE are announced when the next IDLE starts
// (upstream #767).
func TestIdleBetweenIdles(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	fill(ts, 1)
	cl := ts.loginTLS(t)
	cl.ok("SELECT INBOX")
	cl.write("i1 IDLE\r\n")
	if l := cl.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	cl.write("DONE\r\n")
	cl.until("i1")
	ts.Deliver(ts.Account.ID, mailtest.Message(2, "between"))
	// Another session changes a flag too.
	o := ts.loginTLS(t)
	o.ok("SELECT INBOX")
	o.ok(`STORE 1 +FLAGS (\Flagged)`)
	cl.write("i2 IDLE\r\n")
	got := []string{cl.line(), cl.line(), cl.line()}
	if !strings.HasPrefix(got[0], "+") || !strings.Contains(joined(got), "* 2 EXISTS") || !strings.Contains(joined(got), `FLAGS (\Flagged)`) {
		t.Errorf("second IDLE: %q", got)
	}
	cl.write("DONE\r\n")
	cl.until("i2")
}

// IDLE wakes on a delivery within a second.
func TestIdleWakeUp(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	cl := ts.loginTLS(t)
	cl.ok("SELECT INBOX")
	cl.write("i1 IDLE\r\n")
	cl.line()
	start := time.Now()
	ts.Deliver(ts.Account.ID, mailtest.Message(1, "wake"))
	cl.c.SetReadDeadline(time.Now().Add(time.Second))
	l, err := cl.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(l, "* 1 EXISTS") {
		t.Fatalf("IDLE after %v: %q %v", time.Since(start), l, err)
	}
	cl.write("DONE\r\n")
	cl.until("i1")
}

// A non-synchronizing literal that go-imap refuses would have its bytes run as commands:
// the connection is closed instead, and nothing in the literal is executed.
func TestLiteralPlusOverLimit(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	cl := ts.loginTLS(t)
	smuggled := "x CREATE Smuggled\r\n"
	payload := smuggled + strings.Repeat("y", 5000-len(smuggled))
	cl.write("a1 LOGIN {5000+}\r\n" + payload + " pass\r\n")
	got := cl.expectClosed()
	if !strings.Contains(joined(got), "BYE") {
		t.Errorf("no BYE: %q", got)
	}
	// Over the APPEND limit too.
	ts2 := startServer(t, func(s *Server) { s.Limits.MaxAppendSize = 1000 })
	cl = dialTLS(t, ts2.Implicit)
	cl.login()
	cl.write("a1 APPEND INBOX {2000+}\r\n" + "x CREATE Smuggled2\r\n" + strings.Repeat("z", 2000-20) + "\r\n")
	cl.expectClosed()
	for _, ts := range []*testServer{ts, ts2} {
		cl = dialTLS(t, ts.Implicit)
		cl.login()
		if u := cl.ok(`LIST "" Smuggled*`); len(u) != 0 {
			t.Errorf("literal bytes were executed: %q", u)
		}
	}
	// A synchronizing literal over the limit is refused and the session goes on.
	cl = dialTLS(t, ts2.Implicit)
	cl.login()
	if _, st := cl.cmd("APPEND INBOX {2000}"); !strings.Contains(st, "TOOBIG") {
		t.Errorf("sync literal over the limit: %s", st)
	}
	cl.ok("NOOP")
	// A non-synchronizing literal where the grammar has none is refused too.
	cl.write("a2 NOOP {5+}\r\nx\r\nyz")
	cl.expectClosed()
	// Within limits, literals work (LITERAL+ and synchronizing).
	cl = dialTLS(t, ts.Implicit)
	cl.write("a3 LOGIN {17+}\r\nuser@example.test {" + fmt.Sprint(len(mailtest.Password)) + "}\r\n")
	if l := cl.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("sync literal: %q", l)
	}
	cl.write(mailtest.Password + "\r\n")
	if _, st := cl.until("a3"); !strings.HasPrefix(st, "OK") {
		t.Errorf("login with literals: %s", st)
	}
}

// Malformed commands get BAD and the session goes on; a too-long line is refused without
// being kept, and the session goes on.
func TestBadInput(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	fill(ts, 1)
	cl := ts.loginTLS(t)
	cl.ok("SELECT INBOX")
	for _, c := range []string{"FETCH", "FETCH 1 (BOGUS)", "STORE 1 FOO (x)", "UID", "LIST", "BOGUSCOMMAND", "SELECT"} {
		if _, st := cl.cmd("%s", c); !strings.HasPrefix(st, "BAD") {
			t.Errorf("%q: %s", c, st)
		}
	}
	// go-imap answers a bad sequence set or SEARCH key with NO [SERVERBUG]; the session
	// goes on.
	for _, c := range []string{"SEARCH BOGUSKEY", "FETCH x:y FLAGS"} {
		if _, st := cl.cmd("%s", c); strings.HasPrefix(st, "OK") {
			t.Errorf("%q: %s", c, st)
		}
	}
	// Lines without a tag, or empty, are answered and skipped (go-imap would hang up).
	cl.write("\r\n")
	if l := cl.line(); !strings.HasPrefix(l, "* BAD") {
		t.Errorf("empty line: %q", l)
	}
	cl.write("(bad\r\n")
	if l := cl.line(); !strings.HasPrefix(l, "* BAD") {
		t.Errorf("line without tag: %q", l)
	}
	// A synchronizing literal past go-imap's 4096 bytes is refused; the session goes on.
	if _, st := cl.cmd("LIST \"\" {5000}"); !strings.Contains(st, "TOOBIG") {
		t.Errorf("big sync literal: %s", st)
	}
	cl.write("long FETCH 1 " + strings.Repeat("(", 100000) + "\r\n")
	if _, st := cl.until("long"); !strings.HasPrefix(st, "BAD") || !strings.Contains(st, "too long") {
		t.Errorf("long line: %s", st)
	}
	if u := cl.ok("FETCH 1 UID"); joined(u) != "* 1 FETCH (UID 1)" {
		t.Errorf("after long line: %q", u)
	}
	// Before login an unknown command ends the session (go-imap's cross-protocol defence).
	cl = dialTLS(t, ts.Implicit)
	cl.write("GET / HTTP/1.1\r\n")
	cl.expectClosed()
}

// Connections are capped per IP and in total; the refused one gets BYE [UNAVAILABLE].
func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(s *Server) { s.Limits.MaxConnectionsPerIP = 2 })
	a := dial(t, ts.Plain)
	b := dial(t, ts.Plain)
	c, err := net.Dial("tcp", ts.Plain)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	greet, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(greet), "* BYE [UNAVAILABLE]") {
		t.Errorf("third connection: %q", greet)
	}
	a.ok("LOGOUT")
	a.c.Close()
	b.ok("NOOP")
	// The slot is free again once the first session has ended, which the server notices a
	// moment after the client closed: retry until the greeting is OK (bounded).
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", ts.Plain, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		g, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if strings.HasPrefix(g, "* OK") {
			break
		}
		if !strings.HasPrefix(g, "* BYE [UNAVAILABLE]") || time.Now().After(deadline) {
			t.Fatalf("slot not released: greeting %q", g)
		}
		time.Sleep(20 * time.Millisecond)
	}

	ts = startServer(t, func(s *Server) { s.Limits.MaxConnections = 1 })
	dialTLS(t, ts.Implicit)
	c2, err := net.Dial("tcp", ts.Plain)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	greet, _ = io.ReadAll(c2)
	if !strings.HasPrefix(string(greet), "* BYE [UNAVAILABLE]") {
		t.Errorf("over the total: %q", greet)
	}
}

// Failed logins count against the shared brute-force guard: after the limit, even the right
// password gets NO [UNAVAILABLE].
func TestLoginGuard(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	cl := dialTLS(t, ts.Implicit)
	for i := range 10 {
		_, st := cl.cmd(`LOGIN user@example.test wrong%d`, i)
		if !strings.Contains(st, "AUTHENTICATIONFAILED") {
			t.Fatalf("attempt %d: %s", i, st)
		}
	}
	_, st := cl.cmd(`LOGIN user@example.test "%s"`, mailtest.Password)
	if !strings.Contains(st, "UNAVAILABLE") {
		t.Errorf("locked out login: %s", st)
	}
	// AUTHENTICATE PLAIN goes through the same guard.
	_, st = cl.cmd("AUTHENTICATE PLAIN AHVzZXJAZXhhbXBsZS50ZXN0AHdyb25n")
	if !strings.HasPrefix(st, "NO") {
		t.Errorf("AUTHENTICATE while locked out: %s", st)
	}
}

// Before TLS on the STARTTLS port, LOGIN and AUTHENTICATE are refused and LOGINDISABLED is
// advertised; STARTTLS ignores what the client pipelined after it.
func TestStartTLS(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	cl := dial(t, ts.Plain)
	u := cl.ok("CAPABILITY")
	if !strings.Contains(joined(u), "STARTTLS") || !strings.Contains(joined(u), "LOGINDISABLED") || strings.Contains(joined(u), "AUTH=") {
		t.Errorf("CAPABILITY before TLS: %q", u)
	}
	if _, st := cl.cmd(`LOGIN user@example.test "%s"`, mailtest.Password); !strings.Contains(st, "PRIVACYREQUIRED") {
		t.Errorf("LOGIN in clear text: %s", st)
	}
	// Command injection: a command pipelined after STARTTLS must not run.
	cl.write("s1 STARTTLS\r\ns2 CREATE Injected\r\n")
	if l := cl.line(); !strings.HasPrefix(l, "s1 OK") {
		t.Fatalf("STARTTLS: %q", l)
	}
	// The injected bytes are fed to the TLS handshake, which fails.
	cl.expectClosed()

	cl = dial(t, ts.Plain)
	cl.ok("STARTTLS")
	cl.upgrade()
	u = cl.ok("CAPABILITY")
	if strings.Contains(joined(u), "LOGINDISABLED") || strings.Contains(joined(u), "STARTTLS") || !strings.Contains(joined(u), "AUTH=PLAIN") {
		t.Errorf("CAPABILITY after TLS: %q", u)
	}
	cl.login()
	if u := cl.ok(`LIST "" Injected`); len(u) != 0 {
		t.Errorf("injected command ran: %q", u)
	}
}
