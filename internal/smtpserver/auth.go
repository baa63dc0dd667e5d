package smtpserver

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/emersion/go-sasl"

	"yubin/internal/directory"
	"yubin/internal/smtp"
)

// Authenticator checks a user's credentials, behind the brute-force guard.
// *directory.Directory implements it (Login).
type Authenticator interface {
	Login(ctx context.Context, ip, user, password string) (directory.Account, error)
}

// errAuthAborted is a client's "*" (RFC 4954 4).
var errAuthAborted = errors.New("authentication cancelled")

// authAvailable tells whether AUTH is offered now: on a submission listener, and only over
// TLS (RFC 4954 4, RFC 8314: never a password in clear text).
func (sess *session) authAvailable() bool {
	return sess.srv.Submission && sess.srv.Auth != nil && sess.tls != nil
}

// cmdAuth runs one SASL exchange (RFC 4954). Mechanisms: PLAIN (RFC 4616, go-sasl's server)
// and LOGIN (the de-facto standard Outlook and older clients use). SCRAM is not offered: it
// needs a PBKDF2 verifier stored beside the argon2id hash, which is weaker against offline
// cracking than what is stored today.
func (sess *session) cmdAuth(arg string) {
	switch {
	case !sess.srv.Submission || sess.srv.Auth == nil:
		sess.fail(smtp.NewReply(503, "5.5.1", "authentication not available on this port, use submission (587 or 465)"))
		return
	case sess.tls == nil:
		sess.fail(smtp.NewReply(538, "5.7.11", "encryption required for requested authentication mechanism: STARTTLS first"))
		return
	case sess.helo == "":
		sess.fail(smtp.NewReply(503, "5.5.1", "send EHLO first"))
		return
	case sess.account != nil:
		sess.fail(smtp.NewReply(503, "5.5.1", "already authenticated"))
		return
	case sess.tx != nil:
		sess.fail(smtp.NewReply(503, "5.5.1", "AUTH not allowed during a mail transaction"))
		return
	}
	mech, initial, hasInitial := strings.Cut(strings.TrimSpace(arg), " ")
	var user, pass string
	var credErr error
	var srv sasl.Server
	switch strings.ToUpper(mech) {
	case "PLAIN":
		srv = sasl.NewPlainServer(func(identity, username, password string) error {
			// RFC 4616 2: an authorization identity other than the user's own would be a
			// proxy login, which yubin does not grant.
			if identity != "" && !strings.EqualFold(identity, username) {
				credErr = directory.ErrBadCredentials
			}
			user, pass = username, password
			return nil
		})
	case "LOGIN":
		srv = &loginServer{done: func(u, p string) { user, pass = u, p }}
	default:
		sess.fail(smtp.Replyf(504, "5.5.4", "unrecognized authentication mechanism %q (PLAIN and LOGIN are offered)", mech))
		return
	}
	var resp []byte
	if hasInitial {
		b, err := decodeSASL(initial)
		if err != nil {
			sess.fail(smtp.NewReply(501, "5.5.2", "cannot decode the initial response"))
			return
		}
		resp = b
	}
	for {
		challenge, done, err := srv.Next(resp)
		if err != nil {
			sess.fail(smtp.NewReply(501, "5.5.2", "malformed authentication response"))
			return
		}
		if done {
			break
		}
		sess.reply(&smtp.Reply{Code: 334, Lines: []string{base64.StdEncoding.EncodeToString(challenge)}})
		if sess.bw.Flush() != nil {
			sess.quit = true
			return
		}
		line, err := smtp.ReadLine(sess.br, maxAuthLine)
		if errors.Is(err, smtp.ErrLineTooLong) {
			sess.fail(smtp.NewReply(500, "5.5.6", "authentication exchange line too long"))
			return
		}
		if err != nil {
			sess.readError(err, false)
			sess.quit = true
			return
		}
		resp, err = decodeSASL(string(line))
		if errors.Is(err, errAuthAborted) {
			sess.fail(smtp.NewReply(501, "5.5.2", "authentication cancelled"))
			return
		}
		if err != nil {
			sess.fail(smtp.NewReply(501, "5.5.2", "cannot decode the response"))
			return
		}
	}
	sess.login(user, pass, credErr)
}

// login checks the credentials and answers. The password is never logged.
func (sess *session) login(user, pass string, credErr error) {
	var acc directory.Account
	err := credErr
	if err == nil {
		acc, err = sess.srv.Auth.Login(sess.ctx, sess.ip, user, pass)
	}
	switch {
	case err == nil:
		sess.account = &acc
		sess.logger = sess.log().With("user", acc.Address)
		sess.log().Info("authenticated")
		sess.reply(smtp.NewReply(235, "2.7.0", "authentication successful"))
	case errors.Is(err, directory.ErrLockedOut):
		sess.log().Warn("authentication refused: too many failures", "user", user)
		sess.reply(smtp.NewReply(454, "4.7.0", "too many failed authentication attempts, try again later"))
	case errors.Is(err, directory.ErrBadCredentials):
		sess.log().Info("authentication failed", "user", user)
		sess.fail(smtp.NewReply(535, "5.7.8", "authentication credentials invalid"))
	default:
		ref := sess.internalError("authentication", err)
		sess.reply(smtp.Replyf(454, "4.7.0", "temporary authentication failure (ref %s)", ref))
	}
}

// decodeSASL decodes one client response: "=" is an empty response, "*" cancels.
func decodeSASL(s string) ([]byte, error) {
	switch s = strings.TrimSpace(s); s {
	case "*":
		return nil, errAuthAborted
	case "=":
		return []byte{}, nil
	}
	return base64.StdEncoding.DecodeString(s)
}

// loginServer is the LOGIN mechanism (draft-murchison-sasl-login): the server asks
// "Username:" then "Password:"; an initial response carries the user name.
type loginServer struct {
	user []byte
	step int
	done func(user, pass string)
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step = 1
		if resp == nil {
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		l.user = resp
		l.step = 2
		return []byte("Password:"), false, nil
	default:
		l.done(string(l.user), string(resp))
		return nil, true, nil
	}
}
