package main

// Black-box tests of "yubin sendmail", the command that cron, git and scripts run as
// /usr/sbin/sendmail: the built binary hands a message to a running "yubin serve" over the
// local submission socket, and the test reads what was stored.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// sendmailResult is what one run of the sendmail command did.
type sendmailResult struct {
	code           int
	stdout, stderr string
}

// runSendmail runs bin with args, the message on standard input and env added to the
// environment. A deadline turns a hang into a failure that says so.
func runSendmail(t *testing.T, bin string, env []string, stdin string, args ...string) sendmailResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %q did not finish within 30s (killed); stderr: %q", filepath.Base(bin), args, stderr.String())
	}
	r := sendmailResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

// sendmail runs "yubin sendmail --config CFG args..." with the message on standard input.
func (in *instance) sendmail(stdin string, args ...string) sendmailResult {
	in.t.Helper()
	return runSendmail(in.t, in.bin, nil, stdin, append([]string{"sendmail", "--config", in.config}, args...)...)
}

// mustSend runs sendmail and fails unless it exits 0 and prints nothing, as sendmail does.
func (in *instance) mustSend(stdin string, args ...string) {
	in.t.Helper()
	if r := in.sendmail(stdin, args...); r.code != 0 || r.stdout != "" || r.stderr != "" {
		in.t.Fatalf("yubin sendmail %q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
	}
}

// show returns a stored message, as "yubin mail show" prints it.
func (in *instance) show(addr, uid string) string {
	in.t.Helper()
	return in.cli("", "mail", "show", addr, uid)
}

// mailCount is the number of messages in an account's INBOX.
func (in *instance) mailCount(addr string) int {
	in.t.Helper()
	out := in.cli("", "mail", "list", addr)
	return len(regexp.MustCompile(`(?m)^\d+ `).FindAllString(out, -1))
}

// localUserAddr is the envelope sender sendmail uses without -f: the user running it, at the
// server's hostname.
func localUserAddr(t *testing.T) string {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username + "@mx.test"
}

func TestSendmailDelivers(t *testing.T) {
	t.Parallel()
	in := newInstance(t)
	in.start()
	// A script's message: LF line endings, no From, no Message-ID, no Date.
	in.mustSend("Subject: from a script\n\nhello\n..two dots stay\n", "user@example.test")
	got := in.show("user@example.test", "1")
	sender := localUserAddr(t)
	if !strings.HasPrefix(got, "Return-Path: <"+sender+">\r\n") {
		t.Errorf("Return-Path is not the local user <%s>:\n%s", sender, got)
	}
	if !strings.Contains(got, "\r\nFrom: "+sender+"\r\nSubject: from a script\r\n") && !strings.Contains(got, "\r\nFrom: <"+sender+">\r\nSubject: from a script\r\n") {
		t.Errorf("no From header for the local user added before the message's own header:\n%s", got)
	}
	if !strings.HasSuffix(got, "\r\n\r\nhello\r\n..two dots stay\r\n") {
		t.Errorf("body not stored as given, with CRLF line endings:\n%q", got)
	}
}

// TestSendmailAddsMessageIDAndDate: cron and many scripts write neither header. The local
// socket is a submission path like 587 (RFC 6409 8: the submission server adds a missing
// Message-ID and Date), and mail without them is refused or marked as spam by large providers.
func TestSendmailAddsMessageIDAndDate(t *testing.T) {
	t.Parallel()
	in := newInstance(t)
	in.start()
	in.mustSend("Subject: cron output\n\nbackup done\n", "user@example.test")
	in.mustSend("Subject: with ids\nMessage-ID: <own@script.test>\nDate: Mon, 02 Jan 2006 15:04:05 +0000\n\nkept\n", "user@example.test")
	got := in.show("user@example.test", "1")
	if !regexp.MustCompile(`\r\nMessage-ID: <[^<>@\s]+@mx\.test>\r\n`).MatchString(got) {
		t.Errorf("no Message-ID added to a message without one:\n%s", got)
	}
	if !regexp.MustCompile(`\r\nDate: [^\r\n]+\r\n`).MatchString(got) {
		t.Errorf("no Date added to a message without one:\n%s", got)
	}
	got = in.show("user@example.test", "2")
	if strings.Count(got, "Message-ID:") != 1 || !strings.Contains(got, "\r\nMessage-ID: <own@script.test>\r\n") ||
		strings.Count(got, "\r\nDate:") != 1 || !strings.Contains(got, "\r\nDate: Mon, 02 Jan 2006 15:04:05 +0000\r\n") {
		t.Errorf("the message's own Message-ID and Date were not kept alone:\n%s", got)
	}
}

// TestSendmailHeaderOptions: -t takes the recipients from To, Cc and Bcc and removes Bcc;
// -f sets the envelope sender (Return-Path); -F names the From header sendmail adds when the
// message has none, and leaves an existing From alone.
func TestSendmailHeaderOptions(t *testing.T) {
	t.Parallel()
	in := newInstance(t)
	in.cli("", "account", "add", "cc@example.test")
	in.cli("", "account", "add", "hidden@example.test")
	in.start()
	in.mustSend("To: User <user@example.test>\nCc: cc@example.test\nBcc: hidden@example.test\nSubject: -t\n\nto three\n",
		"-t", "-f", "user@example.test", "-F", "Full Name")
	for _, rcpt := range []string{"user@example.test", "cc@example.test", "hidden@example.test"} {
		got := in.show(rcpt, "1")
		if !strings.HasPrefix(got, "Return-Path: <user@example.test>\r\n") {
			t.Errorf("%s: -f did not set the Return-Path:\n%s", rcpt, got)
		}
		if !strings.Contains(got, "\r\nFrom: \"Full Name\" <user@example.test>\r\nTo: User <user@example.test>\r\nCc: cc@example.test\r\nSubject: -t\r\n") {
			t.Errorf("%s: header not From (from -F and -f), To, Cc, Subject:\n%s", rcpt, got)
		}
		if strings.Contains(strings.ToLower(got), "\nbcc:") || strings.Contains(got, "hidden@") && rcpt != "hidden@example.test" {
			t.Errorf("%s: the Bcc header (or the hidden recipient) is in the stored message:\n%s", rcpt, got)
		}
	}

	// An existing From is kept as written; -f in its attached form still sets the envelope.
	in.mustSend("From: Someone <someone@example.org>\nSubject: own from\n\nx\n", "-fbounces@example.test", "-F", "Ignored Name", "user@example.test")
	got := in.show("user@example.test", "2")
	if !strings.HasPrefix(got, "Return-Path: <bounces@example.test>\r\n") {
		t.Errorf("-fADDRESS did not set the Return-Path:\n%s", got)
	}
	if strings.Count(got, "From:") != 1 || !strings.Contains(got, "\r\nFrom: Someone <someone@example.org>\r\n") {
		t.Errorf("the message's own From was not kept alone:\n%s", got)
	}
}

// TestSendmailDotLine: without -i a line holding a single dot ends the message (traditional
// sendmail); with -i or -oi it is part of the message.
func TestSendmailDotLine(t *testing.T) {
	t.Parallel()
	in := newInstance(t)
	in.start()
	msg := "Subject: dots\n\nbefore\n.\nafter\n"
	in.mustSend(msg, "user@example.test")
	in.mustSend(msg, "-i", "user@example.test")
	in.mustSend(msg, "-oi", "user@example.test")
	if got := in.show("user@example.test", "1"); !strings.HasSuffix(got, "\r\n\r\nbefore\r\n") {
		t.Errorf("without -i the message did not end at the dot line:\n%q", got)
	}
	for _, uid := range []string{"2", "3"} {
		if got := in.show("user@example.test", uid); !strings.HasSuffix(got, "\r\n\r\nbefore\r\n.\r\nafter\r\n") {
			t.Errorf("message %s: with -i/-oi the dot line did not stay in the message:\n%q", uid, got)
		}
	}
}

// TestSendmailRemoteRecipient: the local socket may relay (like Postfix's sendmail), so a
// recipient on another domain is queued, in the same transaction as a local one.
func TestSendmailRemoteRecipient(t *testing.T) {
	t.Parallel()
	in := newInstance(t)
	in.start()
	in.mustSend("Subject: out\n\nto a local and a remote recipient\n", "-f", "user@example.test", "user@example.test", "someone@remote.test")
	if n := in.mailCount("user@example.test"); n != 1 {
		t.Errorf("the local recipient has %d messages, want 1", n)
	}
	out := in.cli("", "queue", "list")
	if !strings.Contains(out, "someone@remote.test") || !strings.HasSuffix(out, "\n1 entry\n") {
		t.Errorf("the remote recipient is not the one queue entry:\n%s", out)
	}
}

// TestSendmailAsSymlink: installed as /usr/sbin/sendmail (a link to yubin), the program is
// the sendmail command by its name alone, here with the command line cron uses.
func TestSendmailAsSymlink(t *testing.T) {
	t.Parallel()
	in := newInstance(t)
	in.start()
	link := filepath.Join(t.TempDir(), "sendmail")
	if err := os.Symlink(in.bin, link); err != nil {
		t.Fatal(err)
	}
	r := runSendmail(t, link, []string{"YUBIN_CONFIG=" + in.config}, "Subject: Cron <root@host> backup\n\nbackup done\n",
		"-FCronDaemon", "-i", "-B8BITMIME", "-oem", "user@example.test")
	if r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Fatalf("sendmail (link): exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runSendmail(t, link, nil, "Subject: git\n\npatch\n", "-C", in.config, "-i", "-f", "user@example.test", "user@example.test")
	if r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Fatalf("sendmail -C (link): exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	got := in.show("user@example.test", "1")
	if !strings.Contains(got, "\r\nFrom: \"CronDaemon\" <"+localUserAddr(t)+">\r\nSubject: Cron <root@host> backup\r\n") {
		t.Errorf("message sent through the link lacks the From named by -F:\n%s", got)
	}
	if got := in.show("user@example.test", "2"); !strings.HasPrefix(got, "Return-Path: <user@example.test>\r\n") || !strings.HasSuffix(got, "\r\n\r\npatch\r\n") {
		t.Errorf("message sent through the link with -C:\n%s", got)
	}
}

// TestSendmailServerNotRunning: nothing is dropped silently; the exit code is EX_TEMPFAIL (75),
// which cron and git report, and standard error says the message was not sent.
func TestSendmailServerNotRunning(t *testing.T) {
	t.Parallel()
	in := newInstance(t) // not started
	r := in.sendmail("Subject: lost?\n\nx\n", "user@example.test")
	if r.code != 75 {
		t.Errorf("exit code %d, want 75 (EX_TEMPFAIL)", r.code)
	}
	if !strings.Contains(r.stderr, "NOT sent") || r.stdout != "" {
		t.Errorf("stderr %q (want it to say the message was NOT sent), stdout %q", r.stderr, r.stdout)
	}
	if n := in.mailCount("user@example.test"); n != 0 {
		t.Errorf("%d messages stored although the server was not running", n)
	}
}

// TestSendmailUnknownUser: a local recipient that does not exist is EX_NOUSER (67), the error
// names it, and the message goes to nobody (it says NOT sent, so the other recipient must not
// get it either).
func TestSendmailUnknownUser(t *testing.T) {
	t.Parallel()
	in := newInstance(t)
	in.start()
	r := in.sendmail("Subject: typo\n\nx\n", "user@example.test", "nobody@example.test")
	if r.code != 67 {
		t.Errorf("exit code %d, want 67 (EX_NOUSER); stderr %q", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "nobody@example.test") || r.stdout != "" {
		t.Errorf("stderr does not name the recipient: %q (stdout %q)", r.stderr, r.stdout)
	}
	if strings.Contains(r.stderr, "NOT sent") {
		if n := in.mailCount("user@example.test"); n != 0 {
			t.Errorf("sendmail said NOT sent, but user@example.test got %d messages", n)
		}
	}
}
