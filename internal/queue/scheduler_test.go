package queue

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"yubin/internal/smtp"
	"yubin/internal/store"
)

func TestDeliverySuccess(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.start()
		t0 := time.Now()
		b, _ := e.st.NewBlob()
		b.Write([]byte("Return-Path: <ana@example.org>\r\n" + body))
		err := e.st.Deliver(context.Background(), &store.Commit{Blob: b, From: "ana@example.org", Ret: "FULL", EnvID: "E+2B1", EightBit: true,
			Recipients: []store.Recipient{
				{Address: "bob@remote.example", Remote: true, Notify: "SUCCESS,FAILURE", ORCPT: "rfc822;Bob+2Btag@remote.example"},
				{Address: "carol@remote.example", Remote: true},
				{Address: "dave@other.example", Remote: true},
			}})
		if err != nil {
			t.Fatal(err)
		}
		id := b.ID()
		e.sched.Wake()
		synctest.Wait()

		calls := e.dlv.snapshot()
		if len(calls) != 2 {
			t.Fatalf("%d Deliver calls, want 2 (one per domain)", len(calls))
		}
		for _, c := range calls {
			if !c.at.Equal(t0) {
				t.Errorf("delivery to %s at %v, want at once", c.domain, c.at.Sub(t0))
			}
			if c.content != body {
				t.Errorf("content %q, want the message without the Return-Path line", c.content)
			}
			if c.d.Size != int64(len(body)) || c.d.From != "ana@example.org" || c.d.MessageID != id ||
				c.d.Ret != "FULL" || c.d.EnvID != "E+1" || !c.d.EightBit || c.d.SMTPUTF8 {
				t.Errorf("delivery %+v", c.d)
			}
			if c.domain == "remote.example" {
				if r := c.d.Recipients[0]; r.Notify != "SUCCESS,FAILURE" || r.ORCPT != "rfc822;Bob+tag@remote.example" {
					t.Errorf("recipient parameters %+v, want ORCPT decoded", r)
				}
			}
		}
		if len(e.queue()) != 0 {
			t.Errorf("queue after delivery: %+v", e.queue())
		}
		if e.messageExists(id) {
			t.Error("message still stored after every recipient was delivered")
		}
		if n := len(e.bounces.snapshot()); n != 0 {
			t.Errorf("%d reports after a success", n)
		}
	})
}

// One Deliver call per message and domain, with all its recipients.
func TestGrouping(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		m1 := e.commit("ana@example.org", "a@one.example", "b@one.example", "c@one.example", "d@two.example", "e@two.example")
		m2 := e.commit("ana@example.org", "f@one.example")
		e.start()

		got := map[string][]string{}
		for _, c := range e.dlv.snapshot() {
			k := c.msgID + " " + c.domain
			if _, dup := got[k]; dup {
				t.Errorf("two calls for %s", k)
			}
			got[k] = c.rcpts
		}
		want := map[string][]string{
			m1 + " one.example": {"a@one.example", "b@one.example", "c@one.example"},
			m1 + " two.example": {"d@two.example", "e@two.example"},
			m2 + " one.example": {"f@one.example"},
		}
		if len(got) != len(want) {
			t.Fatalf("calls %v, want %v", got, want)
		}
		for k, w := range want {
			if !slices.Equal(got[k], w) {
				t.Errorf("%s: recipients %v, want %v", k, got[k], w)
			}
		}
	})
}

// 4xx, then success: retries after 5m, 10m, 20m, 40m, 60m, 60m.
func TestBackoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.sched.Retry = RetryPolicy{DelayWarning: 0} // defaults, no warning
		e.dlv.reply = func(_ string, n int) *smtp.Reply {
			if n < 6 {
				return reply(451, "4.3.0", "try later")
			}
			return reply(250, "2.0.0", "ok")
		}
		e.start()
		id := e.commit("ana@example.org", "bob@remote.example")
		synctest.Wait()
		advance(20 * time.Minute) // attempts at 0, 5m, 15m
		ent := e.queue()
		if len(ent) != 1 || ent[0].Attempts != 3 || ent[0].LastError != "451 4.3.0 try later" || ent[0].LastMX != "mx.remote.example" {
			t.Fatalf("queue after 20m: %+v", ent)
		}
		tl, _ := e.st.QueueTimeline(context.Background(), ent[0].ID)
		if len(tl) != 3 || tl[0].IP != "192.0.2.7" || tl[0].TLS != "TLS1.3 verified" || tl[0].Reply != "451 4.3.0 try later" {
			t.Errorf("timeline %+v", tl)
		}
		advance(4 * time.Hour)

		calls := e.dlv.snapshot()
		var gaps []time.Duration
		for i := 1; i < len(calls); i++ {
			gaps = append(gaps, calls[i].at.Sub(calls[i-1].at))
		}
		want := []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute, time.Hour, time.Hour}
		if !slices.Equal(gaps, want) {
			t.Errorf("gaps between attempts %v, want %v", gaps, want)
		}
		if len(e.queue()) != 0 || e.messageExists(id) {
			t.Error("entry or message left after the final success")
		}
		if n := len(e.bounces.snapshot()); n != 0 {
			t.Errorf("%d reports", n)
		}
	})
}

