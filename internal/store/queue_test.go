package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

// deliverRemote commits a message for remote recipients with DSN parameters.
func deliverRemote(t testing.TB, s *Store, from string, rcpts ...string) string {
	t.Helper()
	b := newBlob(t, s, []byte("Return-Path: <"+from+">\r\nSubject: hi\r\n\r\nhi\r\n"))
	c := &Commit{Blob: b, From: from, Ret: "HDRS", EnvID: "env+2B1", EightBit: true}
	for _, r := range rcpts {
		c.Recipients = append(c.Recipients, Recipient{Address: r, Remote: true, Notify: "FAILURE,DELAY", ORCPT: "rfc822;" + r})
	}
	if err := s.Deliver(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return b.ID()
}

func TestQueueLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s := newTestStore(t, Options{Now: clock})
	id := deliverRemote(t, s, "ana@example.org", "Bob@Remote.Example", "carol@remote.example")

	if _, ok, _ := s.NextQueueAttempt(ctx); !ok {
		t.Fatal("NextQueueAttempt: none after a commit")
	}
	es, err := s.ClaimQueue(ctx, QueueQueued, now, 10)
	if err != nil || len(es) != 2 {
		t.Fatalf("ClaimQueue = %d entries, %v", len(es), err)
	}
	e := es[0]
	if e.MessageID != id || e.From != "ana@example.org" || e.Rcpt != "Bob@Remote.Example" || e.Domain != "remote.example" ||
		e.State != QueueActive || e.Notify != "FAILURE,DELAY" || e.ORCPT != "rfc822;Bob@Remote.Example" ||
		e.Ret != "HDRS" || e.EnvID != "env+2B1" || !e.EightBit || e.SMTPUTF8 || e.Size == 0 ||
		!e.ReceivedAt.Equal(now) || !e.Created.Equal(now) || !e.Expires.Equal(now.Add(5*24*time.Hour)) {
		t.Errorf("claimed entry %+v", e)
	}
	if again, _ := s.ClaimQueue(ctx, QueueQueued, now, 10); len(again) != 0 {
		t.Errorf("claimed entries claimed again: %d", len(again))
	}
	if _, ok, _ := s.NextQueueAttempt(ctx); ok {
		t.Error("NextQueueAttempt counts claimed entries")
	}

	// Bob: deferred with a timeline; Carol: delivered.
	next := now.Add(5 * time.Minute)
	err = s.UpdateQueue(ctx, []QueueUpdate{
		{ID: es[0].ID, Claim: QueueActive, State: QueueQueued, NextAttempt: next, CountAttempt: true,
			LastError: "451 4.7.1 greylisted", LastMX: "mx.remote.example", LastAttempt: now, SetWarned: true,
			Timeline: []QueueAttempt{{Time: now, MX: "mx.remote.example", IP: "192.0.2.1", TLS: "TLS1.3", Reply: "451 4.7.1 greylisted"}}},
		{ID: es[1].ID, Delete: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	e, err = s.GetQueueEntry(ctx, es[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if e.State != QueueQueued || e.Attempts != 1 || !e.NextAttempt.Equal(next) || e.LastError != "451 4.7.1 greylisted" ||
		e.LastMX != "mx.remote.example" || !e.LastAttempt.Equal(now) || !e.Warned {
		t.Errorf("deferred entry %+v", e)
	}
	tl, err := s.QueueTimeline(ctx, e.ID)
	if err != nil || len(tl) != 1 || tl[0].IP != "192.0.2.1" || tl[0].TLS != "TLS1.3" || !tl[0].Time.Equal(now) {
		t.Errorf("timeline %+v, %v", tl, err)
	}
	if _, err := s.GetQueueEntry(ctx, es[1].ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("delivered entry: %v", err)
	}
	if got, ok, _ := s.NextQueueAttempt(ctx); !ok || !got.Equal(next) {
		t.Errorf("NextQueueAttempt = %v %v, want %v", got, ok, next)
	}
	if es, _ := s.ClaimQueue(ctx, QueueQueued, next.Add(-time.Second), 10); len(es) != 0 {
		t.Error("an entry was claimed before it was due")
	}

	// A claim that outlives its process is released at the next start.
	if es, _ := s.ClaimQueue(ctx, QueueQueued, next, 10); len(es) != 1 {
		t.Fatalf("claim at due time: %d", len(es))
	}
	if n, err := s.ResetQueueClaims(ctx); err != nil || n != 1 {
		t.Errorf("ResetQueueClaims = %d, %v", n, err)
	}

	// The last entry deleted takes the message and its file with it (the message named by
	// the caller, as the scheduler does; TestQueueDeleteKeepsMailboxCopy reads it back).
	es, _ = s.ClaimQueue(ctx, QueueQueued, next, 10)
	if err := s.UpdateQueue(ctx, []QueueUpdate{{ID: es[0].ID, Delete: true, MessageID: es[0].MessageID, BlobPath: es[0].BlobPath}}); err != nil {
		t.Fatal(err)
	}
	// Deleting it again (an operator was first) changes nothing.
	if err := s.UpdateQueue(ctx, []QueueUpdate{{ID: es[0].ID, Delete: true, MessageID: es[0].MessageID, BlobPath: es[0].BlobPath}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.OpenMessage(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("message after its last entry: %v", err)
	}
	assertNoFile(t, s, id)
	if n, _ := s.QueueLen(ctx); n != 0 {
		t.Errorf("queue %d", n)
	}
}

// The message stays while a mailbox still holds it.
func TestQueueDeleteKeepsMailboxCopy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	ana := mustAccount(t, s, "ana@example.org")
	b := newBlob(t, s, []byte("x"))
	if err := s.Deliver(ctx, &Commit{Blob: b, Recipients: []Recipient{local(ana.ID), {Address: "x@remote.example", Remote: true}}}); err != nil {
		t.Fatal(err)
	}
	es, _ := s.ClaimQueue(ctx, QueueQueued, time.Now(), 10)
	if err := s.UpdateQueue(ctx, []QueueUpdate{{ID: es[0].ID, Delete: true}}); err != nil {
		t.Fatal(err)
	}
	f, _, err := s.OpenMessage(ctx, b.ID())
	if err != nil {
		t.Fatalf("message in a mailbox was deleted: %v", err)
	}
	f.Close()
	if ok, err := s.DeleteMessageIfUnreferenced(ctx, b.ID()); ok || err != nil {
		t.Errorf("DeleteMessageIfUnreferenced = %v, %v", ok, err)
	}
}

func TestQueueOperator(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	s := newTestStore(t, Options{Now: func() time.Time { return now }})
	deliverRemote(t, s, "ana@example.org", "a@r.example", "b@r.example", "c@r.example")
	all, err := s.ListQueue(ctx)
	if err != nil || len(all) != 3 {
		t.Fatalf("ListQueue = %d, %v", len(all), err)
	}
	later := now.Add(time.Hour)
	ups := make([]QueueUpdate, len(all))
	es, _ := s.ClaimQueue(ctx, QueueQueued, now, 10)
	for i, e := range es {
		ups[i] = QueueUpdate{ID: e.ID, Claim: QueueActive, State: QueueQueued, NextAttempt: later}
	}
	if err := s.UpdateQueue(ctx, ups); err != nil {
		t.Fatal(err)
	}

	if n, err := s.RetryQueue(ctx, all[0].ID, now); err != nil || n != 1 {
		t.Errorf("RetryQueue(one) = %d, %v", n, err)
	}
	if n, err := s.RetryQueue(ctx, 0, now); err != nil || n != 2 {
		t.Errorf("RetryQueue(all) = %d, %v", n, err)
	}
	if _, err := s.RetryQueue(ctx, 999, now); !errors.Is(err, ErrNotFound) {
		t.Errorf("RetryQueue(missing): %v", err)
	}

	if err := s.FailQueueEntry(ctx, all[1].ID, now, "554 5.0.0 cancelled"); err != nil {
		t.Fatal(err)
	}
	if e, _ := s.GetQueueEntry(ctx, all[1].ID); e.State != QueueFailed || e.LastError != "554 5.0.0 cancelled" {
		t.Errorf("failed entry %+v", e)
	}
	if _, err := s.RetryQueue(ctx, all[1].ID, now); err == nil || !strings.Contains(err.Error(), "failed") {
		t.Errorf("RetryQueue of a failed entry: %v", err)
	}
	if got, ok, _ := s.NextQueueAttempt(ctx); !ok || !got.Equal(now) {
		t.Errorf("NextQueueAttempt %v %v", got, ok)
	}
	if es, _ := s.ClaimQueue(ctx, QueueFailed, now, 10); len(es) != 1 || es[0].State != QueueBouncing {
		t.Errorf("claim failed: %+v", es)
	}

	// An entry removed while claimed: the scheduler's late update changes nothing.
	es, _ = s.ClaimQueue(ctx, QueueQueued, now, 10)
	if len(es) != 2 {
		t.Fatalf("claimed %d", len(es))
	}
	if err := s.RemoveQueueEntry(ctx, es[0].ID); err != nil {
		t.Fatal(err)
	}
	in, err := s.QueueIDsInState(ctx, QueueActive, []int64{es[0].ID, es[1].ID})
	if err != nil || in[es[0].ID] || !in[es[1].ID] {
		t.Errorf("QueueIDsInState = %v, %v", in, err)
	}
	err = s.UpdateQueue(ctx, []QueueUpdate{{ID: es[0].ID, Claim: QueueActive, State: QueueQueued, CountAttempt: true,
		Timeline: []QueueAttempt{{Time: now, Reply: "451"}}}})
	if err != nil {
		t.Errorf("update of a removed entry: %v", err)
	}
	if _, err := s.GetQueueEntry(ctx, es[0].ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed entry came back: %v", err)
	}
	if err := s.RemoveQueueEntry(ctx, es[0].ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
}

// queryPlan returns SQLite's plan for q, one line per step.
func queryPlan(t *testing.T, s *Store, q string, args ...any) string {
	t.Helper()
	rows, err := s.r.Query(`EXPLAIN QUERY PLAN `+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	return strings.Join(plan, "\n")
}

// The claim reads the index in order: no sort, no scan of the table, whatever its size.
func TestQueueClaimUsesIndex(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, Options{})
	plan := queryPlan(t, s, `SELECT `+queueCols+`
		FROM queue q JOIN messages m ON m.id = q.message_id
		WHERE q.state = ? AND q.next_attempt <= ? ORDER BY q.next_attempt, q.id LIMIT ?`, "queued", 0, 10)
	if !strings.Contains(plan, "queue_due") || strings.Contains(plan, "TEMP B-TREE") || strings.Contains(plan, "SCAN q") {
		t.Errorf("claim query plan:\n%s", plan)
	}
	// The next attempt: one probe of the same index per state.
	plan = queryPlan(t, s, nextAttemptSQL, "queued", "failed")
	if strings.Count(plan, "queue_due") != 2 || strings.Contains(plan, "TEMP B-TREE") || strings.Contains(plan, "SCAN queue") {
		t.Errorf("next attempt query plan:\n%s", plan)
	}
}

// NextQueueAttempt is the earliest of the queued and the failed entries.
func TestNextQueueAttemptBothStates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	s := newTestStore(t, Options{Now: func() time.Time { return now }})
	if _, ok, err := s.NextQueueAttempt(ctx); ok || err != nil {
		t.Fatalf("empty queue: ok %v, %v", ok, err)
	}
	deliverRemote(t, s, "ana@example.org", "bob@remote.example", "carol@remote.example")
	es, err := s.ClaimQueue(ctx, QueueQueued, now, 10)
	if err != nil || len(es) != 2 {
		t.Fatalf("ClaimQueue = %d entries, %v", len(es), err)
	}
	failedAt, queuedAt := now.Add(time.Minute), now.Add(time.Hour)
	err = s.UpdateQueue(ctx, []QueueUpdate{
		{ID: es[0].ID, Claim: QueueActive, State: QueueFailed, NextAttempt: failedAt},
		{ID: es[1].ID, Claim: QueueActive, State: QueueQueued, NextAttempt: queuedAt},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok, err := s.NextQueueAttempt(ctx); !ok || err != nil || !got.Equal(failedAt) {
		t.Errorf("NextQueueAttempt = %v %v %v, want the failed entry's %v", got, ok, err, failedAt)
	}
	if err := s.UpdateQueue(ctx, []QueueUpdate{{ID: es[0].ID, Delete: true}}); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := s.NextQueueAttempt(ctx); !ok || err != nil || !got.Equal(queuedAt) {
		t.Errorf("NextQueueAttempt = %v %v %v, want the queued entry's %v", got, ok, err, queuedAt)
	}
}

// BenchmarkClaimQueue measures one scheduler cycle per due entry (claim it, then record a
// deferral with a timeline line) with queues of different sizes. The cost per entry stays
// flat as the queue grows: the claim reads queue_due in order and stops at the batch size.
func BenchmarkClaimQueue(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("queued=%d", n), func(b *testing.B) {
			ctx := context.Background()
			s := newTestStore(b, Options{})
			t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			fillQueue(b, s, n, t0)
			const batch = 100
			now := t0
			entries := 0
			b.ResetTimer()
			for b.Loop() {
				es, err := s.ClaimQueue(ctx, QueueQueued, now, batch)
				if err != nil {
					b.Fatal(err)
				}
				if len(es) < batch {
					// Everything due was done once: the whole queue is due again later.
					now = now.Add(2 * time.Hour)
					continue
				}
				ups := make([]QueueUpdate, len(es))
				for i, e := range es {
					ups[i] = QueueUpdate{ID: e.ID, Claim: QueueActive, State: QueueQueued, NextAttempt: now.Add(time.Hour),
						CountAttempt: true, LastError: "451 4.7.1 later", LastAttempt: now,
						Timeline: []QueueAttempt{{Time: now, MX: "mx", Reply: "451 4.7.1 later"}}}
				}
				if err := s.UpdateQueue(ctx, ups); err != nil {
					b.Fatal(err)
				}
				entries += len(es)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max(entries, 1)), "ns/entry")
		})
	}
}

// fillQueue inserts n messages with one queue row each, all due at t0, in one transaction.
func fillQueue(b *testing.B, s *Store, n int, t0 time.Time) {
	b.Helper()
	tx, err := s.w.Begin()
	if err != nil {
		b.Fatal(err)
	}
	msg, _ := tx.Prepare(`INSERT INTO messages (id, blob_path, size, received_at, env_from) VALUES (?, ?, 100, ?, 'a@example.org')`)
	q, _ := tx.Prepare(insertQueueSQL)
	for i := range n {
		id := fmt.Sprintf("m%015d", i)
		if _, err := msg.Exec(id, "blobs/x/"+id, unix(t0)); err != nil {
			b.Fatal(err)
		}
		rcpt := fmt.Sprintf("r%d@d%d.example", i, i%50)
		if _, err := q.Exec(nil, id, rcpt, recipientDomain(rcpt), string(QueueQueued), unix(t0), unix(t0), unix(t0.Add(5*24*time.Hour)), "", "", "", "", 0, 0); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// A small message is kept in memory for its first readers (the relay, the IMAP indexer),
// and forgotten when they are done or the message is deleted.
func TestMessageCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	ana := mustAccount(t, s, "ana@example.org")
	deliver := func(body string, r Recipient) string {
		t.Helper()
		b, err := s.NewBufferedBlob()
		if err != nil {
			t.Fatal(err)
		}
		b.Write([]byte(body))
		if err := s.Deliver(ctx, &Commit{Blob: b, From: "ana@example.org", Recipients: []Recipient{r}}); err != nil {
			t.Fatal(err)
		}
		return b.ID()
	}
	read := func(id string) string {
		t.Helper()
		r, _, err := s.OpenMessage(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var sb strings.Builder
		if _, err := io.Copy(&sb, r); err != nil {
			t.Fatal(err)
		}
		return sb.String()
	}
	first := deliver("Subject: one\r\n\r\nfirst\r\n", Recipient{Address: "bob@remote.example", Remote: true})
	if _, ok := s.mc.get(first); !ok {
		t.Fatal("a relayed message is not cached after its commit")
	}
	// The next commit reuses the pooled buffer: the cached copy must not change with it.
	// A message for a mailbox waits in the cache for the IMAP indexer, which releases it.
	second := deliver("Subject: two\r\n\r\nsecond, longer than the first\r\n", local(ana.ID))
	if got := read(first); got != "Subject: one\r\n\r\nfirst\r\n" {
		t.Errorf("cached message reads %q", got)
	}
	if _, ok := s.mc.get(second); !ok {
		t.Fatal("a message for a mailbox is not cached for the indexer")
	}
	if err := s.PutMessageMeta(ctx, map[string]MessageMeta{second: {Envelope: []byte("e")}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.mc.get(second); ok {
		t.Error("an indexed message stays cached")
	}
	if got := read(second); got != "Subject: two\r\n\r\nsecond, longer than the first\r\n" {
		t.Errorf("indexed message reads %q from the database", got)
	}

	es, err := s.ClaimQueue(ctx, QueueQueued, time.Now(), 10)
	if err != nil || len(es) != 1 {
		t.Fatalf("ClaimQueue = %d entries, %v", len(es), err)
	}
	if err := s.UpdateQueue(ctx, []QueueUpdate{{ID: es[0].ID, Delete: true}}); err != nil {
		t.Fatal(err)
	}
	if s.mc.len() != 0 {
		t.Error("a delivered message stays cached")
	}
	if _, _, err := s.OpenMessage(ctx, first); !errors.Is(err, ErrNotFound) {
		t.Errorf("delivered message: %v, want not found", err)
	}
}

func TestMsgCacheBound(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 5, 6, 0, 0, 0, time.UTC)
	c := msgCache{max: 12, now: func() time.Time { return now }}
	for _, id := range []string{"a", "b", "c", "d", "e"} { // 15 bytes: the newest is refused
		c.put(id, []byte(id+id+id), 2)
	}
	if _, ok := c.get("e"); ok || c.len() != 4 || c.size != 12 {
		t.Errorf("when full: e cached %v, %d entries, %d bytes", ok, c.len(), c.size)
	}
	now = now.Add(msgCacheAge)
	c.put("f", []byte("fff"), 1) // a's readers are late: f takes its place
	if _, ok := c.get("a"); ok {
		t.Error("an entry older than msgCacheAge kept its place when full")
	}
	if _, ok := c.get("f"); !ok || c.len() != 4 || c.size != 12 {
		t.Errorf("after an old entry made room: f cached %v, %d entries, %d bytes", ok, c.len(), c.size)
	}
	c.drop("b")
	if d, ok := c.get("c"); !ok || string(d) != "ccc" || c.size != 9 {
		t.Errorf("after drop: c = %q %v, %d bytes", d, ok, c.size)
	}
	c.release("c") // one of its two readers
	if _, ok := c.get("c"); !ok {
		t.Error("released by one of two readers: gone")
	}
	c.release("c")
	if _, ok := c.get("c"); ok || c.size != 6 {
		t.Errorf("released by both readers: cached %v, %d bytes", ok, c.size)
	}
	c.put("big", make([]byte, 4), 1) // more than a quarter of the bound: not kept
	if _, ok := c.get("big"); ok {
		t.Error("an entry over a quarter of the bound was cached")
	}
	for i := range 1000 { // dropped ids do not pile up in the order list
		id := fmt.Sprint(i)
		c.put(id, []byte("x"), 1)
		c.release(id)
	}
	if len(c.order) > 2*c.len()+64 {
		t.Errorf("order list holds %d ids for %d entries", len(c.order), c.len())
	}
}

// Queue ids come from blocks recorded in sqlite_sequence: commits inside a block leave it
// alone, ids keep rising across a restart and are never reused, even with the queue empty.
func TestQueueIDBlocks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	seq := func(s *Store) int64 {
		t.Helper()
		var n int64
		if err := s.r.QueryRowContext(ctx, `SELECT seq FROM sqlite_sequence WHERE name = 'queue'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	relay := func(s *Store, n int) []int64 {
		t.Helper()
		var ids []int64
		for i := range n {
			c := &Commit{Blob: newBlob(t, s, []byte("Subject: x\r\n\r\nx\r\n")), From: "a@example.org",
				Recipients: []Recipient{{Address: fmt.Sprintf("r%d@remote.example", i), Remote: true}}, Claim: true}
			if err := s.Deliver(ctx, c); err != nil {
				t.Fatal(err)
			}
			for _, e := range c.Claimed {
				ids = append(ids, e.ID)
			}
		}
		return ids
	}

	first := relay(s, 5)
	if !slices.Equal(first, []int64{1, 2, 3, 4, 5}) {
		t.Errorf("ids %v, want 1 to 5", first)
	}
	if got := seq(s); got != queueIDBlock {
		t.Errorf("sqlite_sequence %d after 5 commits, want the block's end %d", got, queueIDBlock)
	}
	// Delivered: the queue is empty, which would make SQLite's own choice start over.
	var ups []QueueUpdate
	for _, id := range first {
		ups = append(ups, QueueUpdate{ID: id, Delete: true})
	}
	if err := s.UpdateQueue(ctx, ups); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	after := relay(s, 2)
	if !slices.Equal(after, []int64{queueIDBlock + 1, queueIDBlock + 2}) {
		t.Errorf("ids after a restart %v, want %d and %d", after, queueIDBlock+1, queueIDBlock+2)
	}
}

// A block reserved in a transaction that rolled back was never recorded: the allocator
// forgets it (reset), or it would hand out ids that SQLite gives to rows added without one.
func TestQueueIDBlockRolledBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	var q queueIDs
	insert := func(id any) int64 {
		t.Helper()
		if _, err := s.w.ExecContext(ctx, `INSERT INTO messages (id, blob_path, size, received_at, env_from) VALUES ('m', '', 1, 0, '') ON CONFLICT DO NOTHING`); err != nil {
			t.Fatal(err)
		}
		res, err := s.w.ExecContext(ctx, insertQueueSQL, id, "m", "r@remote.example", "remote.example", string(QueueQueued), 0, 0, 0, "", "", "", "", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := res.LastInsertId()
		return n
	}

	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := q.take(ctx, tx); err != nil || id != 1 {
		t.Fatalf("take: %d, %v; want 1", id, err)
	}
	tx.Rollback()
	q.reset()
	// Rows added without an id meanwhile take 1 and 2.
	insert(nil)
	insert(nil)
	tx, err = s.w.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	id, err := q.take(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	if id != 3 {
		t.Errorf("id after a rolled back block: %d, want 3", id)
	}
}
