package smtpserver_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"yubin/internal/config"
	"yubin/internal/testenv"
)

func TestDataDelivery(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)

	t.Run("byte for byte with trace headers", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := session(t, y)
		content := "From: Sender <" + from + ">\r\nTo: <" + rcpt + ">\r\nSubject: hello\r\n\r\nHello,\r\n\r\n  indented\tand tabbed  \r\nbye\r\n"
		id := deliver(t, c, from, []string{rcpt}, content)
		rp, rec := traceOf(t, onlyMessage(t, y, rcpt), content)
		if rp != "Return-Path: <"+from+">" {
			t.Errorf("first line %q", rp)
		}
		for _, want := range []string{"Received: from client.test ([127.0.0.1])", "\tby mx.test (yubin) with ESMTP\r\n", "\tid " + id + "\r\n", "\tfor <" + rcpt + ">;"} {
			if !strings.Contains(rec, want) {
				t.Errorf("Received header lacks %q:\n%s", want, rec)
			}
		}
		if !strings.HasSuffix(rec, "\r\n") || strings.Count(rec, "\r\n\t") != strings.Count(rec, "\r\n")-1 {
			t.Errorf("Received header is not one folded field: %q", rec)
		}
	})

	t.Run("null sender", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := session(t, y)
		content := "Subject: bounce\r\n\r\nbody\r\n"
		deliver(t, c, "", []string{rcpt}, content)
		rp, _ := traceOf(t, onlyMessage(t, y, rcpt), content)
		if rp != "Return-Path: <>" {
			t.Errorf("first line %q", rp)
		}
	})

	t.Run("dot-stuffing", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := session(t, y)
		r := c.Send(from, []string{rcpt}, ".first line starts with a dot\r\n\r\n..leading\r\n...two\r\n..\r\n.. \r\nend.\r\n.\r\n")
		queuedID(t, r)
		traceOf(t, onlyMessage(t, y, rcpt), "first line starts with a dot\r\n\r\n.leading\r\n..two\r\n.\r\n. \r\nend.\r\n")
	})

	t.Run("empty content", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := session(t, y)
		queuedID(t, c.Send(from, []string{rcpt}, ".\r\n"))
		traceOf(t, onlyMessage(t, y, rcpt), "")
	})

	t.Run("8BITMIME", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := session(t, y)
		// UTF-8 text and bytes that are not UTF-8 at all (Latin-1): both pass untouched.
		content := "Subject: =?utf-8?q?caf=C3=A9?=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ncafé, 日本語, \x80\xff\xe9t\xe9\r\n"
		c.CmdEnh("MAIL FROM:<"+from+"> BODY=8BITMIME", 250, "2.1.0")
		c.CmdEnh("RCPT TO:<"+rcpt+">", 250, "2.1.5")
		c.Cmd("DATA", 354)
		c.Write(wire(content))
		queuedID(t, expect(t, c, 250, "2.0.0"))
		traceOf(t, onlyMessage(t, y, rcpt), content)
	})

	t.Run("BODY values", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		c.CmdEnh("MAIL FROM:<"+from+"> BODY=BINARYMIME", 501, "5.5.4")
		c.CmdEnh("MAIL FROM:<"+from+"> BODY=7bit", 250, "2.1.0")
		c.CmdEnh("RSET", 250, "2.0.0")
		c.CmdEnh("MAIL FROM:<"+from+"> FROB=1", 555, "5.5.4")
		c.CmdEnh("MAIL FROM:<"+from+"> SMTPUTF8=yes", 501, "5.5.4")
	})

	t.Run("SMTPUTF8 sender and recipient", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		y.AddAlias("δοκιμή@example.test", rcpt)
		c := session(t, y)
		content := "From: δοκιμή@example.org\r\nSubject: ελληνικά\r\n\r\nγεια σου\r\n"
		c.CmdEnh("MAIL FROM:<δοκιμή@example.org> SMTPUTF8", 250, "2.1.0")
		c.CmdEnh("RCPT TO:<δοκιμή@example.test>", 250, "2.1.5")
		c.Cmd("DATA", 354)
		c.Write(wire(content))
		queuedID(t, expect(t, c, 250, "2.0.0"))
		rp, rec := traceOf(t, onlyMessage(t, y, rcpt), content)
		if rp != "Return-Path: <δοκιμή@example.org>" {
			t.Errorf("first line %q", rp)
		}
		// RFC 6531 3.7.3: the trace records that SMTPUTF8 was used.
		for _, want := range []string{"with UTF8SMTP", "for <δοκιμή@example.test>"} {
			if !strings.Contains(rec, want) {
				t.Errorf("Received header lacks %q:\n%s", want, rec)
			}
		}
	})

	t.Run("non-ASCII without SMTPUTF8", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		c.CmdEnh("MAIL FROM:<δοκιμή@example.org>", 553, "5.6.7")
		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		c.CmdEnh("RCPT TO:<δοκιμή@example.test>", 553, "5.6.7")
		c.CmdEnh("RCPT TO:<user@exämple.test>", 553, "5.6.7")
	})
}

