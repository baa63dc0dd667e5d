// Package imapserver is yubin's IMAP server (RFC 9051 IMAP4rev2 and RFC 3501 IMAP4rev1, with
// IDLE, NAMESPACE, UNSELECT, UIDPLUS, MOVE, SPECIAL-USE, ENABLE, LITERAL+, STATUS=SIZE,
// APPENDLIMIT, ESEARCH, LIST-EXTENDED and LIST-STATUS). It is built on go-imap v2's
// imapserver (v2.0.0-beta.8), which parses commands and writes responses; this package is the
// backend (Session) over the store, and works around the library's known defects:
//
//   - wireConn (wire.go) closes the connection when go-imap refuses a non-synchronizing
//     literal, whose bytes the library would otherwise run as commands; bounds command lines;
//     and does STARTTLS itself so that LOGINDISABLED holds until TLS.
//   - Each session keeps its own view of the selected mailbox (view.go) and learns what
//     changed from the store's MODSEQ, so EXPUNGE sequence numbers are the session's own and
//     updates that arrive between IDLE's DONE and the next IDLE are still announced
//     (upstream #767). No lock is held while writing to a client.
//   - Flags go out in their standard case; STORE, EXPUNGE, MOVE and COPY into the mailbox
//     are refused after EXAMINE (upstream #672); APPEND checks that the literal was read to
//     its announced size (upstream #650); COPY/MOVE of UIDs that no longer exist answer OK
//     without COPYUID; LIST patterns use a matcher that cannot backtrack exponentially.
//
// CONDSTORE, QRESYNC, COMPRESS and ID are not offered: beta.8's server does not parse them.
package imapserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	goimapserver "github.com/emersion/go-imap/v2/imapserver"

	"yubin/internal/directory"
	"yubin/internal/netutil"
	"yubin/internal/store"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("imapserver: server closed")

// Store is what the IMAP server needs from storage.
type Store interface {
	ListMailboxes(ctx context.Context, accountID int64) ([]store.Mailbox, error)
	GetMailbox(ctx context.Context, accountID int64, name string) (store.Mailbox, error)
	CreateMailbox(ctx context.Context, accountID int64, name, specialUse string) (store.Mailbox, error)
	DeleteMailbox(ctx context.Context, accountID int64, name string) error
	RenameMailbox(ctx context.Context, accountID int64, oldName, newName, sep string) error
	SetSubscribed(ctx context.Context, accountID int64, name string, subscribed bool) error
	GetMailboxStatus(ctx context.Context, accountID int64, name string) (store.MailboxStatus, error)

	SnapshotMailbox(ctx context.Context, accountID int64, name string) (store.MailboxSnapshot, error)
	FirstUnseen(ctx context.Context, mailboxID int64) (uint32, error)
	ChangesSince(ctx context.Context, mailboxID int64, since uint64) (store.MailboxChanges, error)
	MessagesByUID(ctx context.Context, mailboxID int64, uids []uint32) ([]store.MessageInfo, error)
	MessagesWithMeta(ctx context.Context, mailboxID int64, uids []uint32, cols store.MetaColumns) ([]store.MessageEntry, error)
	SearchCandidates(ctx context.Context, mailboxID int64, needles [][]byte) ([]uint32, error)
	StoreFlags(ctx context.Context, mailboxID int64, uids []uint32, op store.FlagOp, flags []string) ([]store.MessageInfo, uint64, error)
	Expunge(ctx context.Context, mailboxID int64, uids []uint32) ([]uint32, uint64, error)
	CopyMessages(ctx context.Context, srcID int64, uids []uint32, dstID int64) (store.CopyResult, error)
	MoveMessages(ctx context.Context, srcID int64, uids []uint32, dstID int64) (store.CopyResult, error)

	NewBlob() (*store.BlobWriter, error)
	AppendMessage(ctx context.Context, mailboxID int64, b *store.BlobWriter, flags []string, internalDate time.Time) (store.AppendResult, error)
	OpenMessage(ctx context.Context, messageID string) (store.MessageReader, int64, error)
	GetMessageMeta(ctx context.Context, ids []string) (map[string]store.MessageMeta, error)
	PutMessageMeta(ctx context.Context, metas map[string]store.MessageMeta) error

	Subscribe(accountID int64) (<-chan struct{}, func())
}

// Directory checks passwords behind the shared brute-force guard.
type Directory interface {
	Login(ctx context.Context, ip, user, password string) (directory.Account, error)
}

// Limits bound what one client can use. Zero fields take the defaults noted.
type Limits struct {
	MaxConnections      int           // in total; default 1000
	MaxConnectionsPerIP int           // default 20
	IdleTimeout         time.Duration // between commands once logged in, and in IDLE; default 30m (RFC 9051 5.4)
	MaxAppendSize       int64         // APPENDLIMIT in bytes; default 64 MiB
	MaxLineLength       int           // a command line outside literals; default 32 KiB (RFC 7162 3.2.1: at least 8192)
}

func (l Limits) withDefaults() Limits {
	if l.MaxConnections <= 0 {
		l.MaxConnections = 1000
	}
	if l.MaxConnectionsPerIP <= 0 {
		l.MaxConnectionsPerIP = 20
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 30 * time.Minute
	}
	if l.MaxAppendSize <= 0 {
		l.MaxAppendSize = 64 << 20
	}
	if l.MaxAppendSize > 1<<32-1 {
		l.MaxAppendSize = 1<<32 - 1
	}
	if l.MaxLineLength <= 0 {
		l.MaxLineLength = 32 << 10
	}
	// go-imap refuses a command of more than 50 KiB outside literals with an internal error
	// and then reads the rest as commands; stay below it.
	l.MaxLineLength = min(l.MaxLineLength, 48<<10)
	return l
}

