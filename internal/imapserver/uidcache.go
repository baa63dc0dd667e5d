package imapserver

import (
	"context"
	"slices"
	"sync"

	"yubin/internal/store"
)

// uidCache keeps the UID list of recently selected mailboxes, so that SELECT and EXAMINE of a
// large mailbox read one mailbox row instead of every entry (Dovecot keeps the same list in
// its on-disk index). An entry is valid for one HIGHESTMODSEQ: every change to a mailbox
// raises it (store: MODSEQ advances on every change), so a cached list whose modseq is the
// mailbox's is exact, and an older one is brought up to date from ChangesSince, which reads
// only what changed. Sessions copy the list: their views change it as they announce changes.
type uidCache struct {
	mu    sync.Mutex
	m     map[int64]*uidEntry
	total int // UIDs held, bounded by uidCacheMax
}

type uidEntry struct {
	modseq      uint64
	uids        []uint32 // shared, never modified
	firstUnseen uint32   // sequence number, valid at modseq
}

// uidCacheMax bounds the UIDs the cache holds (4 bytes each).
const uidCacheMax = 4 << 20

func (c *uidCache) get(id int64) *uidEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id]
}

func (c *uidCache) put(id int64, e *uidEntry) {
	if len(e.uids) > uidCacheMax/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[int64]*uidEntry{}
	}
	if old := c.m[id]; old != nil {
		if old.modseq > e.modseq {
			return // a newer list is already there
		}
		c.total -= len(old.uids)
	}
	for k, v := range c.m { // evict arbitrary entries: a cache miss costs one full read
		if c.total+len(e.uids) <= uidCacheMax {
			break
		}
		c.total -= len(v.uids)
		delete(c.m, k)
	}
	c.m[id] = e
	c.total += len(e.uids)
}

// snapshot returns what SELECT needs of a mailbox, from the cache when it can. The UIDs
// returned belong to the caller.
func (s *Server) snapshot(ctx context.Context, accountID int64, name string) (store.MailboxSnapshot, error) {
	m, err := s.Store.GetMailbox(ctx, accountID, name)
	if err != nil {
		return store.MailboxSnapshot{}, err
	}
	if e := s.uids.get(m.ID); e != nil && e.modseq <= m.HighestModSeq {
		if e.modseq == m.HighestModSeq {
			return snapshotOf(m, e), nil
		}
		if e, err := s.advance(ctx, m.ID, e); err == nil {
			m.HighestModSeq = e.modseq
			return snapshotOf(m, e), nil
		}
	}
	snap, err := s.Store.SnapshotMailbox(ctx, accountID, name)
	if err != nil {
		return snap, err
	}
	s.uids.put(snap.ID, &uidEntry{modseq: snap.HighestModSeq, uids: slices.Clone(snap.UIDs), firstUnseen: snap.FirstUnseen})
	return snap, nil
}

func snapshotOf(m store.Mailbox, e *uidEntry) store.MailboxSnapshot {
	snap := store.MailboxSnapshot{Mailbox: m, UIDs: slices.Clone(e.uids), FirstUnseen: e.firstUnseen}
	snap.Messages = len(snap.UIDs)
	if n := len(snap.UIDs); n > 0 && snap.UIDNext <= snap.UIDs[n-1] {
		snap.UIDNext = snap.UIDs[n-1] + 1
	}
	return snap
}

// advance applies what changed since a cached list's modseq: new entries (UIDs above the
// list's last) are appended, expunged ones removed; flag changes only move the first unseen
// message, which is read again (one indexed row).
func (s *Server) advance(ctx context.Context, mailboxID int64, e *uidEntry) (*uidEntry, error) {
	ch, err := s.Store.ChangesSince(ctx, mailboxID, e.modseq)
	if err != nil {
		return nil, err
	}
	uids := slices.Clone(e.uids)
	if len(ch.Expunged) > 0 {
		gone := make(map[uint32]bool, len(ch.Expunged))
		for _, u := range ch.Expunged {
			gone[u] = true
		}
		uids = slices.DeleteFunc(uids, func(u uint32) bool { return gone[u] })
	}
	for _, c := range ch.Changed {
		if len(uids) == 0 || c.UID > uids[len(uids)-1] {
			uids = append(uids, c.UID)
		}
	}
	first, err := s.Store.FirstUnseen(ctx, mailboxID)
	if err != nil {
		return nil, err
	}
	n := &uidEntry{modseq: ch.HighestModSeq, uids: uids}
	if i, ok := slices.BinarySearch(uids, first); ok && first != 0 {
		n.firstUnseen = uint32(i + 1)
	}
	s.uids.put(mailboxID, n)
	return n, nil
}
