// Package queue schedules the relay of committed mail to other servers (DESIGN.md "the path of
// one message", steps 5 and 6). The queue itself lives in the store: one row per (message,
// remote recipient), written in the same transaction as the message, so a restart or a
// kill -9 loses nothing (see store/queue.go for the states).
//
// The Scheduler claims due rows in batches, in next-attempt order, through the index on
// (state, next_attempt), and groups them by (message, destination domain): one Deliver call
// carries every due recipient of a message at one domain. At most Concurrency deliveries run
// at once, at most PerDestination to one domain; domains take turns. Each recipient's reply
// decides its fate: 2xx removes the row, 4xx schedules a retry with doubling backoff, 5xx or
// the end of the queue lifetime turns it into a bounce (an RFC 3464 report built by package
// dsn), committed through the Committer like any other message with the null sender. A
// message from the null sender is never bounced, so a bounce cannot loop.
//
// Durability: a bounce is committed before the rows it reports are deleted, so a crash in
// between sends it twice rather than never. A delay warning is marked sent before it is
// committed: at most once, because it is only a courtesy.
package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"yubin/internal/dsn"
	"yubin/internal/gopool"
	"yubin/internal/store"
)

// Store is what the scheduler needs from storage; *store.Store implements it.
type Store interface {
	ClaimQueue(ctx context.Context, from store.QueueState, now time.Time, limit int) ([]store.QueueEntry, error)
	ResetQueueClaims(ctx context.Context) (int, error)
	NextQueueAttempt(ctx context.Context) (time.Time, bool, error)
	QueueIDsInState(ctx context.Context, state store.QueueState, ids []int64) (map[int64]bool, error)
	UpdateQueue(ctx context.Context, ups []store.QueueUpdate) error
	OpenMessage(ctx context.Context, id string) (store.MessageReader, int64, error)
}

// Committer commits a report (bounce or delay warning) as a new message from the null sender
// to the address to, local or remote, and returns its message id. The app wires it to intake.
// An error is retried (every RetryPolicy.First, until a day after the entry's expiry) unless it
// has a Temporary method that returns false: a report nobody can receive is dropped at once.
type Committer interface {
	CommitBounce(ctx context.Context, to string, m *dsn.Message) (id string, err error)
}

// RetryPolicy says when to try again and when to give up. Zero durations take the defaults of
// DefaultRetryPolicy, except DelayWarning, where 0 means no warning.
type RetryPolicy struct {
	First time.Duration // wait after the first temporary failure; doubles each time (5m)
	Max   time.Duration // longest wait between attempts (1h)
	// Lifetime is how long an entry is tried before it bounces (5 days, Postfix's
	// maximal_queue_lifetime). The store writes an expiry on each row at commit
	// (store.Options.QueueLifetime, set it to the same value); a shorter Lifetime here applies
	// to rows already queued.
	Lifetime time.Duration
	// DelayWarning: the sender gets one "delayed" report when an entry is still queued this
	// long after it arrived (4h in DefaultRetryPolicy; 0: never).
	DelayWarning time.Duration
}

// DefaultRetryPolicy returns the defaults: 5m, doubling, at most 1h, for 5 days; a delay
// warning after 4 hours.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{First: 5 * time.Minute, Max: time.Hour, Lifetime: 5 * 24 * time.Hour, DelayWarning: 4 * time.Hour}
}

// Backoff returns the wait after the n-th consecutive temporary failure (n >= 1):
// First, 2*First, 4*First, ... at most Max.
func (p RetryPolicy) Backoff(n int) time.Duration {
	d := p.First
	for i := 1; i < n && d < p.Max; i++ {
		d *= 2
	}
	return min(d, p.Max)
}

// Scheduler runs the outbound queue. Set the fields, then call Run; Wake may be called at any
// time, before Run too.
type Scheduler struct {
	Store     Store
	Deliverer Deliverer
	Bounces   Committer
	Logger    *slog.Logger     // nil: discard
	Now       func() time.Time // nil: time.Now
	Hostname  string           // this MTA's name, for reports (Reporting-MTA, MAILER-DAEMON@)

	Concurrency    int           // deliveries at once; 0: 16
	PerDestination int           // deliveries at once to one domain; 0: 4
	Retry          RetryPolicy   // the zero value is DefaultRetryPolicy()
	PollInterval   time.Duration // how often the store is read for entries made due by another process (yubin queue retry); 0: 2s
	BatchSize      int           // rows claimed per query; 0: 256
	MaxActive      int           // claimed entries held at once (delivering or waiting for a slot); 0: 10000
	MaxReturned    int64         // largest message returned whole under RET=FULL; 0: dsn.DefaultMaxFull

	once  sync.Once
	wakec chan struct{}

	// Entries handed over by commits (Reserve, Take): running says Run's loop takes them;
	// handed counts those reserved and not finished; handq holds those taken and not yet
	// seen by the loop, which handc wakes.
	running atomic.Bool
	handed  atomic.Int64
	handMu  sync.Mutex
	handq   []store.QueueEntry
	handc   chan struct{}
}

