// Package dns is the only way yubin asks the DNS anything (STYLE.md 6): the
// Resolver interface that every consumer takes as a dependency, a real
// implementation that talks to recursive servers with github.com/miekg/dns,
// and a Mock for unit tests.
//
// Its errors say what a caller must decide on: whether the name does not
// exist (ErrNotFound, NXDOMAIN), whether the name exists without records of
// the asked type (ErrNoRecords, NODATA: RFC 5321 5.1 then falls back from MX
// to A/AAAA), and whether the failure is temporary (Temporary: SERVFAIL,
// REFUSED, timeouts), so that mail is deferred rather than bounced.
package dns

import (
	"context"
	"errors"
	"net"
	"strings"
)

// Resolver is the only way yubin does DNS (STYLE.md 6).
//
// Names may be given with or without the trailing dot, in any case, and as
// U-labels (they are converted to A-labels). Host names in results are
// lower-cased and have no trailing dot, except the null MX of RFC 7505,
// whose Host is ".".
type Resolver interface {
	// LookupMX returns the MX records of domain, in the order received
	// (sorting by preference is the caller's business).
	LookupMX(ctx context.Context, domain string) ([]*net.MX, error)
	// LookupIP returns the IPv4 (A) and IPv6 (AAAA) addresses of host.
	LookupIP(ctx context.Context, host string) ([]net.IP, error)
	// LookupTXT returns the TXT records of name, each record's strings
	// joined into one.
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// ErrNotFound is matched (errors.Is) by an error for a name that does not
// exist (NXDOMAIN) and, because a caller that wanted records has none either
// way, also by one for a name without records of the asked type (NODATA).
// Test ErrNoRecords first to tell the two apart.
var ErrNotFound = errors.New("name not found")

// ErrNoRecords is matched by an error for a name that exists but has no
// records of the asked type (NODATA). RFC 5321 5.1: no MX records means the
// domain itself is the mail exchanger.
var ErrNoRecords = errors.New("no records of that type")

type kind int

const (
	kindTemporary kind = iota // SERVFAIL, REFUSED, timeout, network error
	kindNotFound              // NXDOMAIN
	kindNoRecords             // NODATA
	kindInvalid               // a name that cannot be asked (bad syntax), or a broken answer
)

// Error is the error of a failed lookup.
type Error struct {
	Type   string // "MX", "A/AAAA", "TXT"
	Name   string // the name as asked
	Server string // the server that answered, or "" when none did
	Reason string // "NXDOMAIN", "SERVFAIL", "i/o timeout", ...
	kind   kind
	Err    error // the underlying error, if any
}

func (e *Error) Error() string {
	s := "lookup " + e.Type + " " + e.Name
	if e.Server != "" {
		s += " on " + e.Server
	}
	return s + ": " + e.Reason
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotFound) and errors.Is(err, ErrNoRecords)
// work as their doc comments say.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.kind == kindNotFound || e.kind == kindNoRecords
	case ErrNoRecords:
		return e.kind == kindNoRecords
	}
	return false
}

// Temporary reports whether the same lookup may succeed later.
func (e *Error) Temporary() bool { return e.kind == kindTemporary }

// Temporary reports whether err is a lookup failure that may go away (a
// SERVFAIL, a timeout, a cancelled context): mail must be deferred, not
// bounced. A nil error, NXDOMAIN and NODATA are not temporary.
func Temporary(err error) bool {
	if err == nil {
		return false
	}
	var t interface{ Temporary() bool }
	if errors.As(err, &t) {
		return t.Temporary()
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// normName returns name lower-cased without its trailing dot: the key under
// which the Mock and the fake server keep names.
func normName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// normHost is normName for host names in results; the root stays ".".
func normHost(host string) string {
	if host == "." || host == "" {
		return "."
	}
	return normName(host)
}
