package address

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits from RFC 5321 4.5.3.1.1 and 4.5.3.1.2. The 254 for the whole
// address follows from the 256-octet Path limit of 4.5.3.1.3 minus the
// angle brackets (RFC 3696 erratum 1690).
const (
	maxLocal   = 64
	maxDomain  = 255
	maxLabel   = 63
	maxAddress = 254
)

// Parse parses an RFC 5321 4.1.2 Mailbox, without angle brackets:
//
//	Mailbox    = Local-part "@" ( Domain / address-literal )
//	Local-part = Dot-string / Quoted-string
//
// With opt.AllowUTF8, RFC 6531 3.3 adds non-ASCII characters to atext,
// qtextSMTP and domain labels (U-labels, kept as given but lower-cased).
//
// Beyond the grammar, Parse refuses an empty quoted local part (`""@x`),
// control characters anywhere, and address literals other than IPv4 and
// IPv6 (no General-address-literal tag is registered). Length limits apply
// to the canonical text (String), so whatever Parse accepts, Parse accepts
// again from its String. Errors are of type *Error.
func Parse(s string, opt Options) (Address, error) {
	// Parse as if SMTPUTF8 were on, so that an address which is valid but
	// for its non-ASCII characters gets the distinct 553 5.6.7 answer and
	// a malformed one gets a plain syntax error.
	a, err := parse(s)
	if err != nil {
		return Address{}, err
	}
	if !opt.AllowUTF8 && !isASCII(s) {
		return Address{}, &Error{Reason: "non-ASCII address without SMTPUTF8", UTF8: true}
	}
	return a, nil
}

func parse(s string) (Address, error) {
	if s == "" {
		return Address{}, syntaxErr("empty address")
	}
	if !utf8.ValidString(s) {
		return Address{}, syntaxErr("invalid UTF-8")
	}
	local, rest, err := parseLocal(s)
	if err != nil {
		return Address{}, err
	}
	if rest == "" || rest[0] != '@' {
		return Address{}, syntaxErr("missing @ after local part")
	}
	domain, err := parseDomain(rest[1:])
	if err != nil {
		return Address{}, err
	}
	a := Address{Local: local, Domain: domain}
	if n := len(quoteLocal(local)); n > maxLocal {
		return Address{}, syntaxErr(fmt.Sprintf("local part is %d octets, more than %d", n, maxLocal))
	}
	if n := len(a.String()); n > maxAddress {
		return Address{}, syntaxErr(fmt.Sprintf("address is %d octets, more than %d", n, maxAddress))
	}
	return a, nil
}

// parseLocal returns the value of the local part at the start of s and the
// text after it.
func parseLocal(s string) (local, rest string, err error) {
	if s[0] == '"' {
		return parseQuoted(s)
	}
	i := strings.IndexByte(s, '@')
	if i < 0 {
		return "", "", syntaxErr("missing @")
	}
	local = s[:i]
	if local == "" {
		return "", "", syntaxErr("missing local part")
	}
	if err := checkDotString(local); err != nil {
		return "", "", err
	}
	return local, s[i:], nil
}

// checkDotString checks Dot-string = Atom *("." Atom).
func checkDotString(s string) error {
	if s[0] == '.' {
		return syntaxErr("local part starts with a dot")
	}
	if s[len(s)-1] == '.' {
		return syntaxErr("local part ends with a dot")
	}
	if strings.Contains(s, "..") {
		return syntaxErr("local part has two dots in a row")
	}
	for _, r := range s {
		if r != '.' && !isAtext(r) {
			return syntaxErr(fmt.Sprintf("character %s not allowed in unquoted local part", quoteRune(r)))
		}
	}
	return nil
}

// parseQuoted parses Quoted-string = DQUOTE *QcontentSMTP DQUOTE at the
// start of s and returns its value.
func parseQuoted(s string) (local, rest string, err error) {
	var b strings.Builder
	for i := 1; i < len(s); {
		c := s[i]
		switch {
		case c == '"':
			if b.Len() == 0 {
				return "", "", syntaxErr("empty quoted local part")
			}
			return b.String(), s[i+1:], nil
		case c == '\\':
			// quoted-pairSMTP = %d92 %d32-126: only printable ASCII.
			if i+1 >= len(s) || s[i+1] < 32 || s[i+1] > 126 {
				return "", "", syntaxErr("bad backslash escape in quoted local part")
			}
			b.WriteByte(s[i+1])
			i += 2
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRuneInString(s[i:])
			if !isUTF8Text(r) {
				return "", "", syntaxErr(fmt.Sprintf("character %s not allowed in quoted local part", quoteRune(r)))
			}
			b.WriteString(s[i : i+n])
			i += n
		case c >= 32 && c <= 126:
			// qtextSMTP is printable ASCII and space, less '"' and '\'
			// which are handled above.
			b.WriteByte(c)
			i++
		default:
			return "", "", syntaxErr(fmt.Sprintf("character %s not allowed in quoted local part", quoteRune(rune(c))))
		}
	}
	return "", "", syntaxErr("unterminated quoted local part")
}

