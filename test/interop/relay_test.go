package interop

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"yubin/internal/config"
	"yubin/internal/testenv"
)

// twoYubins starts a destination yubin hosting remote.test (account bob@remote.test) and a
// sending yubin whose fake DNS points remote.test's MX at the destination.
func twoYubins(t *testing.T) (sender, dest *testenv.Yubin) {
	t.Helper()
	dest = testenv.Start(t)
	dest.AddDomain("remote.test")
	dest.AddAccount("bob@remote.test", "password456")
	_, port, _ := net.SplitHostPort(dest.Addr)
	p, _ := strconv.Atoi(port)
	sender = testenv.Start(t, func(c *config.Config) {
		c.Relay.Port = p
		c.Relay.RetryFirst = config.Duration(time.Second)
	})
	sender.DNS.AddMX("remote.test", 10, "mx.remote.test")
	sender.DNS.AddA("mx.remote.test", "127.0.0.1")
	return sender, dest
}

// waitFor polls until cond holds (bounded; not a timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRelayBetweenYubins: a submission to a remote domain is relayed over SMTP (MX lookup in
// the fake DNS, STARTTLS) to the destination's INBOX, byte for byte, and leaves the queue.
func TestRelayBetweenYubins(t *testing.T) {
	t.Parallel()
	sender, dest := twoYubins(t)
	c := testenv.Dial(t, sender.SubmissionAddr)
	c.Cmd("EHLO client.test", 250)
	c.StartTLS()
	c.Cmd("EHLO client.test", 250)
	c.CmdEnh("AUTH PLAIN AHVzZXJAZXhhbXBsZS50ZXN0AHBhc3N3b3JkMTIz", 235, "2.7.0") // user@example.test / password123
	// With its own Date and Message-ID, the submission adds no header to the content.
	content := append([]byte("Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n"), message("relayed", dotBody...)...)
	if r := c.Send("user@example.test", []string{"bob@remote.test"}, string(bytes.ReplaceAll(content, []byte("\r\n."), []byte("\r\n..")))+".\r\n"); r.Code != 250 {
		t.Fatalf("submission: %s", r.Error())
	}
	waitFor(t, "delivery at the destination", func() bool { return len(dest.Messages("bob@remote.test", "INBOX")) == 1 })
	got := dest.Messages("bob@remote.test", "INBOX")[0]
	if !bytes.HasSuffix(got, content) {
		t.Errorf("relayed content differs; got:\n%s", got)
	}
	for _, want := range []string{"Return-Path: <user@example.test>\r\n", "by mx.test (yubin) with ESMTPSA", "with ESMTPS"} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("relayed message lacks %q:\n%s", want, got)
		}
	}
	if bytes.Count(got, []byte("Return-Path:")) != 1 {
		t.Errorf("the sender's Return-Path line was relayed too:\n%s", got)
	}
	waitFor(t, "the queue to empty", func() bool {
		n, _ := sender.App.Store.QueueLen(context.Background())
		return n == 0
	})
}

// TestBounceFromRemote: the destination refuses the recipient (550 5.1.1); the sender gets
// an RFC 3464 bounce in its INBOX, from the null sender, naming the recipient and the reply.
func TestBounceFromRemote(t *testing.T) {
	t.Parallel()
	sender, _ := twoYubins(t)
	// Local programs may relay (sendmail's socket); it is the shortest way to queue a message.
	nc, err := net.Dial("unix", sender.Cfg.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	c := testenv.Wrap(t, nc)
	c.Expect(220)
	c.Cmd("EHLO localhost", 250)
	if r := c.Send("user@example.test", []string{"nobody@remote.test"}, "Subject: to nobody\r\n\r\nhello\r\n.\r\n"); r.Code != 250 {
		t.Fatalf("submit: %s", r.Error())
	}
	waitFor(t, "the bounce", func() bool { return len(sender.Messages("user@example.test", "INBOX")) == 1 })
	b := string(sender.Messages("user@example.test", "INBOX")[0])
	for _, want := range []string{
		"Return-Path: <>\r\n",
		"multipart/report",
		"report-type=delivery-status",
		"nobody@remote.test",
		"Status: 5.1.1",
		"Action: failed",
		"550 5.1.1",
		"Subject: to nobody",
	} {
		if !strings.Contains(b, want) {
			t.Errorf("bounce lacks %q:\n%s", want, b)
		}
	}
}