func TestRecipients(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)

	t.Run("unknown local user", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		c.CmdEnh("RCPT TO:<nobody@example.test>", 550, "5.1.1")
		c.CmdEnh("RCPT TO:<>", 501, "5.1.3")
		c.CmdEnh("RCPT TO:"+rcpt, 501, "5.1.3")
		c.CmdEnh("RCPT TO:<"+rcpt+"> FOO=BAR", 555, "5.5.4")
		// DSN parameters (RFC 3461) are understood and checked.
		c.CmdEnh("RCPT TO:<"+rcpt+"> NOTIFY=NEVER,SUCCESS", 501, "5.5.4")
		c.CmdEnh("RCPT TO:<"+rcpt+"> ORCPT=rfc822", 501, "5.5.4")
		c.CmdEnh("RCPT TO:<"+rcpt+"> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;user+2Bx@example.test", 250, "2.1.5")
	})

	t.Run("relay refused", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := session(t, y)
		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		for _, tc := range []struct {
			rcpt string
			code int
			enh  string
		}{
			{"<victim@remote.test>", 554, "5.7.1"},
			{"<user@example.test.remote.test>", 554, "5.7.1"},
			{"<a%b@example.test>", 550, "5.7.1"},
			{"<victim%remote.test@example.test>", 550, "5.7.1"},
			{"<b!a@example.test>", 550, "5.7.1"},
			{"<remote.test!victim@example.test>", 550, "5.7.1"},
			{`<"a@b"@example.test>`, 550, "5.7.1"},
			{`<"victim@remote.test"@example.test>`, 550, "5.7.1"},
			{"<@example.test:a@remote.test>", 554, "5.7.1"},
			{"<@example.test,@other.test:a@remote.test>", 554, "5.7.1"},
			{"<a@b@example.test>", 501, "5.1.3"},
			{"<user@[127.0.0.1]>", 554, "5.7.1"},
			{"<user@[IPv6:::1]>", 554, "5.7.1"},
		} {
			c.CmdEnh("RCPT TO:"+tc.rcpt, tc.code, tc.enh)
		}
		// No recipient was accepted: DATA has nothing to deliver to.
		c.CmdEnh("DATA", 554, "5.5.1")
		expectEmpty(t, y, rcpt)
	})

	t.Run("source route to a hosted domain", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := session(t, y)
		// RFC 5321 4.1.1.3 and C: the route is ignored, the mailbox decides.
		content := "Subject: routed\r\n\r\nbody\r\n"
		deliver(t, c, from, []string{"@relay.test:" + rcpt}, content)
		traceOf(t, onlyMessage(t, y, rcpt), content)
	})

	t.Run("postmaster without account", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		// RFC 5321 4.5.1: postmaster must be accepted, whatever its case.
		c.CmdEnh("RCPT TO:<postmaster@example.test>", 250, "2.1.5")
		c.CmdEnh("RCPT TO:<PostMaster@EXAMPLE.TEST>", 250, "2.1.5")
	})

	t.Run("bare Postmaster", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t, func(cfg *config.Config) { cfg.Hostname = "example.test" })
		c := session(t, y)
		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		c.CmdEnh("RCPT TO:<Postmaster>", 250, "2.1.5")
	})

	t.Run("bare Postmaster, host name not hosted", func(t *testing.T) {
		t.Parallel()
		c := session(t, y)
		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		// mx.test is not a hosted domain: postmaster@mx.test would be relaying.
		c.CmdEnh("RCPT TO:<Postmaster>", 554, "5.7.1")
	})

	t.Run("case-insensitive", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := session(t, y)
		content := "Subject: shouting\r\n\r\nbody\r\n"
		deliver(t, c, from, []string{"USER@EXAMPLE.TEST"}, content)
		traceOf(t, onlyMessage(t, y, rcpt), content)
	})

	t.Run("subaddress", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := session(t, y)
		content := "Subject: tagged\r\n\r\nbody\r\n"
		deliver(t, c, from, []string{"user+tag@example.test"}, content)
		_, rec := traceOf(t, onlyMessage(t, y, rcpt), content)
		if !strings.Contains(rec, "for <user+tag@example.test>;") {
			t.Errorf("Received header does not show the tag:\n%s", rec)
		}
	})

	t.Run("alias to two accounts", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		y.AddAccount("other@example.test", "password123")
		y.AddAlias("team@example.test", rcpt, "other@example.test")
		c := session(t, y)
		content := "Subject: team\r\n\r\nbody\r\n"
		// Naming a member as well as the alias must not give that member two copies.
		deliver(t, c, from, []string{"team@example.test", rcpt}, content)
		traceOf(t, onlyMessage(t, y, rcpt), content)
		traceOf(t, onlyMessage(t, y, "other@example.test"), content)
		expectEmpty(t, y)
	})

	t.Run("101st recipient", func(t *testing.T) {
		t.Parallel()
		y := testenv.Start(t)
		c := session(t, y)
		c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
		var b strings.Builder
		for i := range 101 {
			fmt.Fprintf(&b, "RCPT TO:<user+%d@example.test>\r\n", i)
		}
		c.Write(b.String())
		for range 100 {
			expect(t, c, 250, "2.1.5")
		}
		// RFC 5321 4.5.3.1.10: 452, so the client sends the rest later.
		expect(t, c, 452, "4.5.3")
		content := "Subject: many\r\n\r\nbody\r\n"
		c.Cmd("DATA", 354)
		c.Write(wire(content))
		queuedID(t, expect(t, c, 250, "2.0.0"))
		traceOf(t, onlyMessage(t, y, rcpt), content)
	})
}

