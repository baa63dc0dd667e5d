package smtpserver_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"yubin/internal/config"
	"yubin/internal/testenv"
)

func plain(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// submit dials the STARTTLS submission listener, upgrades and authenticates as user.
func submit(t *testing.T, y *testenv.Yubin) *testenv.Conn {
	t.Helper()
	c := testenv.Dial(t, y.SubmissionAddr)
	c.Cmd("EHLO client.test", 250)
	c.StartTLS()
	c.Cmd("EHLO client.test", 250)
	c.CmdEnh("AUTH PLAIN "+plain("user@example.test", "password123"), 235, "2.7.0")
	return c
}

func TestSubmissionNeedsTLSThenAuth(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)
	c := testenv.Dial(t, y.SubmissionAddr)
	r := c.Cmd("EHLO client.test", 250)
	if ehlo := strings.Join(r.Lines, "\n"); strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Fatalf("before TLS: EHLO must offer STARTTLS and no AUTH:\n%s", ehlo)
	}
	c.CmdEnh("AUTH PLAIN "+plain("user@example.test", "password123"), 538, "5.7.11")
	c.CmdEnh("MAIL FROM:<user@example.test>", 530, "5.7.0")
	c.StartTLS()
	r = c.Cmd("EHLO client.test", 250)
	if ehlo := strings.Join(r.Lines, "\n"); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") || strings.Contains(ehlo, "STARTTLS") {
		t.Fatalf("after TLS: EHLO must offer AUTH and no STARTTLS:\n%s", ehlo)
	}
	c.CmdEnh("MAIL FROM:<user@example.test>", 530, "5.7.0")
	c.CmdEnh("AUTH PLAIN "+plain("user@example.test", "password123"), 235, "2.7.0")
	c.CmdEnh("AUTH PLAIN "+plain("user@example.test", "password123"), 503, "5.5.1")
	c.CmdEnh("MAIL FROM:<user@example.test>", 250, "2.1.0")
	c.CmdEnh("AUTH LOGIN", 503, "5.5.1")

	// The MX listener never offers AUTH.
	mx := session(t, y)
	mx.CmdEnh("AUTH PLAIN "+plain("user@example.test", "password123"), 503, "5.5.1")
}

func TestAuthReplies(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)
	y.SetAppPassword("user@example.test", "phone", "app-secret-1")
	tlsSession := func() *testenv.Conn {
		c := testenv.DialTLS(t, y.SubmissionsAddr) // implicit TLS: AUTH right away
		c.Cmd("EHLO client.test", 250)
		return c
	}
	cases := []struct {
		name  string
		steps []string // command, then responses to 334 challenges
		code  int
		enh   string
	}{
		{"plain initial", []string{"AUTH PLAIN " + plain("user@example.test", "password123")}, 235, "2.7.0"},
		{"plain case-insensitive user", []string{"AUTH PLAIN " + plain("USER@Example.Test", "password123")}, 235, "2.7.0"},
		{"plain challenge", []string{"AUTH PLAIN", plain("user@example.test", "password123")}, 235, "2.7.0"},
		{"login", []string{"AUTH LOGIN", b64("user@example.test"), b64("password123")}, 235, "2.7.0"},
		{"login initial", []string{"AUTH LOGIN " + b64("user@example.test"), b64("password123")}, 235, "2.7.0"},
		{"app password", []string{"AUTH PLAIN " + plain("user@example.test", "app-secret-1")}, 235, "2.7.0"},
		{"wrong password", []string{"AUTH PLAIN " + plain("user@example.test", "nope")}, 535, "5.7.8"},
		{"unknown user", []string{"AUTH PLAIN " + plain("nobody@example.test", "password123")}, 535, "5.7.8"},
		{"other authzid", []string{"AUTH PLAIN " + b64("postmaster@example.test\x00user@example.test\x00password123")}, 535, "5.7.8"},
		{"bad base64", []string{"AUTH PLAIN !!!"}, 501, "5.5.2"},
		{"bad base64 later", []string{"AUTH LOGIN", "%%%"}, 501, "5.5.2"},
		{"cancel", []string{"AUTH LOGIN", "*"}, 501, "5.5.2"},
		{"malformed plain", []string{"AUTH PLAIN " + b64("no-nul-bytes")}, 501, "5.5.2"},
		{"unknown mechanism", []string{"AUTH CRAM-MD5"}, 504, "5.5.4"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tlsSession()
			for i, s := range tc.steps {
				c.Write(s + "\r\n")
				r, err := c.Read()
				if err != nil {
					t.Fatal(err)
				}
				if i < len(tc.steps)-1 {
					if r.Code != 334 {
						t.Fatalf("step %d: %s, want 334", i, r.Error())
					}
					continue
				}
				if r.Code != tc.code || r.Enhanced != tc.enh {
					t.Fatalf("got %s, want %d %s", r.Error(), tc.code, tc.enh)
				}
			}
		})
	}
	// A revoked app password no longer works.
	if err := y.App.Store.RemoveAppPassword(context.Background(), "user@example.test", "phone"); err != nil {
		t.Fatal(err)
	}
	c := tlsSession()
	c.CmdEnh("AUTH PLAIN "+plain("user@example.test", "app-secret-1"), 535, "5.7.8")
}

