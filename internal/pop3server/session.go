package pop3server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"

	"yubin/internal/directory"
	"yubin/internal/store"
)

type state int

const (
	stateAuth state = iota
	stateTransaction
)

type message struct {
	uid     uint32
	id      string
	size    int64
	deleted bool
}

type session struct {
	srv   *Server
	conn  net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	ip    string
	log   *slog.Logger
	ctx   context.Context
	tls   bool
	state state

	user      string // from USER
	account   directory.Account
	mailboxID int64
	validity  uint32
	msgs      []message
	errors    int
	stopping  atomic.Bool
}

func newSession(s *Server, c net.Conn, ip string, id uint64) *session {
	sess := &session{srv: s, conn: c, ip: ip, ctx: context.Background()}
	_, sess.tls = c.(*tls.Conn)
	sess.br = bufio.NewReaderSize(c, 4096)
	sess.bw = bufio.NewWriterSize(c, 32<<10)
	sess.log = s.log.With("cid", "pop3-"+strconv.FormatUint(id, 10), "remote", c.RemoteAddr().String())
	return sess
}

func (s *session) shutdown() {
	s.stopping.Store(true)
	s.conn.SetReadDeadline(time.Now())
}

func (s *session) reply(format string, args ...any) error {
	s.conn.SetWriteDeadline(time.Now().Add(time.Minute))
	fmt.Fprintf(s.bw, format+"\r\n", args...)
	return s.bw.Flush()
}

func (s *session) serve() {
	defer s.conn.Close()
	defer func() {
		if s.state == stateTransaction {
			s.srv.unlock(s.account.ID)
		}
	}()
	if s.reply("+OK yubin POP3 server ready") != nil {
		return
	}
	for {
		s.conn.SetReadDeadline(time.Now().Add(s.srv.limits.IdleTimeout))
		line, err := s.readLine()
		if s.stopping.Load() {
			s.reply("-ERR [SYS/TEMP] Server shutting down")
			return
		}
		if errors.Is(err, errTooLong) {
			if s.bad("Line too long") != nil {
				return
			}
			continue
		}
		if err != nil {
			return
		}
		cmd, arg, _ := strings.Cut(line, " ")
		quit, err := s.dispatch(strings.ToUpper(cmd), arg)
		if err != nil || quit {
			return
		}
	}
}

var errTooLong = errors.New("line too long")

// readLine reads a CRLF (or LF) terminated line of at most maxLine bytes; a longer one is
// skipped to its end without being kept.
func (s *session) readLine() (string, error) {
	var line []byte
	for {
		chunk, err := s.br.ReadSlice('\n')
		if len(line)+len(chunk) > maxLine {
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = s.br.ReadSlice('\n')
			}
			if err != nil {
				return "", err
			}
			return "", errTooLong
		}
		line = append(line, chunk...)
		if err == nil {
			return strings.TrimRight(string(line), "\r\n"), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
	}
}

// bad answers a command error; too many end the session.
func (s *session) bad(text string) error {
	s.errors++
	if s.errors > s.srv.limits.MaxErrors {
		s.reply("-ERR Too many errors, closing")
		return errors.New("too many errors")
	}
	return s.reply("-ERR %s", text)
}

func (s *session) authAllowed() bool { return s.tls || s.srv.AllowInsecureAuth }

func (s *session) dispatch(cmd, arg string) (quit bool, err error) {
	switch cmd {
	case "CAPA":
		return false, s.capa()
	case "QUIT":
		return true, s.quit()
	case "NOOP":
		if s.state != stateTransaction {
			return false, s.bad("Not logged in")
		}
		return false, s.reply("+OK")
	}
	if s.state == stateAuth {
		switch cmd {
		case "STLS":
			return false, s.stls()
		case "USER":
			if !s.authAllowed() {
				return false, s.bad("[SYS/PERM] Use STLS before logging in")
			}
			if arg == "" {
				return false, s.bad("USER needs a name")
			}
			s.user = arg
			return false, s.reply("+OK")
		case "PASS":
			if !s.authAllowed() {
				return false, s.bad("[SYS/PERM] Use STLS before logging in")
			}
			if s.user == "" {
				return false, s.bad("USER first")
			}
			user := s.user
			s.user = ""
			return false, s.login(user, arg)
		case "AUTH":
			return false, s.auth(arg)
		}
		return false, s.bad("Unknown command or not logged in")
	}
	switch cmd {
	case "STAT":
		n, size := 0, int64(0)
		for _, m := range s.msgs {
			if !m.deleted {
				n++
				size += m.size
			}
		}
		return false, s.reply("+OK %d %d", n, size)
	case "LIST", "UIDL":
		return false, s.list(cmd, arg)
	case "RETR":
		m, err := s.msgArg(arg)
		if err != nil {
			return false, s.bad(err.Error())
		}
		return false, s.send(m, -1)
	case "TOP":
		a, b, _ := strings.Cut(arg, " ")
		m, err := s.msgArg(a)
		if err != nil {
			return false, s.bad(err.Error())
		}
		n, err := strconv.Atoi(strings.TrimSpace(b))
		if err != nil || n < 0 {
			return false, s.bad("TOP needs a message and a line count")
		}
		return false, s.send(m, n)
	case "DELE":
		m, err := s.msgArg(arg)
		if err != nil {
			return false, s.bad(err.Error())
		}
		m.deleted = true
		return false, s.reply("+OK Marked for deletion")
	case "RSET":
		for i := range s.msgs {
			s.msgs[i].deleted = false
		}
		return false, s.reply("+OK")
	}
	return false, s.bad("Unknown command")
}

