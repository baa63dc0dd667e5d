package outbound

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"yubin/internal/smtp"
)

// extensions are the service extensions a peer announced in its EHLO reply
// (RFC 5321 4.1.1.1): keyword, upper-cased, to its parameters, separated by
// single spaces ("" when none).
type extensions map[string]string

// parseEHLO reads the extensions from the lines of an EHLO reply; the first
// line is the peer's name and greeting. RFC 5321 2.4: keywords are
// case-insensitive, so a "starttls" line offers STARTTLS. It is tolerant of
// what real servers send: runs of spaces, a line that is not an extension
// (skipped), a keyword given twice (the first counts, except AUTH, whose
// mechanisms are merged) and the "AUTH=PLAIN LOGIN" form that old servers
// add for old clients.
func parseEHLO(lines []string) extensions {
	ext := extensions{}
	if len(lines) < 2 {
		return ext
	}
	for _, line := range lines[1:] {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		kw, params := fields[0], fields[1:]
		if k, v, ok := strings.Cut(kw, "="); ok && strings.EqualFold(k, "AUTH") {
			kw = k
			params = slices.Insert(params, 0, strings.Fields(v)...)
		}
		if !smtp.IsKeyword(kw) {
			continue
		}
		kw = strings.ToUpper(kw)
		if kw == "AUTH" {
			ext[kw] = strings.Join(mergeMechs(strings.Fields(ext[kw]), params), " ")
			continue
		}
		if _, dup := ext[kw]; !dup {
			ext[kw] = strings.Join(params, " ")
		}
	}
	return ext
}

// mergeMechs appends the mechanisms of add, upper-cased, that have is not.
func mergeMechs(have, add []string) []string {
	for _, m := range add {
		m = strings.ToUpper(m)
		if !slices.Contains(have, m) {
			have = append(have, m)
		}
	}
	return have
}

func (e extensions) has(kw string) bool {
	_, ok := e[kw]
	return ok
}

// sizeLimit returns the peer's maximum message size (RFC 1870 4): 0 when
// it announces none, or SIZE without a number or with 0.
func (e extensions) sizeLimit() int64 {
	v, ok := e["SIZE"]
	if !ok {
		return 0
	}
	f := strings.Fields(v)
	if len(f) == 0 {
		return 0
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// authMechs returns the SASL mechanisms the peer offers, upper-cased.
func (e extensions) authMechs() []string {
	return strings.Fields(strings.ToUpper(e["AUTH"]))
}

// formatEHLO writes ext as the lines of an EHLO reply after the greeting
// line, keywords sorted: the inverse of parseEHLO, for tests and fuzzing.
func formatEHLO(greeting string, ext extensions) *smtp.Reply {
	lines := []string{greeting}
	for _, k := range slices.Sorted(maps.Keys(ext)) {
		if ext[k] == "" {
			lines = append(lines, k)
		} else {
			lines = append(lines, k+" "+ext[k])
		}
	}
	return &smtp.Reply{Code: 250, Lines: lines}
}
