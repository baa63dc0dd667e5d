package imapserver

import (
	"encoding/binary"
	"errors"
	"net/mail"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"yubin/internal/binenc"
)

// The ENVELOPE of a message is built once, when the message is first parsed, and cached in
// the store in the compact form below, so that a FETCH ENVELOPE of a large mailbox decodes a
// few length-prefixed strings per message instead of parsing its header again (the date,
// RFC 2047 words and address lists cost more than everything else in such a FETCH).
//
// Format (version 1): a version byte; the date as a flag byte (0: none) followed by the Unix
// time and the zone offset in seconds (signed varints); then the subject; the six address
// lists From, Sender, Reply-To, To, Cc, Bcc, each a count followed by name, mailbox and host
// of every address; the In-Reply-To list, a count and its ids; and the Message-ID. Strings
// are a uvarint length followed by the bytes.

const envelopeVersion = 1

func encodeEnvelope(env *imap.Envelope) []byte {
	b := make([]byte, 0, 256)
	b = append(b, envelopeVersion)
	if env.Date.IsZero() {
		b = append(b, 0)
	} else {
		_, off := env.Date.Zone()
		b = append(b, 1)
		b = binary.AppendVarint(b, env.Date.Unix())
		b = binary.AppendVarint(b, int64(off))
	}
	b = binenc.AppendString(b, env.Subject)
	for _, l := range [][]imap.Address{env.From, env.Sender, env.ReplyTo, env.To, env.Cc, env.Bcc} {
		b = binary.AppendUvarint(b, uint64(len(l)))
		for _, a := range l {
			b = binenc.AppendString(b, a.Name)
			b = binenc.AppendString(b, a.Mailbox)
			b = binenc.AppendString(b, a.Host)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(env.InReplyTo)))
	for _, id := range env.InReplyTo {
		b = binenc.AppendString(b, id)
	}
	return binenc.AppendString(b, env.MessageID)
}

var errBadEnvelope = errors.New("bad cached envelope")

// zones shares the *time.Location of each offset within one decoding run.
type zones map[int64]*time.Location

func (z zones) get(off int64) *time.Location {
	if l, ok := z[off]; ok {
		return l
	}
	l := time.FixedZone("", int(off))
	z[off] = l
	return l
}

func decodeEnvelope(b []byte, z zones) (*imap.Envelope, error) {
	if len(b) == 0 || b[0] != envelopeVersion {
		return nil, errBadEnvelope
	}
	d := &binenc.Reader{B: b[1:]}
	env := &imap.Envelope{}
	if len(d.B) > 0 && d.B[0] == 1 {
		d.B = d.B[1:]
		sec := d.Varint()
		off := d.Varint()
		if !d.Failed {
			env.Date = time.Unix(sec, 0).In(z.get(off))
		}
	} else if len(d.B) > 0 {
		d.B = d.B[1:]
	}
	env.Subject = d.String()
	for _, l := range []*[]imap.Address{&env.From, &env.Sender, &env.ReplyTo, &env.To, &env.Cc, &env.Bcc} {
		n := d.Count()
		if n == 0 {
			continue
		}
		*l = make([]imap.Address, n)
		for i := range n {
			(*l)[i] = imap.Address{Name: d.String(), Mailbox: d.String(), Host: d.String()}
		}
	}
	if n := d.Count(); n > 0 {
		env.InReplyTo = make([]string, n)
		for i := range n {
			env.InReplyTo[i] = d.String()
		}
	}
	env.MessageID = d.String()
	if d.Failed || len(d.B) != 0 {
		return nil, errBadEnvelope
	}
	return env, nil
}

// searchText is the text header SEARCH scans in SQL for candidates (store.SearchCandidates):
// every field's value unfolded and lower-cased, and its RFC 2047-decoded form when that
// differs, one per line. It holds, as a substring, whatever headerMatch can find in a field,
// so scanning it for the lower-cased needle never misses a message headerMatch would match
// (needles with a line break are not scanned for; see headerNeedles).
func searchText(fields headerFields) []byte {
	var b []byte
	for _, f := range fields {
		raw := f.value()
		lraw := strings.ToLower(raw)
		b = append(b, lraw...)
		b = append(b, '\n')
		if !strings.Contains(raw, "=?") {
			continue
		}
		if dec, err := wordDecoder.DecodeHeader(raw); err == nil {
			if ldec := strings.ToLower(dec); ldec != lraw {
				b = append(b, ldec...)
				b = append(b, '\n')
			}
		}
	}
	return b
}

// parseDate is go-message's Header.Date (net/mail.ParseDate of the field) with a fast path
// for the forms nearly every message uses, "Mon, 2 Jan 2006 15:04:05 -0700", also with a
// comment after the zone as Postfix writes it ("Sun,  6 Dec 2026 02:53:54 +0000 (UTC)"):
// ParseDate tries two dozen layouts, each failure allocating an error, before that one. The
// fast path takes only a value ParseDate would cut and clean exactly like this (no CR or LF;
// a numeric zone followed by nothing but white space and at most one plain comment, which
// ParseDate skips) and that starts with a letter, for which every layout ParseDate tries
// before this one fails (they start with the day's digits); so whenever it succeeds,
// ParseDate returns the same time.
func parseDate(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	s := strings.TrimLeft(v, " \t")
	if len(s) > 0 && (s[0] >= 'A' && s[0] <= 'Z' || s[0] >= 'a' && s[0] <= 'z') && !strings.ContainsAny(s, "\r\n") {
		if i := strings.IndexAny(s, "+-"); i != -1 && len(s) >= i+5 && plainCFWS(s[i+5:]) {
			if t, err := time.Parse(fastDateLayout, s[:i+5]); err == nil {
				return t, nil
			}
		}
	}
	return mail.ParseDate(v)
}

// plainCFWS reports whether s is white space around at most one comment without nested
// parentheses or backslashes, which net/mail skips after the zone.
func plainCFWS(s string) bool {
	s = strings.Trim(s, " \t")
	if s == "" {
		return true
	}
	return len(s) >= 2 && s[0] == '(' && s[len(s)-1] == ')' && !strings.ContainsAny(s[1:len(s)-1], "()\\")
}

const fastDateLayout = "Mon, 2 Jan 2006 15:04:05 -0700"
