package imapserver

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"yubin/internal/mailbox/mailtest"
	"yubin/internal/store"
)

// TestIndexerCachesNewMail: a message queued to the Indexer gets the same cache entry as a
// parse at first FETCH would make.
func TestIndexerCachesNewMail(t *testing.T) {
	ctx := context.Background()
	st, acct := indexTestStore(t)
	msg := []byte("From: A <a@example.org>\r\nTo: user@example.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n" +
		"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\n\r\nbody\r\n")
	b, err := st.NewBufferedBlob()
	if err != nil {
		t.Fatal(err)
	}
	b.Write(msg)
	id := b.ID()
	if err := st.Deliver(ctx, &store.Commit{Blob: b, Recipients: []store.Recipient{{Address: "user@example.test", AccountID: acct.ID}}}); err != nil {
		t.Fatal(err)
	}
	ix := NewIndexer(st, nil)
	ix.Queue(id)
	ix.Queue("no-such-message") // skipped, not an error
	ix.Start()
	defer ix.Close()
	var got store.MessageMeta
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := st.GetMessageMeta(ctx, []string{id})
		if err != nil {
			t.Fatal(err)
		}
		if mm, ok := m[id]; ok {
			got = mm
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the indexer did not cache the message")
		}
		time.Sleep(10 * time.Millisecond)
	}
	want, err := IndexMessage(bytes.NewReader(msg), int64(len(msg)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("cached entry differs from a fresh parse:\n got %+v\nwant %+v", got, want)
	}
}

// countingIndexStore records the size of every write the Indexer makes.
type countingIndexStore struct {
	IndexStore
	mu     sync.Mutex
	writes []int
}

func (c *countingIndexStore) PutMessageMeta(ctx context.Context, metas map[string]store.MessageMeta) error {
	c.mu.Lock()
	c.writes = append(c.writes, len(metas))
	c.mu.Unlock()
	return c.IndexStore.PutMessageMeta(ctx, metas)
}

// TestIndexerWritesInSmallTransactions: a burst of new mail is cached in writes of at most
// indexWrite messages (each write holds the store's only writer), and none is left out.
func TestIndexerWritesInSmallTransactions(t *testing.T) {
	st, acct := indexTestStore(t)
	n := 2*indexWrite + 3
	cs := &countingIndexStore{IndexStore: st}
	ix := NewIndexer(cs, nil)
	var ids []string
	for i := range n {
		id := deliverNumbered(t, st, acct, i)
		ids = append(ids, id)
		ix.Queue(id)
	}
	ix.Start()
	defer ix.Close()
	waitCached(t, st, ids)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	total := 0
	for _, w := range cs.writes {
		if w > indexWrite {
			t.Errorf("a write of %d messages, want at most %d", w, indexWrite)
		}
		total += w
	}
	if total != n || len(cs.writes) < 3 {
		t.Errorf("writes %v: want %d messages in at least 3", cs.writes, n)
	}
}

// indexTestStore opens a store with one account, user@example.test.
func indexTestStore(t *testing.T) (*store.Store, store.Account) {
	t.Helper()
	env := mailtest.New(t)
	return env.Store, env.Account
}

// TestIndexerRoundsLoseNothing: mail queued while the worker gathers or parses a round (it
// is woken only by the first message of a round) is indexed in a later one.
func TestIndexerRoundsLoseNothing(t *testing.T) {
	st, acct := indexTestStore(t)
	ix := NewIndexer(st, nil)
	ix.Start()
	defer ix.Close()
	var ids []string
	for i := range 40 {
		id := deliverNumbered(t, st, acct, i)
		ids = append(ids, id)
		ix.Queue(id)
		// Gaps shorter and longer than a round's gathering.
		time.Sleep(time.Duration(i%4) * indexGather / 2)
	}
	waitCached(t, st, ids)
}

// deliverNumbered delivers a small message numbered i into acct's INBOX and returns its id.
func deliverNumbered(t *testing.T, st *store.Store, acct store.Account, i int) string {
	t.Helper()
	b, err := st.NewBufferedBlob()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(b, "From: a@example.org\r\nSubject: %d\r\n\r\nbody\r\n", i)
	if err := st.Deliver(context.Background(), &store.Commit{Blob: b, Recipients: []store.Recipient{{Address: "user@example.test", AccountID: acct.ID}}}); err != nil {
		t.Fatal(err)
	}
	return b.ID()
}

// waitCached waits up to 10 s for every message of ids to have a cache entry.
func waitCached(t *testing.T, st *store.Store, ids []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := st.GetMessageMeta(context.Background(), ids)
		if err != nil {
			t.Fatal(err)
		}
		if len(m) == len(ids) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages cached", len(m), len(ids))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIndexerQueueBounded: past indexQueueMax waiting messages, Queue drops new ones (their
// first FETCH parses them) instead of growing without bound.
func TestIndexerQueueBounded(t *testing.T) {
	st, _ := indexTestStore(t)
	ix := NewIndexer(st, nil) // not started: nothing is taken from the queue
	for i := range indexQueueMax + 10 {
		ix.Queue(fmt.Sprint(i))
	}
	ix.mu.Lock()
	n := len(ix.ids)
	ix.mu.Unlock()
	if n != indexQueueMax {
		t.Errorf("%d messages queued, want %d", n, indexQueueMax)
	}
}
