package smtpserver_test

import (
	"bufio"
	"context"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"yubin/internal/address"
	"yubin/internal/directory"
	"yubin/internal/intake"
	"yubin/internal/smtp"
	"yubin/internal/smtpserver"
	"yubin/internal/store"
)

// pipeListener hands out in-memory connections, which (unlike loopback sockets) let a
// synctest bubble see that everybody is waiting, so timeouts run on the fake clock.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// dial returns the client end of a new connection.
func (l *pipeListener) dial() net.Conn {
	srv, cli := net.Pipe()
	l.conns <- srv
	return cli
}

// oneAccount routes every address to one account and begins drafts in a real store. Its
// Commit cannot run in a synctest bubble (the store's committer lives outside it), so the
// tests here never finish a message.
type oneAccount struct{ in *intake.Intake }

func (b oneAccount) Resolve(ctx context.Context, a address.Address) (directory.Resolution, error) {
	return directory.Resolution{Hosted: true, Targets: []directory.Target{{AccountID: 1, Address: a.String()}}}, nil
}

func (b oneAccount) Begin(ctx context.Context, from string) (*intake.Draft, error) {
	return b.in.Begin(ctx, from)
}

// pipeClient reads replies in the background, so that the test can tell whether one has
// arrived at a given (fake) time.
type pipeClient struct {
	c       net.Conn
	replies chan *smtp.Reply
}

func newPipeClient(c net.Conn) *pipeClient {
	pc := &pipeClient{c: c, replies: make(chan *smtp.Reply, 16)}
	go func() {
		defer close(pc.replies)
		br := bufio.NewReader(c)
		for {
			r, err := smtp.ReadReply(br, 100)
			if err != nil {
				return
			}
			pc.replies <- r
		}
	}()
	return pc
}

func (pc *pipeClient) write(t *testing.T, s string) {
	t.Helper()
	if _, err := pc.c.Write([]byte(s)); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

// next returns the reply that has arrived, or nil when none has; the connection closing
// gives closed=true.
func (pc *pipeClient) next() (r *smtp.Reply, closed bool) {
	synctest.Wait()
	select {
	case r, ok := <-pc.replies:
		return r, !ok
	default:
		return nil, false
	}
}

func (pc *pipeClient) expect(t *testing.T, code int, enh string) {
	t.Helper()
	r, closed := pc.next()
	if r == nil || r.Code != code || r.Enhanced != enh {
		t.Fatalf("expected %d %s, got %v (closed %v)", code, enh, r, closed)
	}
}

// TestTimeoutClock checks the timeouts against the clock: the defaults (RFC 5321 4.5.3.2:
// at least 5 minutes for a command), the data timeout apart from the command timeout, and
// that a timeout means "without progress", not "for the whole transfer".
func TestTimeoutClock(t *testing.T) {
	t.Parallel()
	st, err := store.Open(context.Background(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	backend := oneAccount{&intake.Intake{Store: st}}

	run := func(t *testing.T, lim smtpserver.Limits, f func(t *testing.T, pc *pipeClient)) {
		synctest.Test(t, func(t *testing.T) {
			l := newPipeListener()
			srv := &smtpserver.Server{Hostname: "mx.test", Backend: backend, Limits: lim}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(l) }()
			pc := newPipeClient(l.dial())
			// Also after a t.Fatal: a bubble must end with no goroutine left waiting.
			defer func() {
				srv.Close()
				<-served
				pc.c.Close()
				for range pc.replies {
				}
			}()
			pc.expect(t, 220, "")
			pc.write(t, "EHLO client.test\r\n")
			pc.expect(t, 250, "")
			f(t, pc)
		})
	}

	t.Run("default command timeout is 5m", func(t *testing.T) {
		t.Parallel()
		run(t, smtpserver.Limits{}, func(t *testing.T, pc *pipeClient) {
			time.Sleep(5*time.Minute - time.Second)
			if r, closed := pc.next(); r != nil || closed {
				t.Fatalf("session ended before 5m: %v", r)
			}
			time.Sleep(2 * time.Second)
			pc.expect(t, 421, "4.4.2")
			if _, closed := pc.next(); !closed {
				t.Fatal("connection still open after the timeout")
			}
		})
	})

	t.Run("command timeout counts from the last command", func(t *testing.T) {
		t.Parallel()
		// Deadlines are moved lazily (deadlineConn.refresh): commands in quick succession
		// must still leave the whole timeout after the last one, and not much more.
		run(t, smtpserver.Limits{}, func(t *testing.T, pc *pipeClient) {
			for range 20 {
				time.Sleep(time.Second)
				pc.write(t, "NOOP\r\n")
				pc.expect(t, 250, "2.0.0")
			}
			time.Sleep(5*time.Minute - 100*time.Millisecond)
			if r, closed := pc.next(); r != nil || closed {
				t.Fatalf("session ended before 5m after the last command: %v", r)
			}
			time.Sleep(time.Second)
			pc.expect(t, 421, "4.4.2")
		})
	})

	t.Run("data timeout", func(t *testing.T) {
		t.Parallel()
		lim := smtpserver.Limits{CommandTimeout: 10 * time.Minute, DataTimeout: 3 * time.Minute}
		run(t, lim, func(t *testing.T, pc *pipeClient) {
			pc.write(t, "MAIL FROM:<"+from+">\r\nRCPT TO:<"+rcpt+">\r\nDATA\r\n")
			pc.expect(t, 250, "2.1.0")
			pc.expect(t, 250, "2.1.5")
			pc.expect(t, 354, "")
			// Progress every 2 minutes keeps the transfer alive well past 3 minutes...
			for range 4 {
				time.Sleep(2 * time.Minute)
				pc.write(t, "a line\r\n")
				if r, _ := pc.next(); r != nil {
					t.Fatalf("reply while data was flowing: %s", r.Error())
				}
			}
			// ...and 3 minutes of silence end it, though the command timeout is 10.
			time.Sleep(3*time.Minute - time.Second)
			if r, _ := pc.next(); r != nil {
				t.Fatalf("reply before the data timeout: %s", r.Error())
			}
			time.Sleep(2 * time.Second)
			pc.expect(t, 421, "4.4.2")
		})
	})
}