func (s *session) capa() error {
	lines := []string{"+OK Capability list follows", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "IMPLEMENTATION yubin"}
	if s.state == stateAuth {
		if s.authAllowed() {
			lines = append(lines, "USER", "SASL PLAIN")
		}
		if !s.tls && s.srv.TLSConfig != nil {
			lines = append(lines, "STLS")
		}
	}
	lines = append(lines, ".")
	return s.reply("%s", strings.Join(lines, "\r\n"))
}

// stls upgrades to TLS (RFC 2595 4). Anything the client sent after STLS is discarded: it
// was sent in clear text before the handshake.
func (s *session) stls() error {
	if s.tls || s.srv.TLSConfig == nil {
		return s.bad("STLS not available")
	}
	if err := s.reply("+OK Begin TLS negotiation"); err != nil {
		return err
	}
	if s.br.Buffered() > 0 {
		return errors.New("data pipelined after STLS")
	}
	tc := tls.Server(s.conn, s.srv.TLSConfig)
	s.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := tc.Handshake(); err != nil {
		return err
	}
	s.conn.SetDeadline(time.Time{})
	s.conn = tc
	s.tls = true
	s.br = bufio.NewReaderSize(tc, 4096)
	s.bw = bufio.NewWriterSize(tc, 32<<10)
	return nil
}

// auth implements AUTH PLAIN (RFC 5034), with or without an initial response.
func (s *session) auth(arg string) error {
	if !s.authAllowed() {
		return s.bad("[SYS/PERM] Use STLS before logging in")
	}
	mech, ir, hasIR := strings.Cut(arg, " ")
	if !strings.EqualFold(mech, "PLAIN") {
		return s.bad("Unsupported SASL mechanism")
	}
	if !hasIR {
		if err := s.reply("+ "); err != nil {
			return err
		}
		line, err := s.readLine()
		if err != nil {
			return err
		}
		ir = line
	}
	if ir == "*" {
		return s.bad("AUTH cancelled")
	}
	resp, err := base64.StdEncoding.DecodeString(strings.TrimSpace(ir))
	if err != nil {
		return s.bad("Invalid base64")
	}
	var user, pass string
	srv := sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			return errors.New("authorization identity must be the user")
		}
		user, pass = username, password
		return nil
	})
	if _, _, err := srv.Next(resp); err != nil {
		return s.bad("[AUTH] Invalid SASL PLAIN response")
	}
	return s.login(user, pass)
}

// login checks the password through the shared brute-force guard, locks the maildrop and
// takes the snapshot of INBOX.
func (s *session) login(user, password string) error {
	acc, err := s.srv.Directory.Login(s.ctx, s.ip, user, password)
	switch {
	case errors.Is(err, directory.ErrLockedOut):
		s.log.Warn("pop3 login refused: locked out", "user", user)
		return s.bad("[SYS/TEMP] Too many failed logins, try again later")
	case errors.Is(err, directory.ErrBadCredentials):
		s.log.Info("pop3 login failed", "user", user)
		return s.bad("[AUTH] Invalid credentials")
	case err != nil:
		s.log.Error("pop3 login", "err", err)
		return s.reply("-ERR [SYS/TEMP] Temporary failure, try again later")
	}
	if !s.srv.lock(acc.ID) {
		return s.reply("-ERR [IN-USE] Mailbox in use by another POP3 session")
	}
	snap, err := s.srv.Store.SnapshotMailbox(s.ctx, acc.ID, "INBOX")
	var infos []store.MessageInfo
	if err == nil {
		infos, err = s.srv.Store.MessagesByUID(s.ctx, snap.ID, snap.UIDs)
	}
	if err != nil {
		s.srv.unlock(acc.ID)
		s.log.Error("pop3 maildrop", "err", err)
		return s.reply("-ERR [SYS/TEMP] Cannot open the mailbox, try again later")
	}
	s.account, s.mailboxID, s.validity = acc, snap.ID, snap.UIDValidity
	s.msgs = make([]message, len(infos))
	for i, m := range infos {
		s.msgs[i] = message{uid: m.UID, id: m.MessageID, size: m.Size}
	}
	s.state = stateTransaction
	s.log = s.log.With("account", acc.Address)
	s.log.Info("pop3 login", "messages", len(s.msgs))
	return s.reply("+OK %d messages", len(s.msgs))
}