func TestBackoffPolicy(t *testing.T) {
	p := DefaultRetryPolicy()
	var got []time.Duration
	for n := 1; n <= 8; n++ {
		got = append(got, p.Backoff(n))
	}
	want := []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute, time.Hour, time.Hour, time.Hour, time.Hour}
	if !slices.Equal(got, want) {
		t.Errorf("Backoff = %v, want %v", got, want)
	}
}

// 5xx: a bounce to the sender quoting the remote reply, and the entry and message are gone.
func TestPermanentFailureBounces(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.dlv.reply = func(string, int) *smtp.Reply {
			return reply(550, "5.1.1", "<bob@remote.example>: Recipient address rejected: User unknown")
		}
		e.start()
		id := e.commitWith(&store.Commit{From: "ana@example.org", EnvID: "ENV1"}, "bob@remote.example")
		synctest.Wait()

		bs := e.bounces.snapshot()
		if len(bs) != 1 {
			t.Fatalf("%d reports, want 1", len(bs))
		}
		b := bs[0]
		data := string(b.msg.Data)
		if b.to != "ana@example.org" {
			t.Errorf("bounce to %q", b.to)
		}
		if !contains(data, "550 5.1.1 <bob@remote.example>: Recipient address rejected: User unknown",
			"Subject: Undelivered Mail Returned to Sender", "Action: failed", "Status: 5.1.1",
			"Remote-MTA: dns; mx.remote.example", "Final-Recipient: rfc822; bob@remote.example",
			"Original-Envelope-Id: ENV1", "Reporting-MTA: dns; mail.example.org", "Subject: hello",
			"Content-Type: text/rfc822-headers") {
			t.Errorf("bounce:\n%s", data)
		}
		if strings.Contains(data, "Return-Path:") || strings.Contains(data, "Hello.") {
			t.Error("the bounce carries the Return-Path line or the body (RET was not FULL)")
		}
		if len(e.queue()) != 0 || e.messageExists(id) {
			t.Error("entry or message left after the bounce")
		}
	})
}

// A message that keeps failing temporarily: one delay warning after 4h, then a bounce when
// the lifetime ends, after a last attempt at that moment.
func TestExpiryAndDelayWarning(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.dlv.reply = func(string, int) *smtp.Reply { return reply(451, "4.4.1", "connection refused") }
		e.start()
		t0 := time.Now()
		id := e.commitWith(&store.Commit{From: "ana@example.org", Ret: "FULL"}, "bob@remote.example")
		synctest.Wait()

		advance(3 * time.Hour)
		if n := len(e.bounces.snapshot()); n != 0 {
			t.Fatalf("%d reports after 3h", n)
		}
		advance(2 * time.Hour)
		bs := e.bounces.snapshot()
		if len(bs) != 1 {
			t.Fatalf("%d reports after 5h, want the delay warning", len(bs))
		}
		w := string(bs[0].msg.Data)
		if !contains(w, "Subject: Delayed Mail (still being retried)", "Action: delayed", "Status: 4.4.1",
			"Will-Retry-Until: Thu, 06 Jan 2000 00:00:00 +0000", "connection refused") {
			t.Errorf("warning:\n%s", w)
		}
		if d := bs[0].at.Sub(t0); d < 4*time.Hour || d > 5*time.Hour {
			t.Errorf("warning sent after %v", d)
		}

		advance(5*24*time.Hour - 5*time.Hour - time.Minute)
		if n := len(e.bounces.snapshot()); n != 1 || len(e.queue()) != 1 {
			t.Fatalf("before expiry: %d reports, %d entries", n, len(e.queue()))
		}
		advance(2 * time.Minute)
		bs = e.bounces.snapshot()
		if len(bs) != 2 {
			t.Fatalf("%d reports after the lifetime, want warning + bounce", len(bs))
		}
		if d := bs[1].at.Sub(t0); d != 5*24*time.Hour {
			t.Errorf("bounced after %v, want exactly the lifetime", d)
		}
		calls := e.dlv.snapshot()
		if last := calls[len(calls)-1].at.Sub(t0); last != 5*24*time.Hour {
			t.Errorf("last attempt after %v, want at expiry", last)
		}
		f := string(bs[1].msg.Data)
		if !contains(f, "Action: failed", "Status: 4.4.1", "Diagnostic-Code: smtp; 451 4.4.1 connection refused",
			"has now given up", "Content-Type: message/rfc822", "Hello.") {
			t.Errorf("expiry bounce:\n%s", f)
		}
		if len(e.queue()) != 0 || e.messageExists(id) {
			t.Error("entry or message left after the expiry bounce")
		}
	})
}

