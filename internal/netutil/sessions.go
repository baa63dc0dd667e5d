package netutil

import (
	"context"
	"net"
	"sync"

	"yubin/internal/gopool"
)

// Sessions is the set of open connections of a server that runs one goroutine per session
// (SMTP, POP3): admission under the connection limits, the sessions' goroutines, and what
// Shutdown needs. S is the server's session type. Set Limit before the first Go.
type Sessions[S comparable] struct {
	Limit ConnLimit

	mu     sync.Mutex
	closed bool
	m      map[S]struct{}
	wg     sync.WaitGroup
	pool   gopool.Pool // session goroutines, reused: a connection per message is common
}

// Go admits c and runs its session: mk makes it (under the set's lock, so a counter it
// keeps needs no lock of its own), run serves it in a goroutine of its own (a new one, or
// one whose session ended: see package gopool), and it leaves the set and gives back its
// slot when run returns. When c is not admitted, closed tells that the set is closed, or
// reason which limit was reached; the caller answers and closes c.
func (ss *Sessions[S]) Go(c net.Conn, mk func(ip string) S, run func(S)) (closed bool, reason string) {
	ip := RemoteIP(c.RemoteAddr())
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return true, ""
	}
	if ok, reason := ss.Limit.Acquire(ip); !ok {
		ss.mu.Unlock()
		return false, reason
	}
	sess := mk(ip)
	if ss.m == nil {
		ss.m = map[S]struct{}{}
	}
	ss.m[sess] = struct{}{}
	ss.wg.Add(1)
	ss.mu.Unlock()
	ss.pool.Go(func() {
		defer ss.wg.Done()
		run(sess)
		ss.mu.Lock()
		delete(ss.m, sess)
		ss.mu.Unlock()
		ss.Limit.Release(ip)
	})
	return false, ""
}

// Close admits no more sessions and calls each for every open one (under the set's lock: each
// must not block). It reports whether the set was already closed.
func (ss *Sessions[S]) Close(each func(S)) (wasClosed bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	wasClosed = ss.closed
	ss.closed = true
	ss.pool.Close()
	for sess := range ss.m {
		each(sess)
	}
	return wasClosed
}

// Wait waits until every session has ended, or until ctx ends (then ctx.Err()).
func (ss *Sessions[S]) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { ss.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
