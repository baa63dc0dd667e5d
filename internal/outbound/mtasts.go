package outbound

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The MTA-STS policy modes (RFC 8461 5).
const (
	ModeEnforce = "enforce" // no delivery without a verified certificate to a listed MX
	ModeTesting = "testing" // deliver anyway, report failures
	ModeNone    = "none"    // no policy
)

// maxMaxAge is the largest max_age RFC 8461 3.2 allows (about a year).
const maxMaxAge = 31557600 * time.Second

// Policy is an MTA-STS policy (RFC 8461 3.2) as served at
// https://mta-sts.<domain>/.well-known/mta-sts.txt.
type Policy struct {
	Mode   string        // ModeEnforce, ModeTesting or ModeNone
	MX     []string      // patterns of allowed MX hosts: "mx.example.org", "*.example.org"; lower-case
	MaxAge time.Duration // how long the policy may be cached: whole seconds, at most about a year
}

// ParsePolicy parses the policy text of RFC 8461 3.2:
//
//	sts-policy-record = sts-policy-field *WSP *(sts-policy-term sts-policy-field *WSP) [sts-policy-term]
//	sts-policy-field  = key *WSP ":" *WSP value
//	sts-policy-term   = LF / CRLF
//
// with the fields version ("STSv1", required), mode (required), max_age
// (required, 1 to 10 digits; a value above the RFC's maximum is lowered to
// it) and mx (one or more; required unless the mode is none). Unknown
// fields are ignored; of a field other than mx given twice the first
// counts. Keys, modes and MX patterns are case-insensitive.
func ParsePolicy(text string) (*Policy, error) {
	if text == "" {
		return nil, errors.New("mta-sts: empty policy")
	}
	var p Policy
	seen := map[string]bool{}
	text = strings.TrimSuffix(text, "\n")
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.Trim(line, " \t") == "" {
			continue // tolerated, though the grammar has no empty lines
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("mta-sts: line %d: no ':'", n+1)
		}
		key = strings.ToLower(strings.TrimRight(key, " \t"))
		value = strings.Trim(value, " \t")
		if !validPolicyKey(key) {
			return nil, fmt.Errorf("mta-sts: line %d: bad field name %q", n+1, key)
		}
		if key != "mx" && seen[key] {
			continue
		}
		seen[key] = true
		switch key {
		case "version":
			if value != "STSv1" {
				return nil, fmt.Errorf("mta-sts: unknown version %q", value)
			}
		case "mode":
			p.Mode = strings.ToLower(value)
			if p.Mode != ModeEnforce && p.Mode != ModeTesting && p.Mode != ModeNone {
				return nil, fmt.Errorf("mta-sts: unknown mode %q", value)
			}
		case "max_age":
			if len(value) < 1 || len(value) > 10 || strings.Trim(value, "0123456789") != "" {
				return nil, fmt.Errorf("mta-sts: bad max_age %q", value)
			}
			secs, _ := strconv.ParseInt(value, 10, 64)
			p.MaxAge = time.Duration(min(secs, int64(maxMaxAge/time.Second))) * time.Second
		case "mx":
			pat := strings.ToLower(strings.TrimSuffix(value, "."))
			if !validMXPattern(pat) {
				return nil, fmt.Errorf("mta-sts: bad mx pattern %q", value)
			}
			p.MX = append(p.MX, pat)
		}
	}
	for _, k := range []string{"version", "mode", "max_age"} {
		if !seen[k] {
			return nil, fmt.Errorf("mta-sts: policy has no %s", k)
		}
	}
	if p.Mode != ModeNone && len(p.MX) == 0 {
		return nil, errors.New("mta-sts: policy has no mx")
	}
	return &p, nil
}

// String returns the policy in the text form ParsePolicy reads, lines
// ending in CRLF.
func (p *Policy) String() string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\n")
	fmt.Fprintf(&b, "mode: %s\r\n", p.Mode)
	for _, mx := range p.MX {
		fmt.Fprintf(&b, "mx: %s\r\n", mx)
	}
	fmt.Fprintf(&b, "max_age: %d\r\n", int64(p.MaxAge/time.Second))
	return b.String()
}

// Match reports whether host, an MX host name, matches one of the
// policy's patterns (RFC 8461 4.1): equal ignoring case, or "*.suffix"
// matching exactly one more label on the left.
func (p *Policy) Match(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range p.MX {
		if suffix, ok := strings.CutPrefix(pat, "*."); ok {
			label, rest, ok := strings.Cut(host, ".")
			if ok && label != "" && rest == suffix {
				return true
			}
			continue
		}
		if host == pat {
			return true
		}
	}
	return false
}

// validPolicyKey: sts-policy-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".").
func validPolicyKey(k string) bool {
	if k == "" || len(k) > 32 || !isAlnum(k[0]) {
		return false
	}
	for i := 1; i < len(k); i++ {
		if c := k[i]; !isAlnum(c) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// validMXPattern: ["*."] Domain, with LDH labels (A-labels for IDNs).
func validMXPattern(p string) bool {
	p = strings.TrimPrefix(p, "*.")
	if p == "" || len(p) > 253 {
		return false
	}
	for label := range strings.SplitSeq(p, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if !isAlnum(label[i]) && label[i] != '-' {
				return false
			}
		}
	}
	return true
}

// parseSTSRecord parses the TXT record at _mta-sts.<domain> (RFC 8461
// 3.1): "v=STSv1; id=20160831085700Z;" with optional spaces, v first, id of
// 1 to 32 letters and digits, other fields ignored.
func parseSTSRecord(txt string) (id string, err error) {
	fields := strings.Split(strings.TrimRight(txt, "; \t"), ";")
	for i, f := range fields {
		k, v, ok := strings.Cut(strings.Trim(f, " \t"), "=")
		if !ok {
			return "", fmt.Errorf("mta-sts: bad record field %q", f)
		}
		switch {
		case i == 0:
			if k != "v" || v != "STSv1" {
				return "", errors.New("mta-sts: record does not start with v=STSv1")
			}
		case k == "id" && id == "":
			if len(v) < 1 || len(v) > 32 || !alnumOnly(v) {
				return "", fmt.Errorf("mta-sts: bad id %q", v)
			}
			id = v
		}
	}
	if id == "" {
		return "", errors.New("mta-sts: record has no id")
	}
	return id, nil
}

func alnumOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) {
			return false
		}
	}
	return true
}
