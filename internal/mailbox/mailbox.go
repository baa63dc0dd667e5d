// Package mailbox holds the rules for mailbox names that every mail-reading protocol shares:
// the hierarchy separator, INBOX's case-insensitivity, what a valid name is, the default
// special-use mailboxes, and LIST pattern matching. It keeps no state; the mailboxes
// themselves (UIDs, flags, MODSEQ) live in the store.
package mailbox

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// Sep is the hierarchy separator of mailbox names.
const Sep = '/'

// MaxNameLen bounds a mailbox name in bytes (UTF-8).
const MaxNameLen = 255

// MaxDepth bounds the levels of a mailbox name.
const MaxDepth = 16

// ErrBadName is returned by Normalize for a name yubin does not accept.
var ErrBadName = errors.New("invalid mailbox name")

// Normalize returns the stored form of a mailbox name: "INBOX" in any case becomes "INBOX"
// (RFC 9051 5.1: INBOX is case-insensitive), as does an INBOX first level ("inbox/x" is
// "INBOX/x"). It refuses empty names, empty levels ("a//b", "/a", "a/"), control characters,
// the LIST wildcards '*' and '%', invalid UTF-8, and names too long or too deep.
func Normalize(name string) (string, error) {
	if name == "" || len(name) > MaxNameLen || !utf8.ValidString(name) {
		return "", ErrBadName
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '*' || r == '%' {
			return "", ErrBadName
		}
	}
	levels := strings.Split(name, string(Sep))
	if len(levels) > MaxDepth {
		return "", ErrBadName
	}
	for _, l := range levels {
		if l == "" {
			return "", ErrBadName
		}
	}
	if strings.EqualFold(levels[0], "INBOX") {
		levels[0] = "INBOX"
	}
	return strings.Join(levels, string(Sep)), nil
}

// Parents returns the ancestors of a name, outermost first: "a/b/c" gives "a", "a/b".
func Parents(name string) []string {
	var out []string
	for i := 0; i < len(name); i++ {
		if name[i] == Sep {
			out = append(out, name[:i])
		}
	}
	return out
}

// SpecialUses are the RFC 6154 attributes a client may ask for with CREATE (RFC 6154 3).
var SpecialUses = []string{`\All`, `\Archive`, `\Drafts`, `\Flagged`, `\Junk`, `\Sent`, `\Trash`}