// NOTIFY=NEVER and NOTIFY=SUCCESS: no failure report and no delay warning; NOTIFY=DELAY only:
// a warning but no bounce.
func TestNotify(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.dlv.reply = byRcpt(map[string]*smtp.Reply{"never@remote.example": reply(550, "5.1.1", "no")},
			reply(451, "4.4.1", "later"))
		e.start()
		b, _ := e.st.NewBlob()
		b.Write([]byte("Return-Path: <ana@example.org>\r\n" + body))
		err := e.st.Deliver(context.Background(), &store.Commit{Blob: b, From: "ana@example.org", Recipients: []store.Recipient{
			{Address: "never@remote.example", Remote: true, Notify: "NEVER"},
			{Address: "delay@remote.example", Remote: true, Notify: "DELAY"},
			{Address: "success@remote.example", Remote: true, Notify: "SUCCESS"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		e.sched.Wake()
		advance(6 * 24 * time.Hour)
		bs := e.bounces.snapshot()
		if len(bs) != 1 || !contains(string(bs[0].msg.Data), "Action: delayed", "delay@remote.example") ||
			strings.Contains(string(bs[0].msg.Data), "success@remote.example") {
			t.Errorf("%d reports; first:\n%s", len(bs), bs[0].msg.Data)
		}
		if len(e.queue()) != 0 {
			t.Errorf("queue %+v", e.queue())
		}
	})
}

// Nothing is ever reported to the null sender: no bounce, no warning.
func TestNullSenderNeverBounced(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.dlv.reply = byRcpt(map[string]*smtp.Reply{"a@remote.example": reply(550, "5.1.1", "no such user")},
			reply(451, "4.4.1", "later"))
		e.start()
		e.commit("", "a@remote.example", "b@remote.example")
		advance(6 * 24 * time.Hour)
		if n := len(e.bounces.snapshot()); n != 0 {
			t.Errorf("%d reports for a message from <>", n)
		}
		if len(e.queue()) != 0 {
			t.Errorf("queue %+v", e.queue())
		}
	})
}

// A bounce is committed from the null sender; when it fails in turn, nothing more happens.
func TestBounceOfBounceImpossible(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.bounces.st = e.st
		e.bounces.wake = e.sched.Wake
		e.dlv.reply = func(string, int) *smtp.Reply { return reply(550, "5.1.1", "no such user") }
		e.start()
		e.commit("ana@sender.example", "bob@remote.example")
		synctest.Wait()

		calls := e.dlv.snapshot()
		if len(calls) != 2 || calls[1].domain != "sender.example" || calls[1].d.From != "" {
			t.Fatalf("calls %+v, want the message then its bounce from <>", calls)
		}
		if !strings.HasPrefix(calls[1].content, "From: Mail Delivery System") {
			t.Errorf("second delivery is not the bounce: %.80q", calls[1].content)
		}
		advance(time.Hour)
		if n := len(e.bounces.snapshot()); n != 1 {
			t.Errorf("%d reports, want only the first bounce", n)
		}
		if len(e.queue()) != 0 {
			t.Errorf("queue %+v", e.queue())
		}
	})
}