// handoffMax bounds the entries handed over by commits and not yet delivered. Past it, new
// mail is queued and claimed by the scheduler's own queries, as under any backlog.
const handoffMax = 64

func (s *Scheduler) init() {
	s.once.Do(func() {
		s.wakec = make(chan struct{}, 1)
		s.handc = make(chan struct{}, 1)
	})
}

// Reserve asks whether the scheduler will take n entries straight from a commit: the commit
// then stores them already claimed (store.Commit.Claim) and passes them to Take, or, if it
// fails, calls Release(n). This saves the scheduler a query and a write per message. Reserve
// declines when Run is not running or when handoffMax entries are handed over already; the
// caller then commits the entries queued and calls Wake.
func (s *Scheduler) Reserve(n int) bool {
	if n <= 0 || !s.running.Load() {
		return false
	}
	for {
		cur := s.handed.Load()
		if cur+int64(n) > handoffMax {
			return false
		}
		if s.handed.CompareAndSwap(cur, cur+int64(n)) {
			return true
		}
	}
}

// Release gives back a reservation whose commit failed.
func (s *Scheduler) Release(n int) { s.handed.Add(-int64(n)) }

// Take hands over the claimed entries of a commit made after Reserve. It never blocks. If
// Run has stopped meanwhile, the entries stay claimed until the next start resets them.
func (s *Scheduler) Take(es []store.QueueEntry) {
	s.init()
	s.handMu.Lock()
	s.handq = append(s.handq, es...)
	s.handMu.Unlock()
	select {
	case s.handc <- struct{}{}:
	default:
	}
}

// Wake makes a running scheduler look for due entries now rather than at its next poll. The
// app calls it after every commit with remote recipients. It never blocks.
func (s *Scheduler) Wake() {
	s.init()
	select {
	case s.wakec <- struct{}{}:
	default:
	}
}

// Run schedules deliveries until ctx ends, then waits for the deliveries in flight (their
// context is ctx, so they end soon), records what they achieved and releases the entries it
// had claimed. It returns nil after ctx ends, or an error if it cannot start.
func (s *Scheduler) Run(ctx context.Context) error {
	s.init()
	if s.Store == nil || s.Deliverer == nil || s.Bounces == nil || s.Hostname == "" {
		return errors.New("queue: Store, Deliverer, Bounces and Hostname must be set")
	}
	r := s.newRunner()
	// Claims do not outlive the process that made them: entries that were being delivered or
	// bounced when it stopped are due again. The reset is one short write, made even when
	// ctx ends meanwhile (a shutdown right after the start is not an error).
	if n, err := s.Store.ResetQueueClaims(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("queue: %w", err)
	} else if n > 0 {
		r.log.Info("queue entries interrupted by the last shutdown are due again", "count", n)
	}
	// Whatever an earlier Run left handed over was released by its reset.
	s.handMu.Lock()
	s.handq = nil
	s.handMu.Unlock()
	s.handed.Store(0)
	s.running.Store(true)
	r.loop(ctx)
	// Entries still handed over, or reserved by a commit in progress, keep their claim until
	// the reset below or, for a commit that ends after it, the next start.
	s.running.Store(false)
	r.records.Wait() // results of deliveries whose slot is already free
	r.workers.Close()
	if _, err := s.Store.ResetQueueClaims(context.WithoutCancel(ctx)); err != nil {
		r.log.Error("release queue claims", "err", err)
	}
	return nil
}

