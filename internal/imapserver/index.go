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
	st   IndexStore
	log  *slog.Logger
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	started sync.Once

	// Queued ids wait in ids; wake tells the worker that ids became non-empty.
	mu   sync.Mutex
	ids  []string
	wake chan struct{}
}

// indexWrite is the most messages written in one transaction; indexDelay is the longest a
// parsed message waits for others to share its write. indexGather is how long the worker
// lets new mail gather after the first message of a round before it parses them all;
// indexQueueMax bounds the messages waiting (past it, the first FETCH parses them).
const (
	indexDelay    = 250 * time.Millisecond
	indexWrite    = 32
	indexGather   = 20 * time.Millisecond
	indexQueueMax = 16384
)

// NewIndexer makes an Indexer; Start runs its worker and Close stops it. Messages queued
// before Start wait (up to indexQueueMax).
func NewIndexer(st IndexStore, log *slog.Logger) *Indexer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Indexer{st: st, log: log, stop: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// Start runs the background worker (once).
func (ix *Indexer) Start() {
	ix.started.Do(func() {
		ix.wg.Add(1)
		go ix.run()
	})
}

// Queue asks for a message to be indexed. It never blocks, and wakes the worker only for
// the first message of a round: one SMTP session delivering a message a millisecond would
// otherwise wake it (a goroutine, and often a thread, switched in and out) for every one.
func (ix *Indexer) Queue(messageID string) {
	ix.mu.Lock()
	if len(ix.ids) >= indexQueueMax {
		ix.mu.Unlock()
		return // behind: the first FETCH will parse it
	}
	ix.ids = append(ix.ids, messageID)
	first := len(ix.ids) == 1
	ix.mu.Unlock()
	if first {
		select {
		case ix.wake <- struct{}{}:
		default:
		}
	}
}

// Close stops the worker after writing what it has parsed; queued messages are left to FETCH. After
// Close, Start does nothing.
func (ix *Indexer) Close() {
	ix.started.Do(func() {}) // a later Start must not run a worker on a closed store
	ix.once.Do(func() { close(ix.stop) })
	ix.wg.Wait()
}

func (ix *Indexer) run() {
	defer ix.wg.Done()
	ctx := context.Background()
	// New mail is parsed within indexGather of its delivery, while its bytes are still in
	// the store's cache of new mail, a round at a time; the results are written a few at a
	// time: each write holds the store's single writer, and a message commit arriving
	// meanwhile waits for it. A write goes when indexWrite results are ready or the oldest
	// has waited indexDelay.
	metas := make(map[string]store.MessageMeta, indexWrite)
	flush := time.NewTimer(indexDelay)
	flush.Stop()
	gather := time.NewTimer(indexGather)
	gather.Stop()
	write := func() {
		flush.Stop()
		if len(metas) == 0 {
			return
		}
		if err := ix.st.PutMessageMeta(ctx, metas); err != nil {
			ix.log.Warn("index new messages", "count", len(metas), "err", err)
		}
		metas = make(map[string]store.MessageMeta, indexWrite)
	}
	var batch []string
	for {
		select {
		case <-ix.stop:
			write()
			return
		case <-flush.C:
			write()
			continue
		case <-ix.wake:
		}
		gather.Reset(indexGather)
		select {
		case <-ix.stop:
			write()
			return
		case <-gather.C:
		}
		ix.mu.Lock()
		batch, ix.ids = ix.ids, batch[:0]
		ix.mu.Unlock()
		for _, id := range batch {
			first := len(metas) == 0
			ix.index(ctx, id, metas)
			switch {
			case len(metas) >= indexWrite:
				write()
			case first && len(metas) > 0:
				flush.Reset(indexDelay)
			}
		}
		clear(batch)
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
