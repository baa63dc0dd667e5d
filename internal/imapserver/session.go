package imapserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/emersion/go-imap/v2"
	goimapserver "github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-sasl"

	"yubin/internal/directory"
	"yubin/internal/netutil"
	"yubin/internal/store"
)

// session is one IMAP connection's backend. go-imap calls its methods one command at a time
// from the connection's goroutine (IDLE from a second goroutine that ends before the next
// command), so its fields need no lock; shutdown only touches the library's Conn.
type session struct {
	srv  *Server
	conn *goimapserver.Conn
	wire *wireConn
	log  *slog.Logger
	ip   string

	ctx    context.Context
	cancel context.CancelFunc

	account directory.Account // ID 0 until logged in
	sel     *view             // the selected mailbox, or nil

	closeOnce sync.Once
}

var (
	_ goimapserver.SessionIMAP4rev2   = (*session)(nil)
	_ goimapserver.SessionSASL        = (*session)(nil)
	_ goimapserver.SessionAppendLimit = (*session)(nil)
)

func (s *Server) newSession(c *goimapserver.Conn) (goimapserver.Session, *goimapserver.GreetingData, error) {
	w, ok := c.NetConn().(*wireConn)
	if !ok {
		return nil, nil, errors.New("imapserver: connection not from Serve")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	sess := &session{
		srv:    s,
		conn:   c,
		wire:   w,
		ip:     netutil.RemoteIP(w.RemoteAddr()),
		ctx:    ctx,
		cancel: cancel,
	}
	sess.log = s.log.With("cid", "imap-"+strconv.FormatUint(id, 10), "remote", w.RemoteAddr().String())
	closed := s.closed
	if !closed {
		s.conns[sess] = struct{}{}
	}
	s.mu.Unlock()
	if closed {
		cancel()
		s.release(sess.ip)
		return nil, nil, &imap.Error{Type: imap.StatusResponseTypeBye, Text: "Server shutting down"}
	}
	sess.log.Debug("imap connection", "tls", w.isTLS())
	return sess, nil, nil
}

// Close is called by the library when the connection ends.
func (s *session) Close() error {
	s.closeOnce.Do(func() {
		s.unselect()
		s.cancel()
		s.srv.mu.Lock()
		delete(s.srv.conns, s)
		s.srv.mu.Unlock()
		s.srv.release(s.ip)
		s.log.Debug("imap connection closed", "account", s.account.Address)
	})
	return nil
}

// shutdown ends the session for Server.Shutdown: an untagged BYE between responses, then the
// connection is closed and the library's read fails.
func (s *session) shutdown() {
	s.cancel()
	s.conn.Bye("Server shutting down")
}

func (s *session) requireAuthAllowed() error {
	if s.wire.isTLS() || s.srv.AllowInsecureAuth {
		return nil
	}
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodePrivacyRequired, Text: "TLS is required to log in: use STARTTLS"}
}

// Login checks the password through the directory's brute-force guard, shared with SMTP AUTH
// and POP3.
func (s *session) Login(username, password string) error {
	if err := s.requireAuthAllowed(); err != nil {
		return err
	}
	acc, err := s.srv.Directory.Login(s.ctx, s.ip, username, password)
	switch {
	case err == nil:
	case errors.Is(err, directory.ErrLockedOut):
		s.log.Warn("imap login refused: locked out", "user", username)
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Too many failed logins, try again later"}
	case errors.Is(err, directory.ErrBadCredentials):
		s.log.Info("imap login failed", "user", username)
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed, Text: "Invalid credentials"}
	default:
		return s.internal("login", err)
	}
	s.account = acc
	s.wire.setAuthenticated(true)
	s.log = s.log.With("account", acc.Address)
	s.log.Info("imap login")
	return nil
}

// AuthenticateMechanisms lists SASL PLAIN once TLS is up (none before: LOGINDISABLED).
func (s *session) AuthenticateMechanisms() []string {
	if s.requireAuthAllowed() != nil {
		return nil
	}
	return []string{sasl.Plain}
}

// Authenticate implements AUTHENTICATE PLAIN (RFC 4616).
func (s *session) Authenticate(mech string) (sasl.Server, error) {
	if err := s.requireAuthAllowed(); err != nil {
		return nil, err
	}
	if mech != sasl.Plain {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Text: "Unsupported SASL mechanism"}
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthorizationFailed, Text: "Authorization identity must be the user"}
		}
		return s.Login(username, password)
	}), nil
}

// AppendLimit is the APPENDLIMIT capability (RFC 7889).
func (s *session) AppendLimit() uint32 { return uint32(s.srv.limits.MaxAppendSize) }

// Namespace: one personal namespace, no prefix, "/" between levels (RFC 2342).
func (s *session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: '/'}}}, nil
}

// internal logs an unexpected error with an id and answers a temporary failure that does not
// leak internals.
func (s *session) internal(op string, err error) error {
	if errors.Is(err, store.ErrStorageFull) {
		s.log.Error("imap "+op+": storage full", "err", err)
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeOverQuota, Text: "Storage is full"}
	}
	id := errorID()
	s.log.Error("imap "+op+" failed", "err", err, "errid", id)
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug, Text: fmt.Sprintf("Internal error, try again later (id %s)", id)}
}

func no(code imap.ResponseCode, text string) error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: text}
}

func bad(text string) error {
	return &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug, Text: text}
}