// runner is the state of one Run. Only the loop goroutine touches the maps and counters;
// deliveries run in their own goroutines and report back on done.
type runner struct {
	s   *Scheduler
	log *slog.Logger
	now func() time.Time

	concurrency, perDest, batch, maxActive int
	poll                                   time.Duration
	retry                                  RetryPolicy

	waiting map[groupKey]*group // claimed, not yet dispatched
	domains map[string]*domainQueue
	ring    []string // domains with waiting groups, in turn order
	turn    int
	running int
	held    int  // claimed entries in memory: waiting + running
	full    bool // the last fill stopped at maxActive: there may be more due
	// failedDue: the next fill looks for failed entries too (first fill, then every poll).
	failedDue bool
	// gen counts dispatch passes: a group claimed since the last one (gen equal) has not
	// waited for a slot (see attempt).
	gen  int
	done chan *group
	// records counts attempt goroutines, which free their slot (done) when the delivery
	// is over and then record its results.
	records  sync.WaitGroup
	recorded chan struct{} // results were written with an earlier next attempt (see update)
	// workers runs the attempts on reused goroutines (see package gopool): with one message
	// at a time, each attempt would otherwise grow a new goroutine's stack again.
	workers gopool.Pool

	// The next due time of the entries not in memory, as the store last told it (known,
	// nextAt, nextFound; loop goroutine only), and the earliest next attempt this runner has
	// written since (noted, any goroutine: see update). wait asks the store again only when
	// what it knows has come due, after a poll, or after a store error, not after every
	// wake-up: new mail is due at once and claimed by the fill that its wake-up causes,
	// and every later time written by this process is noted.
	known     bool
	nextAt    time.Time
	nextFound bool
	noteMu    sync.Mutex
	noted     time.Time
}

// update writes attempt outcomes and notes the earliest next attempt among them. When that
// is earlier than what the loop knows, it wakes the loop to set its timer again; outcomes that
// only delete entries (deliveries) need no wake-up.
func (r *runner) update(ctx context.Context, ups []store.QueueUpdate) error {
	err := r.s.Store.UpdateQueue(ctx, ups)
	r.noteMu.Lock()
	earlier := false
	for _, u := range ups {
		if !u.Delete && (r.noted.IsZero() || u.NextAttempt.Before(r.noted)) {
			r.noted = u.NextAttempt
			earlier = true
		}
	}
	r.noteMu.Unlock()
	if earlier {
		select {
		case r.recorded <- struct{}{}:
		default:
		}
	}
	return err
}

type groupKey struct{ msg, domain string }

// group is the due recipients of one message at one domain: one Deliver call.
type group struct {
	key     groupKey
	entries []store.QueueEntry
	gen     int  // the runner's dispatch generation when the group was claimed
	fresh   bool // dispatched right after its claim, without waiting for a slot
	handed  int  // entries that a commit handed over (Scheduler.Take)
}

type domainQueue struct {
	groups  []*group
	running int
}

func (s *Scheduler) newRunner() *runner {
	r := &runner{
		s:           s,
		log:         s.Logger,
		now:         s.Now,
		concurrency: orInt(s.Concurrency, 16),
		perDest:     orInt(s.PerDestination, 4),
		batch:       orInt(s.BatchSize, 256),
		maxActive:   orInt(s.MaxActive, 10000),
		poll:        s.PollInterval,
		retry:       s.Retry,
		waiting:     map[groupKey]*group{},
		domains:     map[string]*domainQueue{},
		failedDue:   true,
	}
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.poll <= 0 {
		r.poll = 2 * time.Second
	}
	def := DefaultRetryPolicy()
	if r.retry == (RetryPolicy{}) {
		r.retry = def
	}
	if r.retry.First <= 0 {
		r.retry.First = def.First
	}
	if r.retry.Max <= 0 {
		r.retry.Max = def.Max
	}
	if r.retry.Lifetime <= 0 {
		r.retry.Lifetime = def.Lifetime
	}
	r.done = make(chan *group, r.concurrency)
	r.recorded = make(chan struct{}, 1)
	return r
}

