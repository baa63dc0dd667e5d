// Package pop3server is yubin's POP3 server (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034
// SASL PLAIN, RFC 3206 response codes). A session sees the account's INBOX as it was at
// login; DELE marks messages and QUIT removes them, in one store transaction (the UPDATE
// state). One POP3 session per account at a time holds the maildrop (RFC 1939 8: exclusive
// access); others get -ERR [IN-USE]. IMAP sessions are not locked out: they see the
// deletions as EXPUNGEs.
package pop3server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"yubin/internal/directory"
	"yubin/internal/netutil"
	"yubin/internal/store"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("pop3server: server closed")

// Store is what the POP3 server needs from storage.
type Store interface {
	SnapshotMailbox(ctx context.Context, accountID int64, name string) (store.MailboxSnapshot, error)
	MessagesByUID(ctx context.Context, mailboxID int64, uids []uint32) ([]store.MessageInfo, error)
	OpenMessage(ctx context.Context, messageID string) (store.MessageReader, int64, error)
	RemoveMessages(ctx context.Context, mailboxID int64, uids []uint32) ([]uint32, error)
}

// Directory checks passwords behind the shared brute-force guard.
type Directory interface {
	Login(ctx context.Context, ip, user, password string) (directory.Account, error)
}

// Limits bound what one client can use. Zero fields take the defaults noted.
type Limits struct {
	MaxConnections      int           // in total; default 500
	MaxConnectionsPerIP int           // default 10
	IdleTimeout         time.Duration // RFC 1939 3: at least 10 minutes; default 10m
	MaxErrors           int           // bad commands before the connection is closed; default 20
}

func (l Limits) withDefaults() Limits {
	if l.MaxConnections <= 0 {
		l.MaxConnections = 500
	}
	if l.MaxConnectionsPerIP <= 0 {
		l.MaxConnectionsPerIP = 10
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 10 * time.Minute
	}
	if l.MaxErrors <= 0 {
		l.MaxErrors = 20
	}
	return l
}

// maxLine bounds a command line (RFC 2449 4: 255 octets; a SASL response can be longer).
const maxLine = 2048

// Server is a POP3 server. Serve a plain listener (STLS offered when TLSConfig is set) and/or
// a tls.NewListener one for implicit TLS (port 995).
type Server struct {
	Store     Store
	Directory Directory
	TLSConfig *tls.Config
	// AllowInsecureAuth permits USER/PASS and AUTH without TLS (tests only).
	AllowInsecureAuth bool
	Logger            *slog.Logger
	Limits            Limits

	initOnce sync.Once
	limits   Limits
	log      *slog.Logger

	mu       sync.Mutex
	closed   bool
	lns      netutil.Listeners
	sessions map[*session]struct{}
	conns    netutil.ConnLimit
	locked   map[int64]bool // accounts whose maildrop a session holds
	nextID   uint64
	wg       sync.WaitGroup
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.limits = s.Limits.withDefaults()
		s.log = s.Logger
		if s.log == nil {
			s.log = slog.New(slog.DiscardHandler)
		}
		s.sessions = map[*session]struct{}{}
		s.conns = netutil.ConnLimit{Max: s.limits.MaxConnections, MaxPerIP: s.limits.MaxConnectionsPerIP}
		s.locked = map[int64]bool{}
	})
}

// Serve accepts connections on l until Shutdown; then it returns ErrServerClosed.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	return s.lns.Serve(l, ErrServerClosed, nil, s.accept)
}

// ListenAndServe listens on addr and serves.
func (s *Server) ListenAndServe(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(l)
}

func (s *Server) accept(c net.Conn) {
	ip := netutil.RemoteIP(c.RemoteAddr())
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	if ok, _ := s.conns.Acquire(ip); !ok {
		s.mu.Unlock()
		s.log.Warn("pop3 connection refused: too many connections", "remote", c.RemoteAddr().String())
		netutil.Refuse(c, "-ERR [SYS/TEMP] Too many connections, try again later\r\n")
		return
	}
	s.nextID++
	sess := newSession(s, c, ip, s.nextID)
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		sess.serve()
		s.mu.Lock()
		delete(s.sessions, sess)
		s.mu.Unlock()
		s.conns.Release(ip)
	}()
}

// lock takes the maildrop of an account; false if another session holds it.
func (s *Server) lock(accountID int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locked[accountID] {
		return false
	}
	s.locked[accountID] = true
	return true
}

func (s *Server) unlock(accountID int64) {
	s.mu.Lock()
	delete(s.locked, accountID)
	s.mu.Unlock()
}

// Shutdown stops accepting and lets sessions finish their current command; idle sessions
// are told "-ERR [SYS/TEMP] server shutting down" and closed without applying their
// deletions (RFC 1939: only QUIT enters the UPDATE state). It waits until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.closed = true
	s.lns.Close()
	for sess := range s.sessions {
		sess.shutdown()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for sess := range s.sessions {
			sess.conn.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}