// One 250, one 450, one 550 in the same transaction: each recipient has its own fate.
func TestMixedResults(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.dlv.reply = func(rcpt string, n int) *smtp.Reply {
			switch {
			case rcpt == "ok@remote.example":
				return reply(250, "2.0.0", "ok")
			case rcpt == "later@remote.example" && n == 0:
				return reply(450, "4.2.1", "mailbox busy")
			case rcpt == "later@remote.example":
				return reply(250, "2.0.0", "ok")
			}
			return reply(550, "5.1.1", "no such user")
		}
		e.start()
		id := e.commit("ana@example.org", "ok@remote.example", "later@remote.example", "gone@remote.example")
		synctest.Wait()

		q := e.queue()
		if len(q) != 1 || q[0].Rcpt != "later@remote.example" || q[0].State != store.QueueQueued || q[0].Attempts != 1 {
			t.Fatalf("queue %+v", q)
		}
		bs := e.bounces.snapshot()
		if len(bs) != 1 {
			t.Fatalf("%d reports", len(bs))
		}
		data := string(bs[0].msg.Data)
		if !contains(data, "gone@remote.example", "550 5.1.1 no such user") || strings.Contains(data, "later@remote.example") ||
			strings.Contains(data, "ok@remote.example") {
			t.Errorf("bounce:\n%s", data)
		}
		if !e.messageExists(id) {
			t.Fatal("message deleted while an entry still needs it")
		}
		advance(5 * time.Minute)
		calls := e.dlv.snapshot()
		if len(calls) != 2 || !slices.Equal(calls[1].rcpts, []string{"later@remote.example"}) {
			t.Errorf("calls %+v", calls)
		}
		if len(e.queue()) != 0 || e.messageExists(id) {
			t.Error("entry or message left")
		}
	})
}

// At most PerDestination deliveries to one domain and Concurrency in all; domains take turns.
func TestConcurrencyBounds(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.sched.Concurrency = 3
		e.sched.PerDestination = 2
		e.dlv.gate = make(chan struct{})
		for i := range 6 {
			e.commit("ana@example.org", string(rune('a'+i))+"@busy.example")
		}
		e.commit("ana@example.org", "x@quiet.example")
		e.start()
		if n := len(e.dlv.snapshot()); n != 3 {
			t.Errorf("%d deliveries started, want Concurrency=3", n)
		}
		var quiet bool
		for _, c := range e.dlv.snapshot() {
			quiet = quiet || c.domain == "quiet.example"
		}
		if !quiet {
			t.Error("quiet.example waits behind busy.example")
		}
		close(e.dlv.gate)
		synctest.Wait()
		if n := len(e.dlv.snapshot()); n != 7 {
			t.Errorf("%d deliveries, want 7", n)
		}
		if e.dlv.maxDom["busy.example"] != 2 || e.dlv.maxTot != 3 {
			t.Errorf("most at once: %d to busy.example (want 2), %d in all (want 3)", e.dlv.maxDom["busy.example"], e.dlv.maxTot)
		}
		if len(e.queue()) != 0 {
			t.Errorf("queue %+v", e.queue())
		}
	})
}

// Wake starts a new entry at once, without waiting for the poll.
func TestWake(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.start()
		// Committed without Wake: nothing happens until the poll (an hour in these tests).
		b, _ := e.st.NewBlob()
		b.Write([]byte("Return-Path: <ana@example.org>\r\n" + body))
		if err := e.st.Deliver(context.Background(), &store.Commit{Blob: b, From: "ana@example.org",
			Recipients: []store.Recipient{{Address: "bob@remote.example", Remote: true}}}); err != nil {
			t.Fatal(err)
		}
		advance(time.Minute)
		if n := len(e.dlv.snapshot()); n != 0 {
			t.Fatalf("%d deliveries before Wake", n)
		}
		t1 := time.Now()
		e.sched.Wake()
		synctest.Wait()
		calls := e.dlv.snapshot()
		if len(calls) != 1 || !calls[0].at.Equal(t1) {
			t.Errorf("calls %+v, want one at once", calls)
		}
	})
}

