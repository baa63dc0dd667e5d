package queue

import (
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"yubin/internal/dsn"
	"yubin/internal/smtp"
	"yubin/internal/store"
)

// The scheduler tests run in synctest bubbles: the store, the scheduler and the fake peers
// all live in the bubble, so time.Sleep moves the fake clock through hours or days at once and
// synctest.Wait returns when everybody waits for the next timer. The bubble's clock starts at
// 2000-01-01 00:00:00 UTC.

// call is one Deliver call seen by the fake deliverer.
type call struct {
	at      time.Time
	domain  string
	msgID   string
	rcpts   []string
	content string
	d       Delivery
}

// fakeDeliverer answers per recipient with a script. It records every call, and the most
// deliveries it saw at once, per domain and in all.
type fakeDeliverer struct {
	mu      sync.Mutex
	reply   func(rcpt string, n int) *smtp.Reply // n: how many times rcpt was tried before
	tries   map[string]int
	calls   []call
	gate    chan struct{} // when set, each Deliver waits for a value (or close) before answering
	active  map[string]int
	maxDom  map[string]int
	total   int
	maxTot  int
	started chan struct{} // when set, gets a value as each Deliver begins
}

func newFakeDeliverer() *fakeDeliverer {
	return &fakeDeliverer{
		reply:  func(string, int) *smtp.Reply { return smtp.NewReply(250, "2.0.0", "ok") },
		tries:  map[string]int{},
		active: map[string]int{},
		maxDom: map[string]int{},
	}
}

func (f *fakeDeliverer) Deliver(ctx context.Context, d *Delivery) Result {
	rc, err := d.Open()
	var body []byte
	if err == nil {
		body, _ = io.ReadAll(rc)
		rc.Close()
	}
	f.mu.Lock()
	c := call{at: time.Now(), domain: d.Domain, msgID: d.MessageID, content: string(body), d: *d}
	for _, r := range d.Recipients {
		c.rcpts = append(c.rcpts, r.Address)
	}
	f.calls = append(f.calls, c)
	f.active[d.Domain]++
	f.total++
	f.maxDom[d.Domain] = max(f.maxDom[d.Domain], f.active[d.Domain])
	f.maxTot = max(f.maxTot, f.total)
	gate, started := f.gate, f.started
	f.mu.Unlock()
	if started != nil {
		started <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.active[d.Domain]--
	f.total--
	var res Result
	for _, r := range d.Recipients {
		reply := f.reply(r.Address, f.tries[r.Address])
		f.tries[r.Address]++
		if ctx.Err() != nil {
			reply = smtp.NewReply(451, "4.4.2", "interrupted")
		}
		res.Rcpts = append(res.Rcpts, RcptResult{Address: r.Address, Reply: reply, MX: "mx." + d.Domain})
	}
	res.Attempts = []Attempt{{Time: time.Now(), MX: "mx." + d.Domain, IP: "192.0.2.7", TLS: "TLS1.3 verified", Reply: "connected"}}
	return res
}

func (f *fakeDeliverer) snapshot() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// bounce is one report committed through the fake committer.
type bounce struct {
	at  time.Time
	to  string
	msg *dsn.Message
	id  string
}

// fakeCommitter records reports. With st set it also commits them to the store as the app
// does for a remote sender: a message from the null sender queued for relay.
type fakeCommitter struct {
	mu      sync.Mutex
	reports []bounce
	st      *store.Store
	wake    func()
	fail    bool
	err     error // returned when fail is set; nil: a temporary error
}

// permanentError is an error that will never go away: Temporary reports false.
type permanentError struct{}

func (permanentError) Error() string   { return "no such local user" }
func (permanentError) Temporary() bool { return false }

func (c *fakeCommitter) CommitBounce(ctx context.Context, to string, m *dsn.Message) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail {
		if c.err != nil {
			return "", c.err
		}
		return "", io.ErrShortWrite
	}
	id := "report" + string(rune('a'+len(c.reports)))
	if c.st != nil {
		b, err := c.st.NewBlob()
		if err != nil {
			return "", err
		}
		b.Write([]byte("Return-Path: <>\r\n"))
		b.Write(m.Data)
		if err := c.st.Deliver(ctx, &store.Commit{Blob: b, Recipients: []store.Recipient{{Address: to, Remote: true}}}); err != nil {
			return "", err
		}
		id = b.ID()
		if c.wake != nil {
			defer c.wake()
		}
	}
	c.reports = append(c.reports, bounce{at: time.Now(), to: to, msg: m, id: id})
	return id, nil
}

