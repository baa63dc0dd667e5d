package store

import "sync"

// subscribers fans out "this account's mailboxes changed" signals.
type subscribers struct {
	mu sync.Mutex
	m  map[int64]map[*subscription]struct{}
}

type subscription struct {
	c    chan struct{}
	once sync.Once
}

// Subscribe returns a channel that receives a value after each commit that
// touched a mailbox of the account, and a func that ends the subscription
// (and closes the channel; calling it again does nothing). The channel has a
// buffer of one and sends never block: several commits before the reader
// looks show up as one signal, so the reader re-reads the mailbox state
// rather than counting signals. Only commits made through this Store are
// seen, not those of another process.
func (s *Store) Subscribe(accountID int64) (<-chan struct{}, func()) {
	sub := &subscription{c: make(chan struct{}, 1)}
	s.subs.mu.Lock()
	set := s.subs.m[accountID]
	if set == nil {
		set = map[*subscription]struct{}{}
		s.subs.m[accountID] = set
	}
	set[sub] = struct{}{}
	s.subs.mu.Unlock()
	cancel := func() {
		sub.once.Do(func() {
			s.subs.mu.Lock()
			delete(s.subs.m[accountID], sub)
			if len(s.subs.m[accountID]) == 0 {
				delete(s.subs.m, accountID)
			}
			s.subs.mu.Unlock()
			close(sub.c)
		})
	}
	return sub.c, cancel
}

func (ss *subscribers) notify(accountID int64) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for sub := range ss.m[accountID] {
		select {
		case sub.c <- struct{}{}:
		default:
		}
	}
}