// The poll picks up changes made by another process (yubin queue retry, queue bounce) within
// PollInterval.
func TestPollPicksUpOperatorChanges(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.sched.PollInterval = 2 * time.Second
		e.dlv.reply = func(string, int) *smtp.Reply { return reply(451, "4.4.1", "later") }
		e.start()
		e.commit("ana@example.org", "bob@remote.example", "carol@other.example")
		synctest.Wait()
		advance(time.Minute)
		q := e.queue()
		if len(q) != 2 || len(e.dlv.snapshot()) != 2 {
			t.Fatalf("queue %+v", q)
		}
		ctx := context.Background()
		if n, err := e.st.RetryQueue(ctx, q[0].ID, time.Now()); err != nil || n != 1 {
			t.Fatalf("RetryQueue = %d, %v", n, err)
		}
		if err := e.st.FailQueueEntry(ctx, q[1].ID, time.Now(), "554 5.0.0 cancelled by the postmaster"); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		advance(2 * time.Second)
		calls := e.dlv.snapshot()
		if len(calls) != 3 || calls[2].at.Sub(t1) > 2*time.Second || calls[2].rcpts[0] != "bob@remote.example" {
			t.Errorf("calls %+v", calls)
		}
		bs := e.bounces.snapshot()
		if len(bs) != 1 || !contains(string(bs[0].msg.Data), "carol@other.example", "554 5.0.0 cancelled by the postmaster",
			"Diagnostic-Code: X-Yubin; 554 5.0.0") {
			t.Errorf("%d reports", len(bs))
		}
		if q := e.queue(); len(q) != 1 || q[0].Rcpt != "bob@remote.example" {
			t.Errorf("queue %+v", q)
		}
	})
}

// A restart (store closed and opened again, a new scheduler) resumes: deferred entries at
// their time, entries that were claimed when the process died at once.
func TestRestartResumes(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.dlv.reply = func(string, int) *smtp.Reply { return reply(451, "4.4.1", "later") }
		e.start()
		deferred := e.commit("ana@example.org", "bob@remote.example")
		synctest.Wait()
		e.stop()

		// Another message claimed by a process that then died (kill -9): no result recorded.
		claimed := e.commit("ana@example.org", "carol@remote.example")
		if es, err := e.st.ClaimQueue(context.Background(), store.QueueQueued, time.Now(), 10); err != nil || len(es) != 1 {
			t.Fatalf("claim: %d, %v", len(es), err)
		}
		e.restart()
		e.dlv.reply = func(string, int) *smtp.Reply { return reply(250, "2.0.0", "ok") }
		t1 := time.Now()
		e.start()
		calls := e.dlv.snapshot()
		if len(calls) != 2 || calls[1].msgID != claimed || !calls[1].at.Equal(t1) {
			t.Fatalf("after restart: calls %+v, want the interrupted one at once", calls)
		}
		advance(5 * time.Minute)
		calls = e.dlv.snapshot()
		if len(calls) != 3 || calls[2].msgID != deferred {
			t.Fatalf("calls %+v, want the deferred one 5m after its failure", calls)
		}
		if len(e.queue()) != 0 || e.messageExists(deferred) || e.messageExists(claimed) {
			t.Error("entries or messages left")
		}
	})
}

// A shutdown during a delivery: the temporary failure it causes is not counted.
func TestShutdownDuringDelivery(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.dlv.gate = make(chan struct{})
		e.start()
		e.commit("ana@example.org", "bob@remote.example")
		synctest.Wait()
		e.stop()
		q := e.queue()
		if len(q) != 1 || q[0].State != store.QueueQueued || q[0].Attempts != 0 {
			t.Errorf("after an interrupted delivery: %+v", q)
		}
	})
}

// An operator removes an entry that waits for a connection slot: it is not delivered.
func TestRemovedWhileWaiting(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.sched.PerDestination = 1
		e.dlv.gate = make(chan struct{})
		e.commit("ana@example.org", "a@remote.example")
		e.commit("ana@example.org", "b@remote.example")
		e.start()
		q := e.queue()
		if len(q) != 2 || q[1].State != store.QueueActive {
			t.Fatalf("queue %+v", q)
		}
		if err := e.st.RemoveQueueEntry(context.Background(), q[1].ID); err != nil {
			t.Fatal(err)
		}
		close(e.dlv.gate)
		synctest.Wait()
		if calls := e.dlv.snapshot(); len(calls) != 1 {
			t.Errorf("calls %+v, want only the first message", calls)
		}
	})
}

