package imapserver

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"yubin/internal/store"
)

// IndexStore is what the Indexer needs from the store.
type IndexStore interface {
	OpenMessage(ctx context.Context, messageID string) (store.MessageReader, int64, error)
	PutMessageMeta(ctx context.Context, metas map[string]store.MessageMeta) error
}

// Indexer parses newly delivered messages in the background and caches their envelope, MIME
// structure and search text, so that the first FETCH of a mailbox reads the cache instead of
// parsing every new message then. It runs after the commit, off the SMTP reply path; when
// it falls behind, messages are skipped and parsed at their first FETCH as before (the cache
// is only a cache).
type Indexer struct {
	st      IndexStore
	log     *slog.Logger
	ch      chan string
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	started sync.Once
}

// indexBatch bounds the messages gathered together, indexWrite those written in one
// transaction; indexDelay is how long the worker gathers new messages before it parses and
// writes them.
const (
	indexBatch = 256
	indexDelay = 250 * time.Millisecond
	indexWrite = 32 // messages per write
)

// NewIndexer makes an Indexer; Start runs its worker and Close stops it. Messages queued
// before Start wait (up to the queue's size).
func NewIndexer(st IndexStore, log *slog.Logger) *Indexer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Indexer{st: st, log: log, ch: make(chan string, 16384), stop: make(chan struct{})}
}

// Start runs the background worker (once).
func (ix *Indexer) Start() {
	ix.started.Do(func() {
		ix.wg.Add(1)
		go ix.run()
	})
}

// Queue asks for a message to be indexed. It never blocks.
func (ix *Indexer) Queue(messageID string) {
	select {
	case ix.ch <- messageID:
	default: // behind: the first FETCH will parse it
	}
}

// Close stops the worker after its current batch; queued messages are left to FETCH. After
// Close, Start does nothing.
func (ix *Indexer) Close() {
	ix.started.Do(func() {}) // a later Start must not run a worker on a closed store
	ix.once.Do(func() { close(ix.stop) })
	ix.wg.Wait()
}

func (ix *Indexer) run() {
	defer ix.wg.Done()
	ctx := context.Background()
	for {
		var first string
		select {
		case <-ix.stop:
			return
		case first = <-ix.ch:
		}
		// Gather for a moment: one write per batch instead of one per message keeps the
		// store's single writer free for the commits that clients wait for.
		ids := []string{first}
		gather := time.NewTimer(indexDelay)
	collect:
		for len(ids) < indexBatch {
			select {
			case id := <-ix.ch:
				ids = append(ids, id)
			case <-gather.C:
				break collect
			case <-ix.stop:
				gather.Stop()
				return
			}
		}
		gather.Stop()
		// Parsed and written a few at a time: each write holds the store's single writer,
		// and a message commit arriving meanwhile waits for it, so the writes stay short.
		for len(ids) > 0 {
			n := min(len(ids), indexWrite)
			metas := make(map[string]store.MessageMeta, n)
			for _, id := range ids[:n] {
				ix.index(ctx, id, metas)
			}
			ids = ids[n:]
			if err := ix.st.PutMessageMeta(ctx, metas); err != nil {
				ix.log.Warn("index new messages", "count", len(metas), "err", err)
			}
		}
	}
}

func (ix *Indexer) index(ctx context.Context, id string, metas map[string]store.MessageMeta) {
	r, size, err := ix.st.OpenMessage(ctx, id)
	if err != nil {
		return // expunged already, or unreadable: FETCH will say so
	}
	defer r.Close()
	m, err := IndexMessage(r, size)
	if err != nil {
		ix.log.Debug("index message", "id", id, "err", err)
		return
	}
	metas[id] = m
}