func orInt(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

func (r *runner) loop(ctx context.Context) {
	// Go >= 1.23 timers: Reset discards a pending tick, so no draining is needed.
	timer := time.NewTimer(r.poll)
	defer timer.Stop()
	refill := true
	for ctx.Err() == nil {
		ok := true
		if refill {
			ok = r.fill(ctx)
		}
		r.dispatch(ctx)
		r.gen++
		timer.Reset(r.wait(ctx, ok))
		refill = false
		select {
		case <-ctx.Done():
		case <-r.s.wakec:
			refill = true
		case <-timer.C:
			refill = true
			r.failedDue = true
			r.known = false // time has passed, and other processes may have changed the queue
		case <-r.s.handc:
			r.takeHanded()
		case g := <-r.done:
			r.finished(g)
			refill = r.full
		case <-r.recorded:
		}
	}
	for r.running > 0 {
		r.finished(<-r.done)
	}
}

// fill claims due entries: failed ones, whose bounce is owed, are bounced at once; queued
// ones are grouped for delivery, up to maxActive in memory. It reports false on a store error.
func (r *runner) fill(ctx context.Context) bool {
	now := r.now()
	// Failed entries (a bounce owed and not yet committed) come from a bounce that could not
	// be committed, a restart or an operator: they are looked for at the first fill and at
	// every poll, not after each wake-up for new mail.
	for r.failedDue {
		es, err := r.s.Store.ClaimQueue(ctx, store.QueueFailed, now, r.batch)
		if err != nil {
			r.log.Error("claim failed queue entries", "err", err)
			return false
		}
		if len(es) > 0 {
			r.bounce(ctx, es)
		}
		if len(es) < r.batch {
			r.failedDue = false
		}
	}
	r.full = false
	for r.held < r.maxActive {
		limit := min(r.batch, r.maxActive-r.held)
		es, err := r.s.Store.ClaimQueue(ctx, store.QueueQueued, now, limit)
		if err != nil {
			r.log.Error("claim due queue entries", "err", err)
			return false
		}
		for _, e := range es {
			r.add(e)
		}
		r.held += len(es)
		if len(es) < limit {
			return true
		}
	}
	r.full = true
	return true
}

// takeHanded adds the entries that commits handed over (Scheduler.Take).
func (r *runner) takeHanded() {
	r.s.handMu.Lock()
	es := r.s.handq
	r.s.handq = nil
	r.s.handMu.Unlock()
	for _, e := range es {
		r.add(e).handed++
	}
	r.held += len(es)
}

// add puts a claimed entry into the waiting group of its message and domain, and returns
// the group.
func (r *runner) add(e store.QueueEntry) *group {
	k := groupKey{e.MessageID, e.Domain}
	if g := r.waiting[k]; g != nil {
		g.entries = append(g.entries, e)
		return g
	}
	g := &group{key: k, entries: []store.QueueEntry{e}, gen: r.gen}
	r.waiting[k] = g
	dq := r.domains[k.domain]
	if dq == nil {
		dq = &domainQueue{}
		r.domains[k.domain] = dq
	}
	if len(dq.groups) == 0 {
		r.ring = append(r.ring, k.domain)
	}
	dq.groups = append(dq.groups, g)
	return g
}

// dispatch starts waiting deliveries while there are free slots, taking domains in turn.
func (r *runner) dispatch(ctx context.Context) {
	for r.running < r.concurrency {
		g := r.pick()
		if g == nil {
			return
		}
		g.fresh = g.gen == r.gen
		r.running++
		r.domains[g.key.domain].running++
		r.records.Add(1)
		r.workers.Go(func() {
			defer r.records.Done()
			r.s.attempt(ctx, r, g, func() { r.done <- g })
		})
	}
}

// pick takes the next group of the first domain, from the current turn on, that has a free
// slot.
func (r *runner) pick() *group {
	for i := range r.ring {
		idx := (r.turn + i) % len(r.ring)
		d := r.ring[idx]
		dq := r.domains[d]
		if dq.running >= r.perDest {
			continue
		}
		g := dq.groups[0]
		dq.groups[0] = nil
		dq.groups = dq.groups[1:]
		delete(r.waiting, g.key)
		if len(dq.groups) == 0 {
			r.ring = append(r.ring[:idx], r.ring[idx+1:]...)
			r.turn = idx
		} else {
			r.turn = idx + 1
		}
		if len(r.ring) > 0 {
			r.turn %= len(r.ring)
		} else {
			r.turn = 0
		}
		return g
	}
	return nil
}

func (r *runner) finished(g *group) {
	r.running--
	r.held -= len(g.entries)
	r.s.handed.Add(-int64(g.handed))
	dq := r.domains[g.key.domain]
	dq.running--
	if dq.running == 0 && len(dq.groups) == 0 {
		delete(r.domains, g.key.domain)
	}
}

// wait returns how long to sleep: until the next entry is due, at most the poll interval.
func (r *runner) wait(ctx context.Context, ok bool) time.Duration {
	if !ok || r.held >= r.maxActive {
		r.known = false
		return r.poll // a store error, or full: a finished delivery wakes the loop
	}
	now := r.now()
	r.noteMu.Lock()
	noted := r.noted
	if !noted.IsZero() && !noted.After(now) {
		// A written next attempt has come due: the store knows whether it is still waiting.
		r.noted, r.known = time.Time{}, false
	}
	r.noteMu.Unlock()
	if !r.known || r.nextFound && !r.nextAt.After(now) {
		next, found, err := r.s.Store.NextQueueAttempt(ctx)
		if err != nil {
			r.log.Error("next queue attempt", "err", err)
			return r.poll
		}
		r.nextAt, r.nextFound, r.known = next, found, true
	}
	next, found := r.nextAt, r.nextFound
	if noted.After(now) && (!found || noted.Before(next)) {
		next, found = noted, true
	}
	if !found {
		return r.poll
	}
	return min(max(next.Sub(now), 0), r.poll)
}