// A bounce that cannot be committed stays owed and is retried.
func TestBounceCommitRetried(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.bounces.fail = true
		e.dlv.reply = func(string, int) *smtp.Reply { return reply(550, "5.1.1", "no") }
		e.start()
		id := e.commit("ana@example.org", "bob@remote.example")
		synctest.Wait()
		q := e.queue()
		if len(q) != 1 || q[0].State != store.QueueFailed {
			t.Fatalf("queue %+v", q)
		}
		e.bounces.mu.Lock()
		e.bounces.fail = false
		e.bounces.mu.Unlock()
		advance(5 * time.Minute)
		if n := len(e.bounces.snapshot()); n != 1 {
			t.Errorf("%d reports after the retry", n)
		}
		if len(e.queue()) != 0 || e.messageExists(id) {
			t.Error("entry or message left")
		}
		if n := len(e.dlv.snapshot()); n != 1 {
			t.Errorf("%d deliveries; a failed entry must not be delivered again", n)
		}
	})
}

// A report that nobody can receive (the Committer's error is not temporary) is dropped.
func TestBounceCommitPermanentError(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		e.bounces.fail, e.bounces.err = true, permanentError{}
		e.dlv.reply = func(string, int) *smtp.Reply { return reply(550, "5.1.1", "no") }
		e.start()
		id := e.commit("gone@example.org", "bob@remote.example")
		synctest.Wait()
		if len(e.queue()) != 0 || e.messageExists(id) {
			t.Errorf("queue %+v", e.queue())
		}
	})
}

func TestRunNeedsFields(t *testing.T) {
	if err := (&Scheduler{}).Run(context.Background()); err == nil {
		t.Error("Run without a store succeeded")
	}
}

func TestParseReply(t *testing.T) {
	for in, want := range map[string]string{
		"550 5.1.1 no such user": "550 5.1.1 no such user",
		"421 busy":               "421 busy",
		"250":                    "250",
		"451 4.7.1 a; b":         "451 4.7.1 a; b",
	} {
		if r := parseReply(in); r == nil || r.Error() != want {
			t.Errorf("parseReply(%q) = %v", in, r)
		}
	}
	for _, in := range []string{"", "xx", "999 x", "abc def"} {
		if r := parseReply(in); r != nil {
			t.Errorf("parseReply(%q) = %v, want nil", in, r)
		}
	}
	if r := parseReply("550 5.1.1 x"); r.Enhanced != "5.1.1" || r.Code != 550 {
		t.Errorf("%+v", r)
	}
}

func TestReturnPathLen(t *testing.T) {
	for in, want := range map[string]int64{
		"Return-Path: <a@b>\r\nSubject: x\r\n": 20,
		"return-path: <>\r\n":                  17,
		"Subject: x\r\n":                       0,
		"":                                     0,
	} {
		got, err := returnPathLen(strings.NewReader(in), int64(len(in)))
		if err != nil || got != want {
			t.Errorf("returnPathLen(%q) = %d, %v; want %d", in, got, err, want)
		}
		// The same over a message the store holds in memory.
		got, err = returnPathLine([]byte(in))
		if err != nil || got != want {
			t.Errorf("returnPathLine(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, long := range []string{
		"Return-Path: <" + strings.Repeat("a", 5000),
		"Return-Path: <" + strings.Repeat("a", 5000) + ">\r\nSubject: x\r\n", // ends past the bound
	} {
		if _, err := returnPathLen(strings.NewReader(long), int64(len(long))); err == nil {
			t.Error("returnPathLen: no error for a Return-Path line without an end")
		}
		if _, err := returnPathLine([]byte(long)); err == nil {
			t.Error("returnPathLine: no error for a Return-Path line without an end")
		}
	}
}

// countingStore counts NextQueueAttempt calls.
type countingStore struct {
	Store
	next atomic.Int64
}

func (c *countingStore) NextQueueAttempt(ctx context.Context) (time.Time, bool, error) {
	c.next.Add(1)
	return c.Store.NextQueueAttempt(ctx)
}

// A stream of new mail does not make the scheduler ask the store for the next due time after
// every message (it knows: new mail is claimed at once), and a deferral it wrote itself still
// wakes it on time, with the poll an hour away.
func TestNextDueKnownBetweenMessages(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		cs := &countingStore{Store: e.st}
		e.sched.Store = cs
		e.dlv.reply = func(rcpt string, n int) *smtp.Reply {
			if strings.HasPrefix(rcpt, "later@") && n < 1 {
				return reply(451, "4.3.0", "try later")
			}
			return reply(250, "2.0.0", "ok")
		}
		e.start()
		start := cs.next.Load()
		const n = 20
		for range n {
			e.commit("ana@example.org", "bob@remote.example")
			synctest.Wait()
		}
		if asked := cs.next.Load() - start; asked > 2 {
			t.Errorf("NextQueueAttempt asked %d times for %d messages, want at most 2", asked, n)
		}
		if got := len(e.dlv.snapshot()); got != n {
			t.Fatalf("%d deliveries, want %d", got, n)
		}

		t0 := time.Now()
		e.commit("ana@example.org", "later@remote.example")
		synctest.Wait()
		advance(10 * time.Minute)
		calls := e.dlv.snapshot()
		if len(calls) != n+2 || !calls[n+1].at.Equal(t0.Add(5*time.Minute)) {
			t.Errorf("retry of the deferred message: %d deliveries, last at %v, want one at +5m",
				len(calls), calls[len(calls)-1].at.Sub(t0))
		}
	})
}

