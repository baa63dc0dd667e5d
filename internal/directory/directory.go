// Package directory owns who yubin hosts and where mail to an address goes:
// hosted domains, accounts, aliases, catch-alls, sub-addressing, the
// postmaster rule, and password hashing and checking.
//
// It keeps no state of its own. Every lookup goes to the Backend (the
// store, wired in by app), with no cache, so a change made with the CLI is
// seen by the next SMTP transaction or login.
package directory

import (
	"context"
	"errors"
)

// ErrNotFound is what a Backend returns (possibly wrapped) when a domain,
// account or alias does not exist.
var ErrNotFound = errors.New("not found")

// Errors of Resolve. The server maps them to replies; everything else from
// Resolve is a backend failure and deserves a temporary 451 4.3.0.
var (
	// ErrNoSuchUser: the domain is hosted but nobody is there (550 5.1.1).
	ErrNoSuchUser = errors.New("no such user")
	// ErrRouting: the local part asks for source routing ('%', '!' or a
	// quoted '@'), which yubin does not do (550 5.7.1).
	ErrRouting = errors.New("sender-specified routing not supported")
	// ErrAliasLoop: alias expansion went round in a circle or nested
	// deeper than maxAliasDepth (RFC 3463 5.4.6, routing loop).
	ErrAliasLoop = errors.New("alias loop")
)

// ErrBadCredentials is the one answer for an unknown user, a wrong password
// and a disabled account, so that AUTH does not reveal which accounts exist.
var ErrBadCredentials = errors.New("invalid credentials")

// Domain is a hosted domain.
type Domain struct {
	Name string
	// CatchAll is "" for none, else the key ("user@domain") of an account
	// or alias that gets mail for addresses that match nothing else.
	CatchAll string
}

// Account is a mailbox owner who can log in.
type Account struct {
	ID int64
	// Address is the key form, "user@domain", lower-case.
	Address      string
	PasswordHash string
	Disabled     bool
}

// Backend is what the directory needs from storage. Each method returns an
// error that satisfies errors.Is(err, ErrNotFound) when the thing is absent.
// Names and addresses passed in are in key form (lower-case).
type Backend interface {
	GetDomain(ctx context.Context, name string) (Domain, error)
	GetAccount(ctx context.Context, address string) (Account, error)
	// GetAlias returns the targets of the alias, in key form; targets may
	// be on domains yubin does not host.
	GetAlias(ctx context.Context, address string) ([]string, error)
}

// Viewer is a Backend that can answer a series of lookups from one look at whether its data
// changed: Resolve asks a Viewer for one view per call (the store then checks its change
// stamp once per recipient instead of once per lookup).
type Viewer interface {
	Backend
	View() Backend
}

// Directory answers routing and authentication questions from a Backend.
// The zero value is not usable: Backend must be set.
type Directory struct {
	Backend Backend
	// DetailSep is the sub-address separator (RFC 5233), "+" in the usual
	// configuration; "" disables sub-addressing.
	DetailSep string
	// PostmasterFallback is the key of an account or alias that receives
	// mail for "postmaster@<hosted domain>" when that domain has no
	// postmaster of its own. "" means none: see Resolve.
	PostmasterFallback string
	// Guard, when set, throttles Login after failed attempts (brute force).
	Guard *Guard
	// HashParams are the argon2id parameters accounts are hashed with.
	// Authenticate spends as much on a dummy hash for an unknown user, so
	// that timing does not tell which accounts exist. The zero value means
	// DefaultHashParams().
	HashParams HashParams
}

// Target is one final destination of a message.
type Target struct {
	// AccountID is > 0 for a local account.
	AccountID int64
	// Address is the account key for a local target, or the remote address
	// (as stored in the alias) for a remote one.
	Address string
	// Remote is true for an alias target on a domain yubin does not host.
	Remote bool
	// Postmaster is true for the placeholder target of a postmaster address
	// that has no account, alias or fallback: RFC 5321 4.5.1 requires that
	// postmaster be accepted, so the server accepts it and logs it.
	Postmaster bool
}

// Resolution is where mail for one address goes.
type Resolution struct {
	// Hosted reports whether the domain is one of ours.
	Hosted bool
	// Targets are deduplicated, in order of first appearance; empty when
	// !Hosted.
	Targets []Target
}
