package dsn

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DecodeXtext decodes RFC 3461 4 xtext, in which "+" and two upper-case hex digits stand for
// one octet, and the RFC 6533 3 "\x{HHHH}" escapes of utf-8-addr-xtext. The result must be
// valid UTF-8.
func DecodeXtext(s string) (string, error) {
	if !strings.ContainsAny(s, "+\\") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) {
				return "", errors.New("xtext: truncated +XX escape")
			}
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil || strings.ToUpper(s[i+1:i+3]) != s[i+1:i+3] {
				return "", errors.New("xtext: bad +XX escape")
			}
			b.WriteByte(byte(v))
			i += 2
		case c == '\\' && strings.HasPrefix(s[i:], `\x{`):
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return "", errors.New(`xtext: unterminated \x{...} escape`)
			}
			v, err := strconv.ParseUint(s[i+3:i+end], 16, 32)
			if err != nil || end-3 < 2 || end-3 > 6 || !utf8.ValidRune(rune(v)) {
				return "", errors.New(`xtext: bad \x{...} escape`)
			}
			b.WriteRune(rune(v))
			i += end
		default:
			b.WriteByte(c)
		}
	}
	if !utf8.ValidString(b.String()) {
		return "", errors.New("xtext: not UTF-8")
	}
	return b.String(), nil
}

// decodeOr decodes xtext, or returns s as it is when it is not valid xtext.
func decodeOr(s string) string {
	d, err := DecodeXtext(s)
	if err != nil {
		return s
	}
	return d
}
