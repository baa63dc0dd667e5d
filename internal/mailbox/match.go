package mailbox

import "strings"

// Pattern is a compiled LIST pattern (RFC 9051 6.3.9): '*' matches any run of characters, '%'
// any run without the hierarchy separator.
//
// Matching simulates the pattern as a set of states, one per pattern position, so a match
// costs O(len(pattern) x len(name)) whatever the pattern. go-imap's MatchList backtracks
// recursively, and a pattern like "*a*a*a*a*a*a*b" took seconds of CPU per name with it.
type Pattern struct {
	p string
}

// MaxPatternLen bounds a LIST pattern, keeping the cost of a match small.
const MaxPatternLen = 1024

// CompilePattern joins a LIST reference and pattern (the reference is a prefix, with a
// separator added between them when neither supplies one) and compiles the result.
func CompilePattern(ref, pattern string) Pattern {
	full := pattern
	if ref != "" {
		switch {
		case strings.HasPrefix(pattern, string(Sep)):
			full = pattern // an absolute pattern ignores the reference
		case strings.HasSuffix(ref, string(Sep)) || pattern == "":
			full = ref + pattern
		default:
			full = ref + string(Sep) + pattern
		}
	}
	if len(full) > MaxPatternLen {
		full = full[:MaxPatternLen]
	}
	return Pattern{p: full}
}

// Match reports whether name matches the pattern. INBOX as a first level matches
// case-insensitively.
func (pt Pattern) Match(name string) bool {
	p := pt.p
	// inboxLen is how many leading bytes of name compare case-insensitively.
	inboxLen := 0
	if strings.HasPrefix(name, "INBOX") && (len(name) == 5 || name[5] == Sep) {
		inboxLen = 5
	}
	cur := make([]bool, len(p)+1)
	next := make([]bool, len(p)+1)
	cur[0] = true
	closure(p, cur)
	for i := 0; i < len(name); i++ {
		c := name[i]
		clear(next)
		any := false
		for s := 0; s < len(p); s++ {
			if !cur[s] {
				continue
			}
			switch pc := p[s]; {
			case pc == '*':
				next[s] = true
			case pc == '%':
				if c != Sep {
					next[s] = true
				}
			case pc == c || (i < inboxLen && lower(pc) == lower(c)):
				next[s+1] = true
			default:
				continue
			}
			any = true
		}
		if !any {
			return false
		}
		closure(p, next)
		cur, next = next, cur
	}
	return cur[len(p)]
}

// closure adds the states reachable by a wildcard matching nothing.
func closure(p string, states []bool) {
	for s := 0; s < len(p); s++ {
		if states[s] && (p[s] == '*' || p[s] == '%') {
			states[s+1] = true
		}
	}
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// String returns the joined pattern.
func (pt Pattern) String() string { return pt.p }