// TestBruteForce: failures from one address lock it out (454 4.7.0), even for the right
// password, while another address logs in normally.
func TestBruteForce(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t, func(c *config.Config) {
		c.Auth.IPLimit = 3
		c.Auth.SlowAfter = 100 // no slow-down in this test: the lockout is what it checks
		c.SMTP.MaxErrors = 100
	})
	c := testenv.DialTLS(t, y.SubmissionsAddr)
	c.Cmd("EHLO client.test", 250)
	for range 3 {
		c.CmdEnh("AUTH PLAIN "+plain("user@example.test", "guess"), 535, "5.7.8")
	}
	c.CmdEnh("AUTH PLAIN "+plain("user@example.test", "password123"), 454, "4.7.0")
	// 127.0.0.2 is another client address on the loopback network.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	raw, err := tls.DialWithDialer(d, "tcp", y.SubmissionsAddr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2: %v", err)
	}
	defer raw.Close()
	other := testenv.Wrap(t, raw)
	other.Expect(220)
	other.Cmd("EHLO other.test", 250)
	other.CmdEnh("AUTH PLAIN "+plain("user@example.test", "password123"), 235, "2.7.0")
}

func TestSenderOwnership(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t, func(c *config.Config) {
		c.Submission.DomainSenders = map[string][]string{"user@example.test": {"Managed.Test"}}
	})
	y.AddAccount("other@example.test", "password456")
	y.AddAlias("sales@example.test", "user@example.test")
	y.AddAlias("team@example.test", "other@example.test")
	c := submit(t, y)
	for _, tc := range []struct {
		from string
		code int
		enh  string
	}{
		{"user@example.test", 250, "2.1.0"},
		{"User+news@Example.Test", 250, "2.1.0"},
		{"sales@example.test", 250, "2.1.0"},
		{"anyone@managed.test", 250, "2.1.0"},
		{"other@example.test", 550, "5.7.1"},
		{"team@example.test", 550, "5.7.1"},
		{"nobody@example.test", 550, "5.7.1"},
		{"user@elsewhere.test", 550, "5.7.1"},
		{"", 550, "5.7.1"},
	} {
		c.CmdEnh(fmt.Sprintf("MAIL FROM:<%s>", tc.from), tc.code, tc.enh)
		if tc.code == 250 {
			c.Cmd("RSET", 250)
		}
	}
}

