package main

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"yubin/internal/store"
)

// queueFixture makes a data directory with one message for three remote recipients; the first
// has been tried once (a timeline line), and returns the entry ids.
func queueFixture(t *testing.T) (dir string, ids []int64) {
	t.Helper()
	ctx := context.Background()
	dir = t.TempDir()
	st, err := store.Open(ctx, dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b, err := st.NewBlob()
	if err != nil {
		t.Fatal(err)
	}
	b.Write([]byte("Return-Path: <ana@example.org>\r\nFrom: Ana <ana@example.org>\r\nTo: bob@remote.example\r\n" +
		"Subject: =?utf-8?q?Caf=C3=A9?=\r\nMessage-ID: <m1@example.org>\r\n\r\nhi\r\n"))
	err = st.Deliver(ctx, &store.Commit{Blob: b, From: "ana@example.org", Ret: "HDRS", Recipients: []store.Recipient{
		{Address: "bob@remote.example", Remote: true, Notify: "FAILURE"},
		{Address: "carol@remote.example", Remote: true},
		{Address: "dave@remote.example", Remote: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	es, err := st.ClaimQueue(ctx, store.QueueQueued, now, 10)
	if err != nil || len(es) != 3 {
		t.Fatalf("claim: %d, %v", len(es), err)
	}
	var ups []store.QueueUpdate
	for i, e := range es {
		u := store.QueueUpdate{ID: e.ID, Claim: store.QueueActive, State: store.QueueQueued, NextAttempt: now.Add(time.Hour)}
		if i == 0 {
			u.CountAttempt, u.LastError, u.LastMX, u.LastAttempt = true, "451 4.7.1 greylisted", "mx1.remote.example", now
			u.Timeline = []store.QueueAttempt{
				{Time: now, MX: "mx1.remote.example", IP: "192.0.2.1", TLS: "TLS1.3 verified", Reply: "451 4.7.1 greylisted"},
			}
		}
		ups = append(ups, u)
		ids = append(ids, e.ID)
	}
	if err := st.UpdateQueue(ctx, ups); err != nil {
		t.Fatal(err)
	}
	return dir, ids
}

func runQueue(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := cmdQueue(context.Background(), append(args, "--data", dir), &out)
	return out.String(), err
}

func TestQueueCommands(t *testing.T) {
	t.Parallel()
	dir, ids := queueFixture(t)
	id := func(i int) string { return strconv.FormatInt(ids[i], 10) }

	out, err := runQueue(t, dir, "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ID", "RCPT", "STATE", "bob@remote.example", "carol@remote.example", "queued", "451 4.7.1 greylisted", "3 entries"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}

	out, err = runQueue(t, dir, "show", id(0))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<ana@example.org>", "<bob@remote.example>", "attempts      1",
		"451 4.7.1 greylisted (from mx1.remote.example)", "NOTIFY=FAILURE RET=HDRS",
		"Subject: Café", "Message-Id: <m1@example.org>",
		"timeline:", "mx1.remote.example  192.0.2.1  TLS1.3 verified  451 4.7.1 greylisted"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	out, _ = runQueue(t, dir, "show", id(1))
	if !strings.Contains(out, "no attempt yet") {
		t.Errorf("show of an untried entry:\n%s", out)
	}

	// retry makes an entry due now.
	if out, err = runQueue(t, dir, "retry", id(0)); err != nil || !strings.Contains(out, "1 entry due now") {
		t.Errorf("retry: %q, %v", out, err)
	}
	if out, err = runQueue(t, dir, "retry", "all"); err != nil || !strings.Contains(out, "2 entries due now") {
		t.Errorf("retry all: %q, %v", out, err)
	}
	e := entry(t, dir, ids[0])
	if e.NextAttempt.After(time.Now()) {
		t.Errorf("next attempt %v after retry", e.NextAttempt)
	}

	// bounce fails the entry; the server will send the bounce.
	if out, err = runQueue(t, dir, "bounce", id(0)); err != nil || !strings.Contains(out, "bounce to <ana@example.org>") {
		t.Errorf("bounce: %q, %v", out, err)
	}
	if e := entry(t, dir, ids[0]); e.State != store.QueueFailed || !strings.HasPrefix(e.LastError, "554 5.0.0") ||
		!strings.Contains(e.LastError, "451 4.7.1 greylisted") {
		t.Errorf("bounced entry %+v", e)
	}
	if _, err = runQueue(t, dir, "bounce", id(0)); err == nil {
		t.Error("second bounce of a failed entry succeeded")
	}

	// remove drops without a bounce; the message stays for the other entries.
	if out, err = runQueue(t, dir, "remove", id(1)); err != nil || !strings.Contains(out, "removed") {
		t.Errorf("remove: %q, %v", out, err)
	}
	if _, err = runQueue(t, dir, "show", id(1)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("show of a removed entry: %v", err)
	}
	out, _ = runQueue(t, dir, "list")
	if !strings.Contains(out, "2 entries") || !strings.Contains(out, "failed") {
		t.Errorf("list after changes:\n%s", out)
	}

	for _, args := range [][]string{{}, {"frob"}, {"show"}, {"show", "x"}, {"retry", "0"}, {"list", "extra"}} {
		if _, err := runQueue(t, dir, args...); !errors.As(err, new(usageError)) {
			t.Errorf("queue %v: %v, want a usage error", args, err)
		}
	}
}

func entry(t *testing.T, dir string, id int64) store.QueueEntry {
	t.Helper()
	st, err := store.Open(context.Background(), dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := st.GetQueueEntry(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