// parseDomain parses Domain or address-literal and returns its canonical
// form.
func parseDomain(s string) (string, error) {
	if s == "" {
		return "", syntaxErr("missing domain")
	}
	if strings.IndexByte(s, '@') >= 0 {
		return "", syntaxErr("more than one @")
	}
	if s[0] == '[' {
		return parseLiteral(s)
	}
	// Lower-case first and check the result, so that the stored form is the
	// one that meets the limits.
	d := strings.ToLower(s)
	if len(d) > maxDomain {
		return "", syntaxErr(fmt.Sprintf("domain is %d octets, more than %d", len(d), maxDomain))
	}
	for _, label := range strings.Split(d, ".") {
		if err := checkLabel(label); err != nil {
			return "", err
		}
	}
	return d, nil
}

// checkLabel checks sub-domain = Let-dig [Ldh-str] (RFC 5321 4.1.2), and
// for U-labels (RFC 6531 3.3) that non-ASCII characters are letters, marks
// or digits. The full IDNA2008 rules are the registry's business; yubin
// only needs to refuse what cannot be a domain name.
func checkLabel(label string) error {
	switch {
	case label == "":
		return syntaxErr("empty label in domain (leading, trailing or double dot)")
	case len(label) > maxLabel:
		return syntaxErr(fmt.Sprintf("domain label is %d octets, more than %d", len(label), maxLabel))
	case label[0] == '-':
		return syntaxErr("domain label starts with a hyphen")
	case label[len(label)-1] == '-':
		return syntaxErr("domain label ends with a hyphen")
	}
	for _, r := range label {
		ok := r == '-' || r < utf8.RuneSelf && isLetDig(byte(r)) ||
			r >= utf8.RuneSelf && unicode.In(r, unicode.L, unicode.M, unicode.N)
		if !ok {
			return syntaxErr(fmt.Sprintf("character %s not allowed in domain", quoteRune(r)))
		}
	}
	return nil
}

// parseLiteral parses address-literal (RFC 5321 4.1.3) and returns it in
// canonical form: IPv4 without leading zeros, IPv6 as RFC 5952 text with
// the tag spelt "IPv6:".
func parseLiteral(s string) (string, error) {
	if len(s) < 2 || s[len(s)-1] != ']' {
		return "", syntaxErr("unterminated address literal")
	}
	inner := s[1 : len(s)-1]
	if len(inner) >= 5 && strings.EqualFold(inner[:5], "IPv6:") {
		ip, err := netip.ParseAddr(inner[5:])
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "", syntaxErr("bad IPv6 address literal")
		}
		return "[IPv6:" + ip.String() + "]", nil
	}
	if strings.IndexByte(inner, ':') >= 0 {
		return "", syntaxErr("unsupported address literal tag")
	}
	parts := strings.Split(inner, ".")
	if len(parts) != 4 {
		return "", syntaxErr("bad IPv4 address literal")
	}
	var b strings.Builder
	b.WriteByte('[')
	for i, p := range parts {
		// Snum = 1*3DIGIT representing a decimal integer value in the range
		// 0 through 255.
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return "", syntaxErr("bad IPv4 address literal")
		}
		n, _ := strconv.Atoi(p)
		if n > 255 {
			return "", syntaxErr("bad IPv4 address literal")
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strconv.Itoa(n))
	}
	b.WriteByte(']')
	return b.String(), nil
}

// isDotString reports whether s can be written unquoted.
func isDotString(s string) bool {
	return s != "" && checkDotString(s) == nil
}

// isAtext reports atext (RFC 5322 3.2.3) plus, per RFC 6531 3.3,
// non-ASCII text other than spaces and controls.
func isAtext(r rune) bool {
	if r >= utf8.RuneSelf {
		return isUTF8Text(r) && !unicode.IsSpace(r)
	}
	c := byte(r)
	return isLetDig(c) || strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// isUTF8Text reports a non-ASCII character acceptable in a local part. C1
// controls are valid UTF-8 but have no business in an address.
func isUTF8Text(r rune) bool {
	return r != utf8.RuneError && !unicode.IsControl(r)
}

func isLetDig(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func quoteRune(r rune) string { return strconv.QuoteRune(r) }

func syntaxErr(reason string) *Error { return &Error{Reason: reason} }
