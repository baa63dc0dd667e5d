package store

import "sync"

// msgCache keeps the bytes of recently committed small messages that wait in the relay queue,
// so that the first delivery attempt, a few milliseconds after the commit, reads them from
// memory instead of back out of the database (for a 100 KiB message, a dozen overflow pages:
// about a tenth of the CPU of relaying it). Messages are immutable, so an entry can never be
// stale; it only has to go when its message is deleted. The cache is bounded by bytes and
// forgets its oldest entries first; a miss reads the database as before.
type msgCache struct {
	mu    sync.Mutex
	max   int
	size  int
	m     map[string][]byte
	order []string // ids in insertion order; may hold ids already dropped
}

// msgCacheMax bounds the bytes held: about 160 messages of case b's 100 KiB, a few hundred
// milliseconds of relaying them.
const msgCacheMax = 16 << 20

func (c *msgCache) put(id string, data []byte) {
	if len(data) > c.max/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string][]byte{}
	}
	if _, ok := c.m[id]; ok {
		return
	}
	c.m[id] = data
	c.order = append(c.order, id)
	c.size += len(data)
	for c.size > c.max && len(c.order) > 0 {
		old := c.order[0]
		c.order = c.order[1:]
		if d, ok := c.m[old]; ok {
			c.size -= len(d)
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
	d, ok := c.m[id]
	return d, ok
}

func (c *msgCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := c.m[id]; ok {
		c.size -= len(d)
		delete(c.m, id)
	}
}

// len reports the number of cached messages (for tests).
func (c *msgCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