func TestPostmasterDelivery(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)
	c := session(t, y)
	content := "Subject: abuse report\r\n\r\nbody\r\n"
	r := c.Send(from, []string{"postmaster@example.test"}, wire(content))
	if r.Code != 250 {
		t.Fatalf("mail to postmaster (no account, no alias) accepted at RCPT but refused after DATA: %s", r.Error())
	}
	// With no catch-all and no fallback, the domain's first account is its postmaster.
	_, rec := traceOf(t, onlyMessage(t, y, rcpt), content)
	if !strings.Contains(rec, "for <postmaster@example.test>;") {
		t.Errorf("Received header lacks the postmaster recipient:\n%s", rec)
	}

	// A hosted domain without any account has nowhere to put it: refused at RCPT rather
	// than accepted and then failed at commit.
	y.AddDomain("empty.test")
	c.CmdEnh("MAIL FROM:<"+from+">", 250, "2.1.0")
	c.CmdEnh("RCPT TO:<postmaster@empty.test>", 550, "5.1.1")
}

func TestAliasToRemote(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)
	y.AddAlias("fwd@example.test", "someone@remote.test", rcpt)
	c := session(t, y)
	content := "Subject: forwarded\r\n\r\nbody\r\n"
	deliver(t, c, from, []string{"fwd@example.test"}, content)
	traceOf(t, onlyMessage(t, y, rcpt), content)
	// The remote member is queued for relay: forwarding by an alias is not open relaying.
	if n, err := y.App.Store.QueueLen(context.Background()); err != nil || n != 1 {
		t.Fatalf("queue length %d (%v), want 1", n, err)
	}
}
