// Package address owns the syntax of email addresses as they travel in the
// SMTP envelope: parsing an RFC 5321 4.1.2 Mailbox (with the RFC 6531
// SMTPUTF8 extensions when the session allows them), its canonical text
// form, and the normalised lookup key the directory uses.
//
// It does not know which domains yubin hosts nor what an address resolves
// to; that is the directory's job. It interprets nothing in a local part
// (no sub-addressing, no source routes): it only reports, through
// HasRoutingChars, local parts that other software would treat as routing.
package address

import (
	"strings"
	"unicode/utf8"
)

// Address is a parsed mailbox. The zero Address is the null reverse-path
// ("<>", RFC 5321 4.5.5), which Parse never returns.
type Address struct {
	// Local is the local part in its unquoted form, case preserved: the
	// value `a b` for the text `"a b"@example.org`. RFC 5321 2.4: only the
	// receiving host may interpret the case of a local part.
	Local string
	// Domain is the lower-cased domain: ASCII, or a Unicode domain kept as
	// given but lower-cased (no IDNA mapping), or an address literal with its
	// brackets in canonical form: "[192.0.2.1]", "[IPv6:2001:db8::1]".
	Domain string
}

// Options controls what Parse accepts.
type Options struct {
	// AllowUTF8 permits non-ASCII characters in the local part and the
	// domain. Set it only when the SMTP session declared SMTPUTF8 on
	// MAIL FROM (RFC 6531 3.4).
	AllowUTF8 bool
}

// Error describes why a text is not an acceptable address.
type Error struct {
	// Reason says what is wrong, for logs and for the SMTP reply text.
	Reason string
	// UTF8 is true when the address is valid except that it contains
	// non-ASCII characters and Options.AllowUTF8 was false. The server
	// answers "553 5.6.7" for that case (RFC 6531 3.5) and "501 5.1.3"
	// (RFC 3463) for every other syntax error.
	UTF8 bool
}

func (e *Error) Error() string { return "invalid address: " + e.Reason }

// String returns the canonical text of the address: the local part quoted
// only when it is not a valid Dot-string, with only '"' and '\' escaped.
// It returns "" for the zero Address.
func (a Address) String() string {
	if a.IsZero() {
		return ""
	}
	return quoteLocal(a.Local) + "@" + a.Domain
}

// IsZero reports whether a is the zero Address (the null reverse-path).
func (a Address) IsZero() bool { return a.Local == "" && a.Domain == "" }

// IsIPLiteral reports whether the domain is an address literal such as
// "[192.0.2.1]" (RFC 5321 4.1.3).
func (a Address) IsIPLiteral() bool { return strings.HasPrefix(a.Domain, "[") }

// HasRoutingChars reports a local part that encodes routing to another host:
// one containing '%' (the "percent hack"), '!' (UUCP bang paths) or a quoted
// '@'. yubin never interprets them (RFC 5321 3.6.1 and appendix C allow a
// server to refuse them); the server refuses them for hosted domains so that
// nobody can use yubin as an open relay through a naive next hop.
func (a Address) HasRoutingChars() bool {
	return strings.ContainsAny(a.Local, "%!@")
}

// IsASCII reports whether the address is all ASCII, that is whether it can be
// sent to a peer that does not support SMTPUTF8.
func (a Address) IsASCII() bool { return isASCII(a.Local) && isASCII(a.Domain) }

// Key returns the lookup key: the lower-cased local part, "@", and the
// domain. Case-folding the local part is yubin's policy for its own
// mailboxes; the original case is kept in Local for relaying.
func (a Address) Key() string {
	return strings.ToLower(a.Local) + "@" + strings.ToLower(a.Domain)
}

// SplitDetail splits a sub-address (RFC 5233): with sep "+", "user+tag"
// gives ("user", "tag", true). It splits at the first separator. An empty
// sep, a local part without it, or one that starts with it (so that "+tag"
// stays a name of its own) gives (local, "", false).
func SplitDetail(local, sep string) (base, detail string, ok bool) {
	if sep == "" {
		return local, "", false
	}
	i := strings.Index(local, sep)
	if i <= 0 {
		return local, "", false
	}
	return local[:i], local[i+len(sep):], true
}

// quoteLocal returns the text form of a local part: as is when it is a valid
// Dot-string, else a Quoted-string (RFC 5321 4.1.2) that escapes only the
// two characters qtextSMTP excludes.
func quoteLocal(local string) string {
	if isDotString(local) {
		return local
	}
	var b strings.Builder
	b.Grow(len(local) + 2)
	b.WriteByte('"')
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
