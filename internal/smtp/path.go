package smtp

import (
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Param is one ESMTP parameter of MAIL or RCPT (RFC 5321 4.1.2).
type Param struct {
	Key   string // upper-cased
	Value string // as sent (xtext and the like are not decoded); "" when no "="
}

// HasValue reports whether the parameter had "=value". An empty value after
// "=" is a syntax error, so Value is "" exactly when there was no "=".
func (p Param) HasValue() bool { return p.Value != "" }

// PathArg is the parsed argument of MAIL or RCPT.
type PathArg struct {
	Route   string // source route "@a,@b" if present (without the ':'), else ""
	Mailbox string // the mailbox between < and > after the route, as sent; "" for the null path <>
	Params  []Param
}

// Param returns the value of the parameter key (case-insensitive) and
// whether the parameter was present.
func (p PathArg) Param(key string) (value string, ok bool) {
	for _, prm := range p.Params {
		if strings.EqualFold(prm.Key, key) {
			return prm.Value, true
		}
	}
	return "", false
}

// String returns the argument in wire form without the FROM:/TO: prefix,
// e.g. "<a@b.example> SIZE=100 BODY=8BITMIME", as a client sends it.
func (p PathArg) String() string {
	var b strings.Builder
	b.WriteByte('<')
	if p.Route != "" {
		b.WriteString(p.Route)
		b.WriteByte(':')
	}
	b.WriteString(p.Mailbox)
	b.WriteByte('>')
	for _, prm := range p.Params {
		b.WriteByte(' ')
		b.WriteString(prm.Key)
		if prm.Value != "" {
			b.WriteByte('=')
			b.WriteString(prm.Value)
		}
	}
	return b.String()
}

// ParsePathArg parses the argument of MAIL (prefix "FROM:") or RCPT (prefix
// "TO:"): RFC 5321 4.1.1.2 and 4.1.1.3,
//
//	"FROM:" Reverse-path [SP Mail-parameters]
//	"TO:" ( "<Postmaster@" Domain ">" / "<Postmaster>" / Forward-path ) [SP Rcpt-parameters]
//
// The prefix matches case-insensitively, and spaces after the colon are
// tolerated ("FROM: <a@b>"), as many clients send them. The angle brackets
// are required. The null path <> is accepted only for FROM:, the bare
// <Postmaster> only for TO:. The mailbox follows RFC 5321 4.1.2 with the
// UTF-8 of RFC 6531, except that dots in an unquoted local part may be
// leading, trailing or doubled: such addresses exist (old Japanese mobile
// carriers issued them) and are unambiguous. Whether UTF-8 needs SMTPUTF8 is
// the server's decision.
//
// Errors are *Reply values: 501 5.1.7 for a bad sender path (FROM:), 501
// 5.1.3 for a bad recipient path (TO:), 501 5.5.4 for a missing prefix and
// for bad or repeated parameters.
func ParsePathArg(arg, prefix string) (PathArg, error) {
	upper := strings.ToUpper(prefix)
	pathCode := "5.5.4"
	switch upper {
	case "FROM:":
		pathCode = "5.1.7"
	case "TO:":
		pathCode = "5.1.3"
	}
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return PathArg{}, Replyf(501, "5.5.4", "syntax: expected %s<address>", upper)
	}
	rest := strings.TrimLeft(arg[len(prefix):], " ")
	if rest == "" || rest[0] != '<' {
		return PathArg{}, Replyf(501, pathCode, "syntax: address must be in angle brackets")
	}
	p := pathParser{s: rest, allowNull: upper == "FROM:", allowPostmaster: upper == "TO:"}
	var pa PathArg
	if msg := p.path(&pa); msg != "" {
		return PathArg{}, Replyf(501, pathCode, "bad address syntax: %s", msg)
	}
	if !utf8.ValidString(rest[:p.i]) {
		return PathArg{}, Replyf(501, pathCode, "bad address syntax: invalid UTF-8")
	}
	params := rest[p.i:]
	if params != "" && params[0] != ' ' {
		return PathArg{}, Replyf(501, pathCode, "bad address syntax: junk after '>'")
	}
	var err error
	if pa.Params, err = parseParams(params); err != nil {
		return PathArg{}, err
	}
	return pa, nil
}

// pathParser walks a path from its '<'. Its methods return "" on success or
// what is wrong, and leave i after what they consumed.
type pathParser struct {
	s               string
	i               int
	allowNull       bool
	allowPostmaster bool
}

