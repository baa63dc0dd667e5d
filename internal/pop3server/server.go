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

	lns      netutil.Listeners
	sessions netutil.Sessions[*session]
	nextID   uint64 // under the sessions' lock (their mk function)

	mu     sync.Mutex
	locked map[int64]bool // accounts whose maildrop a session holds
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.limits = s.Limits.withDefaults()
		s.log = s.Logger
		if s.log == nil {
			s.log = slog.New(slog.DiscardHandler)
		}
		s.sessions.Limit = netutil.ConnLimit{Max: s.limits.MaxConnections, MaxPerIP: s.limits.MaxConnectionsPerIP}
		s.locked = map[int64]bool{}
	})
}

// Serve accepts connections on l until Shutdown; then it returns ErrServerClosed.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	return s.lns.Serve(l, ErrServerClosed, nil, s.accept)
}

func (s *Server) accept(c net.Conn) {
	closed, reason := s.sessions.Go(c, func(ip string) *session {
		s.nextID++
		return newSession(s, c, ip, s.nextID)
	}, (*session).serve)
	switch {
	case closed:
		c.Close()
	case reason != "":
		s.log.Warn("pop3 connection refused: too many connections", "remote", c.RemoteAddr().String())
		netutil.Refuse(c, "-ERR [SYS/TEMP] Too many connections, try again later\r\n")
	}
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
	s.lns.Close()
	if s.sessions.Close((*session).shutdown) {
		return ErrServerClosed
	}
	if err := s.sessions.Wait(ctx); err != nil {
		s.sessions.Close(func(sess *session) { sess.conn.Close() })
		return err
	}
	return nil
}