func (c *fakeCommitter) snapshot() []bounce {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.reports)
}

// env is a store in a temporary directory and a scheduler over it, inside a bubble.
type env struct {
	t       *testing.T
	dir     string
	st      *store.Store
	dlv     *fakeDeliverer
	bounces *fakeCommitter
	sched   *Scheduler
	cancel  context.CancelFunc
	done    chan error
}

// newEnv opens a store and builds a scheduler; configure it, then start. Call from inside
// synctest.Test.
func newEnv(t *testing.T, dir string) *env {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	e := &env{t: t, dir: dir, dlv: newFakeDeliverer(), bounces: &fakeCommitter{}}
	e.open()
	t.Cleanup(func() {
		e.stop()
		if e.st != nil {
			e.st.Close()
		}
	})
	return e
}

func (e *env) open() {
	// JoinWait -1: results are written as soon as they are made, so that synctest.Wait
	// (which returns while a timer is pending) sees them.
	st, err := store.Open(context.Background(), e.dir, store.Options{JoinWait: -1})
	if err != nil {
		e.t.Fatal(err)
	}
	e.st = st
	e.sched = &Scheduler{
		Store:        st,
		Deliverer:    e.dlv,
		Bounces:      e.bounces,
		Hostname:     "mail.example.org",
		PollInterval: time.Hour, // tests that need the poll set it
	}
}

func (e *env) start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- e.sched.Run(ctx) }()
	synctest.Wait()
}

func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	if err := <-e.done; err != nil {
		e.t.Errorf("Run: %v", err)
	}
	e.cancel = nil
}

// restart closes the store and opens it again with a new scheduler, as a new process would.
func (e *env) restart() {
	e.stop()
	if err := e.st.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

const body = "From: Ana <ana@example.org>\r\nSubject: hello\r\nMessage-ID: <m1@example.org>\r\n\r\nHello.\r\n"

// commit stores a message from from to remote recipients the way intake does (Return-Path
// line first) and wakes the scheduler, as the app does.
func (e *env) commit(from string, rcpts ...string) string {
	return e.commitWith(&store.Commit{From: from}, rcpts...)
}

func (e *env) commitWith(c *store.Commit, rcpts ...string) string {
	e.t.Helper()
	b, err := e.st.NewBlob()
	if err != nil {
		e.t.Fatal(err)
	}
	b.Write([]byte("Return-Path: <" + c.From + ">\r\n" + body))
	c.Blob = b
	for _, r := range rcpts {
		c.Recipients = append(c.Recipients, store.Recipient{Address: r, Remote: true})
	}
	if err := e.st.Deliver(context.Background(), c); err != nil {
		e.t.Fatal(err)
	}
	e.sched.Wake()
	return b.ID()
}

// advance moves the fake clock and lets everything due run.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func (e *env) queue() []store.QueueEntry {
	e.t.Helper()
	es, err := e.st.ListQueue(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return es
}

func (e *env) messageExists(id string) bool {
	f, _, err := e.st.OpenMessage(context.Background(), id)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

func reply(code int, enh, text string) *smtp.Reply { return smtp.NewReply(code, enh, text) }

func byRcpt(m map[string]*smtp.Reply, def *smtp.Reply) func(string, int) *smtp.Reply {
	return func(rcpt string, _ int) *smtp.Reply {
		if r, ok := m[rcpt]; ok {
			return r
		}
		return def
	}
}

func contains(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}
