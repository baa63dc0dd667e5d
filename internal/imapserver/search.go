package imapserver

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/quotedprintable"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-imap/v2"
	goimapserver "github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/charset"

	"yubin/internal/store"
)

// Search implements SEARCH and UID SEARCH (RFC 9051 6.4.4) with ESEARCH's MIN, MAX, COUNT
// and ALL. Flags, sizes, dates and UIDs are decided from the database rows; header keys
// from the cached header; BODY and TEXT decode the message's text parts (transfer encoding
// and charset) and compare case-insensitively.
func (s *session) Search(kind goimapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	v := s.sel
	refs := v.resolve(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}})
	if needles := headerNeedles(criteria); len(needles) > 0 && len(refs) > 0 {
		cand, err := s.srv.Store.SearchCandidates(s.ctx, v.mbox.ID, needles)
		if err != nil {
			return nil, s.internal("search", err)
		}
		refs = keepUIDs(refs, cand)
	}
	infos, err := s.srv.Store.MessagesByUID(s.ctx, v.mbox.ID, refUIDs(refs))
	if err != nil {
		return nil, s.internal("search", err)
	}
	byUID := make(map[uint32]*store.MessageInfo, len(infos))
	for i := range infos {
		byUID[infos[i].UID] = &infos[i]
	}
	e := &searchEval{s: s, metas: map[string]*meta{}}
	if needsHeader(criteria) {
		ms, err := s.loadMeta(infos, needsBody(criteria))
		if err != nil {
			return nil, s.internal("search", err)
		}
		e.metas = ms
	}
	data := &imap.SearchData{}
	var seqs imap.SeqSet
	var uids imap.UIDSet
	for _, r := range refs {
		m := byUID[r.uid]
		if m == nil {
			continue
		}
		ok, err := e.match(criteria, r, m)
		if err != nil {
			return nil, s.internal("search", err)
		}
		if !ok {
			continue
		}
		num := r.seq
		if kind == goimapserver.NumKindUID {
			num = r.uid
			uids.AddNum(imap.UID(r.uid))
		} else {
			seqs.AddNum(r.seq)
		}
		if data.Min == 0 {
			data.Min = num
		}
		data.Max = num
		data.Count++
	}
	if kind == goimapserver.NumKindUID {
		data.All = uids
	} else {
		data.All = seqs
	}
	if options != nil && options.ReturnSave {
		v.saved = v.saved[:0]
		for _, r := range refs {
			if (kind == goimapserver.NumKindUID && uids.Contains(imap.UID(r.uid))) || (kind != goimapserver.NumKindUID && seqs.Contains(r.seq)) {
				v.saved = append(v.saved, r.uid)
			}
		}
	}
	return data, nil
}

// headerNeedles returns the lower-cased values of the HEADER keys every match must satisfy (the
// top level of the criteria is an AND), for the store to find candidates by (see searchText).
// Empty values (any message with the field) and values with a line break are left to the
// exact check alone.
func headerNeedles(c *imap.SearchCriteria) [][]byte {
	var out [][]byte
	for _, hf := range c.Header {
		if hf.Value == "" || strings.ContainsAny(hf.Value, "\r\n") {
			continue
		}
		out = append(out, []byte(strings.ToLower(hf.Value)))
	}
	return out
}

// keepUIDs returns the refs (in UID order) whose UIDs are in uids (ascending).
func keepUIDs(refs []msgRef, uids []uint32) []msgRef {
	out := refs[:0:0]
	j := 0
	for _, r := range refs {
		for j < len(uids) && uids[j] < r.uid {
			j++
		}
		if j < len(uids) && uids[j] == r.uid {
			out = append(out, r)
		}
	}
	return out
}

// needsBody reports whether the criteria read message text (BODY, TEXT), which needs the
// MIME structure.
func needsBody(c *imap.SearchCriteria) bool {
	if len(c.Body) > 0 || len(c.Text) > 0 {
		return true
	}
	for i := range c.Not {
		if needsBody(&c.Not[i]) {
			return true
		}
	}
	for i := range c.Or {
		if needsBody(&c.Or[i][0]) || needsBody(&c.Or[i][1]) {
			return true
		}
	}
	return false
}

func needsHeader(c *imap.SearchCriteria) bool {
	if len(c.Header) > 0 || !c.SentSince.IsZero() || !c.SentBefore.IsZero() || len(c.Body) > 0 || len(c.Text) > 0 {
		return true
	}
	for i := range c.Not {
		if needsHeader(&c.Not[i]) {
			return true
		}
	}
	for i := range c.Or {
		if needsHeader(&c.Or[i][0]) || needsHeader(&c.Or[i][1]) {
			return true
		}
	}
	return false
}

type searchEval struct {
	s     *session
	metas map[string]*meta
}

