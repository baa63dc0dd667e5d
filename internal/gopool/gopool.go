// Package gopool runs functions on goroutines that are reused. A new goroutine starts with a
// small stack and grows it, copying the whole stack each time, the first time its work goes
// deep (an SMTP session's first RCPT, a delivery's first write). Work that comes one piece
// per connection or per message pays that on every piece; a reused goroutine has grown its
// stack already.
package gopool

import "sync"

// Pool runs functions on reused goroutines. It keeps up to MaxIdle goroutines waiting for
// work. The zero value is ready to use with DefaultMaxIdle.
type Pool struct {
	MaxIdle int // 0 means DefaultMaxIdle

	mu      sync.Mutex
	work    chan func()
	quit    chan struct{}
	closed  bool
	idle    int
	started int // goroutines started, for tests
}

// DefaultMaxIdle is the number of idle goroutines a Pool keeps by default.
const DefaultMaxIdle = 32

// Go runs f on an idle goroutine of the pool, or on a new one. It never waits for f (at
// most for an idle goroutine that has just counted itself idle to reach its receive).
func (p *Pool) Go(f func()) {
	p.mu.Lock()
	if p.work == nil {
		p.work, p.quit = make(chan func()), make(chan struct{})
	}
	if p.idle > 0 && !p.closed {
		// Claimed under the lock: an idle goroutine counts itself before it waits on work,
		// and a send that did not wait could miss it in between and start a goroutine too
		// many.
		p.idle--
		work, quit := p.work, p.quit
		p.mu.Unlock()
		select {
		case work <- f:
			return
		case <-quit: // closed meanwhile: the claimed goroutine ends
		}
		p.mu.Lock()
	}
	p.started++
	p.mu.Unlock()
	go p.worker(f)
}

// Close ends the idle goroutines, and each busy one once its function returns. Go still
// works after Close, on a new goroutine each time.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	p.idle = 0 // every idle goroutine ends
	if p.quit != nil {
		close(p.quit)
	}
}

func (p *Pool) worker(f func()) {
	max := p.MaxIdle
	if max <= 0 {
		max = DefaultMaxIdle
	}
	for {
		f()
		f = nil // not kept alive while idle
		p.mu.Lock()
		if p.closed || p.idle >= max {
			p.mu.Unlock()
			return
		}
		p.idle++
		p.mu.Unlock()
		select {
		case f = <-p.work: // Go took it off the idle count
		case <-p.quit: // Close set the idle count to 0
			return
		}
	}
}

// state reports the idle goroutines and how many were started, for tests.
func (p *Pool) state() (idle, started int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.idle, p.started
}