// Server is an IMAP server. Set the fields, then call Serve for each listener (a plain one,
// where STARTTLS is offered when TLSConfig is set, and/or a tls.NewListener one for implicit
// TLS on port 993).
type Server struct {
	Store     Store
	Directory Directory
	// TLSConfig enables STARTTLS on plain connections.
	TLSConfig *tls.Config
	// AllowInsecureAuth lets clients log in without TLS. Leave it false outside tests: by
	// default LOGIN and AUTHENTICATE need TLS and LOGINDISABLED is advertised before it.
	AllowInsecureAuth bool
	Logger            *slog.Logger // nil: discard
	Limits            Limits

	initOnce sync.Once
	uids     uidCache
	envs     envCache
	lib      *goimapserver.Server
	handoff  *handoffListener
	limits   Limits
	log      *slog.Logger

	mu     sync.Mutex
	closed bool
	lns    netutil.Listeners
	conns  map[*session]struct{}
	limit  netutil.ConnLimit // admission: in total and per client address
	total  int               // open connections, for Shutdown
	nextID uint64
	done   chan struct{} // closed when the last connection ends after Shutdown
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.limits = s.Limits.withDefaults()
		s.log = s.Logger
		if s.log == nil {
			s.log = slog.New(slog.DiscardHandler)
		}
		s.conns = map[*session]struct{}{}
		s.limit = netutil.ConnLimit{Max: s.limits.MaxConnections, MaxPerIP: s.limits.MaxConnectionsPerIP}
		s.handoff = newHandoffListener()
		s.lib = goimapserver.New(&goimapserver.Options{
			NewSession: s.newSession,
			Caps: imap.CapSet{
				imap.CapIMAP4rev1:        {},
				imap.CapIMAP4rev2:        {},
				imap.CapNamespace:        {},
				imap.CapUIDPlus:          {},
				imap.CapMove:             {},
				imap.CapSpecialUse:       {},
				imap.CapCreateSpecialUse: {},
				imap.CapLiteralPlus:      {},
				imap.CapStatusSize:       {},
				imap.CapESearch:          {},
				imap.CapListExtended:     {},
				imap.CapListStatus:       {},
				imap.CapChildren:         {},
			},
			Logger: libLogger{s.log},
			// TLS and the LOGINDISABLED rule are handled by wireConn and the session: the
			// library cannot see TLS through a wrapped connection.
			InsecureAuth: true,
		})
		go s.lib.Serve(s.handoff)
	})
}

// Serve accepts connections on l until Shutdown. It always returns a non-nil error;
// ErrServerClosed after Shutdown.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	return s.lns.Serve(l, ErrServerClosed, nil, s.accept)
}

// accept applies the connection limits and hands the connection to the library.
func (s *Server) accept(c net.Conn) {
	ip := netutil.RemoteIP(c.RemoteAddr())
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	if ok, _ := s.limit.Acquire(ip); !ok {
		s.mu.Unlock()
		s.log.Warn("imap connection refused: too many connections", "remote", c.RemoteAddr().String())
		// RFC 9051 7.1.5: BYE as the greeting refuses the connection.
		netutil.Refuse(c, "* BYE [UNAVAILABLE] Too many connections, try again later\r\n")
		return
	}
	s.total++
	s.mu.Unlock()
	w := newWireConn(c, s.TLSConfig, s.AllowInsecureAuth, s.limits.MaxLineLength, s.limits.MaxAppendSize, s.limits.IdleTimeout)
	if !s.handoff.give(w) {
		w.Close()
		s.release(ip)
	}
}

func (s *Server) release(ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	s.limit.Release(ip)
	if s.closed && s.total == 0 && s.done != nil {
		close(s.done)
		s.done = nil
	}
}

// Shutdown stops accepting, tells every session BYE (RFC 9051 7.1.5) and closes it, and
// waits for the sessions to end until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.closed = true
	s.lns.Close()
	var done chan struct{}
	if s.total > 0 {
		done = make(chan struct{})
		s.done = done
	}
	sessions := make([]*session, 0, len(s.conns))
	for sess := range s.conns {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	s.handoff.Close()
	for _, sess := range sessions {
		sess.shutdown()
	}
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for sess := range s.conns {
			sess.wire.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// handoffListener is the listener the library serves: Serve's accept loop passes it the
// wrapped connections.
type handoffListener struct {
	c      chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newHandoffListener() *handoffListener {
	return &handoffListener{c: make(chan net.Conn), closed: make(chan struct{})}
}

func (h *handoffListener) give(c net.Conn) bool {
	select {
	case h.c <- c:
		return true
	case <-h.closed:
		return false
	}
}

func (h *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.c:
		return c, nil
	case <-h.closed:
		return nil, net.ErrClosed
	}
}

func (h *handoffListener) Close() error {
	h.once.Do(func() { close(h.closed) })
	return nil
}

func (h *handoffListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// libLogger sends go-imap's own messages to slog.
type libLogger struct{ log *slog.Logger }

func (l libLogger) Printf(format string, args ...any) {
	l.log.Warn("go-imap: " + fmt.Sprintf(format, args...))
}