func (e *searchEval) match(c *imap.SearchCriteria, r msgRef, m *store.MessageInfo) (bool, error) {
	v := e.s.sel
	for _, set := range c.SeqNum {
		if !slices.ContainsFunc(v.resolve(set), func(x msgRef) bool { return x.seq == r.seq }) {
			return false, nil
		}
	}
	for _, set := range c.UID {
		if !slices.ContainsFunc(v.resolve(set), func(x msgRef) bool { return x.uid == r.uid }) {
			return false, nil
		}
	}
	day := dateOnly(m.InternalDate)
	if !c.Since.IsZero() && day.Before(dateOnly(c.Since)) {
		return false, nil
	}
	if !c.Before.IsZero() && !day.Before(dateOnly(c.Before)) {
		return false, nil
	}
	if c.Larger > 0 && m.Size <= c.Larger {
		return false, nil
	}
	if c.Smaller > 0 && m.Size >= c.Smaller {
		return false, nil
	}
	for _, f := range c.Flag {
		if !hasFlag(m.Flags, string(f)) {
			return false, nil
		}
	}
	for _, f := range c.NotFlag {
		if hasFlag(m.Flags, string(f)) {
			return false, nil
		}
	}
	md := e.metas[m.MessageID]
	if !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
		h := parseMailHeader(md.header)
		sent, err := h.Date()
		if err != nil {
			return false, nil
		}
		d := time.Date(sent.Year(), sent.Month(), sent.Day(), 0, 0, 0, 0, time.UTC)
		if !c.SentSince.IsZero() && d.Before(dateOnly(c.SentSince)) {
			return false, nil
		}
		if !c.SentBefore.IsZero() && !d.Before(dateOnly(c.SentBefore)) {
			return false, nil
		}
	}
	for _, hf := range c.Header {
		if !headerMatch(md.headerFields(), hf.Key, hf.Value) {
			return false, nil
		}
	}
	for _, text := range c.Text {
		if headerMatch(md.headerFields(), "", text) {
			continue
		}
		ok, err := e.bodyContains(m, md, text)
		if err != nil || !ok {
			return false, err
		}
	}
	for _, text := range c.Body {
		ok, err := e.bodyContains(m, md, text)
		if err != nil || !ok {
			return false, err
		}
	}
	for i := range c.Not {
		ok, err := e.match(&c.Not[i], r, m)
		if err != nil || ok {
			return false, err
		}
	}
	for _, or := range c.Or {
		a, err := e.match(&or[0], r, m)
		if err != nil {
			return false, err
		}
		if !a {
			b, err := e.match(&or[1], r, m)
			if err != nil || !b {
				return false, err
			}
		}
	}
	return true, nil
}

func dateOnly(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

var wordDecoder = &mime.WordDecoder{CharsetReader: charset.Reader}

// headerMatch reports whether a field named key (any field when key is "") contains value,
// decoded (RFC 2047) and compared case-insensitively; an empty value matches any field with
// that name (RFC 9051 6.4.4).
func headerMatch(fields headerFields, key, value string) bool {
	needle := strings.ToLower(value)
	for _, f := range fields {
		if key != "" && !strings.EqualFold(f.name, key) {
			continue
		}
		if needle == "" {
			return true
		}
		raw := f.value()
		if strings.Contains(strings.ToLower(raw), needle) {
			return true
		}
		if dec, err := wordDecoder.DecodeHeader(raw); err == nil && strings.Contains(strings.ToLower(dec), needle) {
			return true
		}
	}
	return false
}

// bodyContains searches the text parts of a message, decoded, for text.
func (e *searchEval) bodyContains(m *store.MessageInfo, md *meta, text string) (bool, error) {
	r, _, err := e.s.srv.Store.OpenMessage(e.s.ctx, m.MessageID)
	if err != nil {
		return false, err
	}
	defer r.Close()
	needle := bytes.ToLower([]byte(text))
	var walk func(p *part) (bool, error)
	walk = func(p *part) (bool, error) {
		if p.isMultipart() && len(p.Children) > 0 {
			for _, c := range p.Children {
				if ok, err := walk(c); ok || err != nil {
					return ok, err
				}
			}
			return false, nil
		}
		if p.isMessage() && p.Message != nil {
			hdr := make([]byte, min(p.Message.BodyStart-p.Message.HdrStart, maxHeaderBytes))
			r.ReadAt(hdr, p.Message.HdrStart)
			if headerMatch(parseHeaderFields(hdr), "", text) {
				return true, nil
			}
			return walk(p.Message)
		}
		if p.Type != "text" {
			return false, nil
		}
		return containsFold(decodedPart(r, p), needle)
	}
	return walk(md.structure())
}

// decodedPart returns a part's content with transfer encoding and charset removed.
func decodedPart(r io.ReaderAt, p *part) io.Reader {
	var rd io.Reader = io.NewSectionReader(r, p.BodyStart, p.BodyEnd-p.BodyStart)
	switch p.Encoding {
	case "base64":
		rd = base64.NewDecoder(base64.StdEncoding, rd)
	case "quoted-printable":
		rd = quotedprintable.NewReader(rd)
	}
	if cs := strings.ToLower(p.Params["charset"]); cs != "" && cs != "utf-8" && cs != "us-ascii" {
		if cr, err := charset.Reader(cs, rd); err == nil {
			rd = cr
		}
	}
	return rd
}

// containsFold searches a stream for needle (lower case), case-insensitively, in chunks
// that overlap by the needle's length: memory stays bounded whatever the part's size.
func containsFold(r io.Reader, needle []byte) (bool, error) {
	if len(needle) == 0 {
		return true, nil
	}
	br := bufio.NewReaderSize(r, 64<<10)
	buf := make([]byte, 64<<10)
	var carry []byte
	for {
		n, err := br.Read(buf)
		if n > 0 {
			data := append(carry, buf[:n]...)
			if bytes.Contains(bytes.ToLower(data), needle) {
				return true, nil
			}
			keep := min(len(data), len(needle)+utf8.UTFMax)
			carry = append([]byte(nil), data[len(data)-keep:]...)
		}
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, nil // undecodable content does not match
		}
	}
}