func (s *session) msgArg(arg string) (*message, error) {
	n, err := strconv.Atoi(strings.TrimSpace(arg))
	if err != nil || n < 1 || n > len(s.msgs) {
		return nil, errors.New("No such message")
	}
	m := &s.msgs[n-1]
	if m.deleted {
		return nil, errors.New("Message is deleted")
	}
	return m, nil
}

// uidl is a message's unique id: UIDVALIDITY and UID, stable across sessions and restarts.
func (s *session) uidl(m *message) string { return fmt.Sprintf("%d.%d", s.validity, m.uid) }

func (s *session) list(cmd, arg string) error {
	item := func(i int, m *message) string {
		if cmd == "LIST" {
			return fmt.Sprintf("%d %d", i+1, m.size)
		}
		return fmt.Sprintf("%d %s", i+1, s.uidl(m))
	}
	if strings.TrimSpace(arg) != "" {
		m, err := s.msgArg(arg)
		if err != nil {
			return s.bad(err.Error())
		}
		n, _ := strconv.Atoi(strings.TrimSpace(arg))
		return s.reply("+OK %s", item(n-1, m))
	}
	fmt.Fprintf(s.bw, "+OK\r\n")
	for i := range s.msgs {
		if !s.msgs[i].deleted {
			fmt.Fprintf(s.bw, "%s\r\n", item(i, &s.msgs[i]))
		}
	}
	return s.reply(".")
}

// send writes a message (RETR) or its header and first lines (TOP, lines >= 0), dot-stuffed
// and streamed from the blob (RFC 1939 3).
func (s *session) send(m *message, lines int) error {
	r, _, err := s.srv.Store.OpenMessage(s.ctx, m.id)
	if err != nil {
		s.log.Error("pop3 open message", "msgid", m.id, "err", err)
		return s.reply("-ERR [SYS/TEMP] Cannot read the message")
	}
	defer r.Close()
	if err := s.reply("+OK %d octets", m.size); err != nil {
		return err
	}
	s.conn.SetWriteDeadline(time.Now().Add(10 * time.Minute))
	br := bufio.NewReaderSize(r, 32<<10)
	inBody, bodyLines := false, 0
	atStart := true
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if atStart {
				if !inBody && (bytes.Equal(chunk, []byte("\r\n")) || bytes.Equal(chunk, []byte("\n"))) {
					inBody = true
				} else if inBody {
					if lines >= 0 && bodyLines >= lines {
						break
					}
					bodyLines++
				}
				if chunk[0] == '.' {
					s.bw.WriteByte('.')
				}
			}
			s.bw.Write(chunk)
			atStart = chunk[len(chunk)-1] == '\n'
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if !atStart {
		s.bw.WriteString("\r\n")
	}
	return s.reply(".")
}

// quit ends the session; in the TRANSACTION state it first removes the messages marked with
// DELE (the UPDATE state), all in one transaction.
func (s *session) quit() error {
	if s.state != stateTransaction {
		return s.reply("+OK Bye")
	}
	var uids []uint32
	for _, m := range s.msgs {
		if m.deleted {
			uids = append(uids, m.uid)
		}
	}
	if len(uids) > 0 {
		if _, err := s.srv.Store.RemoveMessages(s.ctx, s.mailboxID, uids); err != nil {
			s.log.Error("pop3 update", "err", err)
			return s.reply("-ERR [SYS/TEMP] Some deleted messages not removed")
		}
	}
	s.log.Info("pop3 logout", "deleted", len(uids))
	return s.reply("+OK Bye, %d messages deleted", len(uids))
}