// TestSubmissionRelayAndHeaders: one transaction to a local and a remote recipient makes one
// commit: an INBOX copy and a queue entry; Message-ID and Date are added when missing, and
// the Received header names neither the client's address nor its EHLO name.
func TestSubmissionRelayAndHeaders(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)
	c := submit(t, y)
	id := deliver(t, c, "user@example.test", []string{"user@example.test", "friend@remote.test"}, "Subject: no ids\r\n\r\nhello\r\n")
	if n, _ := y.App.Store.QueueLen(context.Background()); n != 1 {
		t.Errorf("queue length %d, want 1 (the remote recipient)", n)
	}
	got := string(onlyMessage(t, y, "user@example.test"))
	for _, want := range []string{
		"\r\nMessage-ID: <" + id + "@mx.test>\r\n",
		"\r\nDate: ",
		"with ESMTPSA",
		"Subject: no ids\r\nMessage-ID: <",
		"\r\n\r\nhello\r\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("stored message lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "127.0.0.1") || strings.Contains(got, "client.test") {
		t.Errorf("the Received header reveals the submitter:\n%s", got)
	}
	// A message that has both headers keeps them, unchanged and not duplicated.
	content := "Message-ID: <mine@client.test>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\nSubject: ids\r\n\r\nbody\r\n"
	deliver(t, c, "user@example.test", []string{"user@example.test"}, content)
	second := y.Messages("user@example.test", "INBOX")[1]
	if string(testenv.Body(second)) != content {
		t.Errorf("message with its own Message-ID and Date was changed:\n%s", second)
	}
	// A message that is all header, and one split by BDAT inside the header's end.
	deliver(t, c, "user@example.test", []string{"user@example.test"}, "Subject: header only\r\n")
	third := string(y.Messages("user@example.test", "INBOX")[2])
	if !strings.Contains(third, "Subject: header only\r\nMessage-ID: <") {
		t.Errorf("header-only message did not get its headers at the end:\n%s", third)
	}
	c.Cmd("MAIL FROM:<user@example.test>", 250)
	c.Cmd("RCPT TO:<user@example.test>", 250)
	c.Write("BDAT 14\r\nSubject: bdat\r")
	c.Expect(250)
	c.Write("BDAT 9 LAST\r\n\n\r\nbody\r\n")
	c.Expect(250)
	fourth := string(y.Messages("user@example.test", "INBOX")[3])
	if !strings.Contains(fourth, "Subject: bdat\r\nMessage-ID: <") || !strings.HasSuffix(fourth, "\r\n\r\nbody\r\n") {
		t.Errorf("BDAT message split at the header end:\n%q", fourth)
	}
}

func TestSubmissionRateLimits(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t, func(c *config.Config) {
		c.Submission.MaxMessagesPerHour = 2
		c.Submission.MaxRecipientsPerHour = 3
	})
	c := submit(t, y)
	deliver(t, c, "user@example.test", []string{"user@example.test", "a@remote.test"}, "Subject: 1\r\n\r\nx\r\n")
	c.Cmd("MAIL FROM:<user@example.test>", 250)
	c.Cmd("RCPT TO:<b@remote.test>", 250)
	c.CmdEnh("RCPT TO:<c@remote.test>", 450, "4.7.1")
	c.Cmd("DATA", 354)
	c.Write("Subject: 2\r\n\r\nx\r\n.\r\n")
	c.Expect(250)
	c.CmdEnh("MAIL FROM:<user@example.test>", 450, "4.7.1")
}

func TestLocalSocketRelaysWithoutAuth(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)
	nc, err := net.DialTimeout("unix", y.Cfg.SocketPath(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := testenv.Wrap(t, nc)
	c.Expect(220)
	r := c.Cmd("EHLO localhost", 250)
	if strings.Contains(strings.Join(r.Lines, " "), "STARTTLS") {
		t.Errorf("the local socket offers STARTTLS: %v", r.Lines)
	}
	deliver(t, c, "cron@mx.test", []string{"user@example.test", "someone@remote.test"}, "Subject: cron\r\n\r\nout\r\n")
	got := string(onlyMessage(t, y, "user@example.test"))
	if !strings.Contains(got, "(yubin, local submission)") || !strings.Contains(got, "\r\nMessage-ID: <") {
		t.Errorf("local submission trace or headers missing:\n%s", got)
	}
	if n, _ := y.App.Store.QueueLen(context.Background()); n != 1 {
		t.Errorf("queue length %d, want 1", n)
	}
}