// A commit hands its remote recipients straight to a running scheduler (Reserve, a commit
// with Claim, Take): they are delivered without a wake-up or a query for due entries.
func TestHandoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "")
		if e.sched.Reserve(1) {
			t.Fatal("Reserve before Run")
		}
		e.start()

		// The cap: past handoffMax, commits queue as before.
		if !e.sched.Reserve(handoffMax) || e.sched.Reserve(1) {
			t.Fatal("Reserve ignores handoffMax")
		}
		e.sched.Release(handoffMax)

		if !e.sched.Reserve(2) {
			t.Fatal("Reserve declined on a running scheduler")
		}
		b, err := e.st.NewBlob()
		if err != nil {
			t.Fatal(err)
		}
		b.Write([]byte("Return-Path: <ana@example.org>\r\n" + body))
		c := &store.Commit{Blob: b, From: "ana@example.org", Claim: true, Recipients: []store.Recipient{
			{Address: "a@remote.example", Remote: true}, {Address: "b@remote.example", Remote: true}}}
		if err := e.st.Deliver(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		e.sched.Take(c.Claimed) // no Wake: the poll is an hour away
		synctest.Wait()

		calls := e.dlv.snapshot()
		if len(calls) != 1 || !slices.Equal(calls[0].rcpts, []string{"a@remote.example", "b@remote.example"}) {
			t.Fatalf("calls %+v, want one delivery to both", calls)
		}
		if q := e.queue(); len(q) != 0 {
			t.Errorf("queue after delivery: %+v", q)
		}
		if n := e.sched.handed.Load(); n != 0 {
			t.Errorf("%d entries still counted as handed over", n)
		}

		e.stop()
		if e.sched.Reserve(1) {
			t.Error("Reserve after Run ended")
		}
	})
}

// A message stored inside the database is relayed from the bytes the store holds (its cache
// right after the commit, or the row it reads), without a copy; a message in a blob file is
// read from its file. Either way the content is the message without its Return-Path line.
func TestOpenContentInMemory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "")
	ctx := context.Background()
	deliver := func(b *store.BlobWriter) string {
		b.Write([]byte("Return-Path: <ana@example.org>\r\n" + body))
		err := e.st.Deliver(ctx, &store.Commit{Blob: b, From: "ana@example.org",
			Recipients: []store.Recipient{{Address: "bob@remote.example", Remote: true}}})
		if err != nil {
			t.Fatal(err)
		}
		return b.ID()
	}
	check := func(what, id string, inMemory bool) {
		t.Helper()
		c, size, err := openContent(ctx, e.st, id)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		defer c.Close()
		if inMemory != (c.mem != nil) || c.mem != nil && string(c.mem) != body {
			t.Errorf("%s: in memory %q, want %v", what, c.mem, inMemory)
		}
		got := make([]byte, size+1)
		n, _ := c.ReadAt(got, 0)
		if string(got[:n]) != body || size != int64(len(body)) {
			t.Errorf("%s: content %q (size %d), want %q", what, got[:n], size, body)
		}
	}
	bb, err := e.st.NewBufferedBlob()
	if err != nil {
		t.Fatal(err)
	}
	inline := deliver(bb)
	fb, err := e.st.NewBlob()
	if err != nil {
		t.Fatal(err)
	}
	file := deliver(fb)
	check("cached", inline, true)
	check("file", file, false)
	// A new Store has nothing cached: the bytes come from the row.
	e.st.Close()
	e.st = nil
	e.open()
	check("from the database", inline, true)
	check("file after reopening", file, false)
}
