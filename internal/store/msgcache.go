package store

import "sync"

// msgCache keeps the bytes of recently committed small messages until their first readers
// are done with them: the relay's first delivery attempt, a few milliseconds after the
// commit, and the IMAP indexer, which parses new mail within a quarter of a second. They
// read memory instead of the database (for a 100 KiB message, a dozen overflow pages: about
// a tenth of the CPU of relaying it). Messages are immutable, so an entry can never be
// stale; it goes when its readers have released it or its message is deleted. The cache is
// bounded by bytes and forgets its oldest entries first; a miss reads the database as
// before.
type msgCache struct {
	mu    sync.Mutex
	max   int
	size  int
	m     map[string]cachedMsg
	order []string // ids in insertion order; may hold ids already dropped
}

type cachedMsg struct {
	data  []byte
	holds int // readers still to come (release); 0 never stays in the map
}

// msgCacheMax bounds the bytes held: about 160 messages of case b's 100 KiB, a few hundred
// milliseconds of relaying them.
const msgCacheMax = 16 << 20

// put caches data for holds readers, each of which calls release when done.
func (c *msgCache) put(id string, data []byte, holds int) {
	if len(data) > c.max/4 || holds <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedMsg{}
	}
	if _, ok := c.m[id]; ok {
		return
	}
	c.m[id] = cachedMsg{data, holds}
	c.order = append(c.order, id)
	c.size += len(data)
	for c.size > c.max && len(c.order) > 0 {
		old := c.order[0]
		c.order = c.order[1:]
		if e, ok := c.m[old]; ok {
			c.size -= len(e.data)
			delete(c.m, old)
		}
	}
	if len(c.order) > 2*len(c.m)+64 {
		// Dropped ids pile up in order: keep only the live ones.
		live := make([]string, 0, len(c.m))
		for _, id := range c.order {
			if _, ok := c.m[id]; ok {
				live = append(live, id)
			}
		}
		c.order = live
	}
}

func (c *msgCache) get(id string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[id]
	return e.data, ok
}

// release is one reader done with id: the last one removes it.
func (c *msgCache) release(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[id]; ok {
		if e.holds--; e.holds > 0 {
			c.m[id] = e
			return
		}
		c.size -= len(e.data)
		delete(c.m, id)
	}
}

// drop removes id whoever still wanted it (its message is being deleted).
func (c *msgCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[id]; ok {
		c.size -= len(e.data)
		delete(c.m, id)
	}
}

// len reports the number of cached messages (for tests).
func (c *msgCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