func (p *pathParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

// path parses Path = "<" [ A-d-l ":" ] Mailbox ">", or "<>".
func (p *pathParser) path(pa *PathArg) string {
	p.i = 1 // the '<'
	if p.peek() == '>' {
		if !p.allowNull {
			return "null path not allowed here"
		}
		p.i++
		return ""
	}
	if p.peek() == '@' {
		// RFC 5321 4.1.2: A-d-l = At-domain *( "," At-domain ). Source routes
		// are obsolete (C.), but must be accepted and then ignored.
		start := p.i
		for {
			if p.peek() != '@' {
				return "bad source route"
			}
			p.i++
			if !p.domain() {
				return "bad domain in source route"
			}
			if p.peek() == ',' {
				p.i++
				continue
			}
			if p.peek() != ':' {
				return "bad source route"
			}
			break
		}
		pa.Route = p.s[start:p.i]
		p.i++ // ':'
	}
	start := p.i
	quoted := p.peek() == '"'
	if msg := p.localPart(); msg != "" {
		return msg
	}
	local := p.s[start:p.i]
	if p.peek() == '>' && p.allowPostmaster && pa.Route == "" && !quoted && strings.EqualFold(local, "postmaster") {
		// RFC 5321 4.1.1.3: "<Postmaster>" without a domain.
		pa.Mailbox = local
		p.i++
		return ""
	}
	if p.peek() != '@' {
		return "missing '@domain'"
	}
	p.i++
	if p.peek() == '[' {
		if msg := p.addressLiteral(); msg != "" {
			return msg
		}
	} else if !p.domain() {
		return "bad domain"
	}
	if p.peek() != '>' {
		return "missing '>'"
	}
	pa.Mailbox = p.s[start:p.i]
	p.i++
	return ""
}

// localPart parses Local-part = Dot-string / Quoted-string (RFC 5321 4.1.2)
// with UTF8-non-ascii (RFC 6531 3.3); see ParsePathArg on dots.
func (p *pathParser) localPart() string {
	if p.peek() != '"' {
		start := p.i
		for p.i < len(p.s) && (isAtext(p.s[p.i]) || p.s[p.i] == '.') {
			p.i++
		}
		if p.i == start {
			return "empty local part"
		}
		return ""
	}
	p.i++
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return ""
		case c == '\\':
			// quoted-pairSMTP = %d92 %d32-126
			if p.i+1 >= len(p.s) || p.s[p.i+1] < 32 || p.s[p.i+1] > 126 {
				return "bad quoted pair in local part"
			}
			p.i += 2
		case c >= 32 && c <= 126 || c >= 0x80:
			// qtextSMTP = %d32-33 / %d35-91 / %d93-126; '"' and '\' are above.
			p.i++
		default:
			return "bad character in quoted local part"
		}
	}
	return "unterminated quoted local part"
}

// domain parses Domain = sub-domain *("." sub-domain), where sub-domain =
// Let-dig [Ldh-str] or, with RFC 6531, a U-label (any UTF-8 beyond ASCII).
func (p *pathParser) domain() bool {
	start := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		if !isAlnum(c) && c != '-' && c != '.' && c < 0x80 {
			break
		}
		p.i++
	}
	d := p.s[start:p.i]
	if d == "" {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
	}
	return true
}

// addressLiteral parses address-literal = "[" ( IPv4-address-literal /
// IPv6-address-literal / General-address-literal ) "]" (RFC 5321 4.1.3).
func (p *pathParser) addressLiteral() string {
	p.i++ // '['
	start := p.i
	// dcontent = %d33-90 / %d94-126
	for p.i < len(p.s) && p.s[p.i] >= 33 && p.s[p.i] <= 126 && p.s[p.i] != '[' && p.s[p.i] != '\\' && p.s[p.i] != ']' {
		p.i++
	}
	lit := p.s[start:p.i]
	if p.peek() != ']' {
		return "bad address literal"
	}
	p.i++
	tag, rest, general := strings.Cut(lit, ":")
	switch {
	case !general:
		if ip, err := netip.ParseAddr(lit); err != nil || !ip.Is4() {
			return "bad IPv4 address literal"
		}
	case strings.EqualFold(tag, "IPv6"):
		if ip, err := netip.ParseAddr(rest); err != nil || !ip.Is6() || ip.Zone() != "" {
			return "bad IPv6 address literal"
		}
	default:
		// General-address-literal = Standardized-tag ":" 1*dcontent, and
		// Standardized-tag = Ldh-str.
		if tag == "" || !isAlnum(tag[0]) || !isAlnum(tag[len(tag)-1]) || rest == "" {
			return "bad address literal"
		}
		for i := 0; i < len(tag); i++ {
			if !isAlnum(tag[i]) && tag[i] != '-' {
				return "bad address literal"
			}
		}
	}
	return ""
}

// isAtext reports whether c is atext (RFC 5322 3.2.3) or part of a UTF-8
// sequence (RFC 6531 3.3).
func isAtext(c byte) bool {
	return isAlnum(c) || c >= 0x80 || strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// parseParams parses [SP esmtp-param *(SP esmtp-param)] (RFC 5321 4.1.2):
//
//	esmtp-param   = esmtp-keyword ["=" esmtp-value]
//	esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
//	esmtp-value   = 1*(%d33-60 / %d62-126), and UTF-8 with SMTPUTF8 (RFC 6531 3.3)
//
// Runs of spaces are tolerated. A repeated keyword is an error: which one
// would count is ambiguous.
func parseParams(s string) ([]Param, error) {
	var params []Param
	for field := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == ' ' }) {
		key, value, hasValue := strings.Cut(field, "=")
		if !IsKeyword(key) {
			return nil, Replyf(501, "5.5.4", "bad parameter keyword %s", quoteShort(key))
		}
		if hasValue && !validValue(value) {
			return nil, Replyf(501, "5.5.4", "bad value for parameter %s", strings.ToUpper(key))
		}
		key = strings.ToUpper(key)
		for _, prm := range params {
			if prm.Key == key {
				return nil, Replyf(501, "5.5.4", "parameter %s given twice", key)
			}
		}
		params = append(params, Param{Key: key, Value: value})
	}
	return params, nil
}

// IsKeyword reports whether k is an esmtp-keyword or ehlo-keyword of RFC 5321 4.1.2:
// (ALPHA / DIGIT) *(ALPHA / DIGIT / "-").
func IsKeyword(k string) bool {
	if k == "" || !isAlnum(k[0]) {
		return false
	}
	for i := 1; i < len(k); i++ {
		if !isAlnum(k[i]) && k[i] != '-' {
			return false
		}
	}
	return true
}

func validValue(v string) bool {
	if v == "" || !utf8.ValidString(v) {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x80 && (c < 33 || c > 126 || c == '=') {
			return false
		}
	}
	return true
}
