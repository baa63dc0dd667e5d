package imapserver

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-imap/v2"
	goimapserver "github.com/emersion/go-imap/v2/imapserver"

	"yubin/internal/store"
)

// Store implements STORE and UID STORE (RFC 9051 6.4.6). Flags are kept in standard case.
// After EXAMINE it is refused (go-imap leaves that to the backend, upstream #672).
func (s *session) Store(w *goimapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) (err error) {
	s.wire.startBatch()
	defer func() {
		if e := s.wire.endBatch(); err == nil {
			err = e
		}
	}()
	v := s.sel
	if v.readOnly {
		return s.readOnlyError()
	}
	var fs []string
	for _, f := range flags.Flags {
		switch {
		case f == imap.FlagWildcard:
			return bad("\\* is not a flag")
		case strings.EqualFold(string(f), `\Recent`):
			continue // RFC 3501: \Recent cannot be changed by STORE
		case strings.HasPrefix(string(f), `\`) && store.CanonicalFlag(string(f)) == string(f) && !isSystemFlag(string(f)):
			return bad("Unknown system flag " + string(f))
		}
		fs = append(fs, store.CanonicalFlag(string(f)))
	}
	refs := v.resolve(numSet)
	if len(refs) == 0 {
		return nil
	}
	op := map[imap.StoreFlagsOp]store.FlagOp{imap.StoreFlagsSet: store.FlagsReplace, imap.StoreFlagsAdd: store.FlagsAdd, imap.StoreFlagsDel: store.FlagsRemove}[flags.Op]
	changed, modseq, err := s.srv.Store.StoreFlags(s.ctx, v.mbox.ID, refUIDs(refs), op, fs)
	if err != nil {
		return s.internal("store", err)
	}
	if modseq != 0 {
		v.own[modseq] = true
	}
	if flags.Silent {
		return nil
	}
	// Report the resulting flags of every addressed message (RFC 9051 6.4.6), changed or not.
	newFlags := make(map[uint32][]string, len(changed))
	for _, c := range changed {
		newFlags[c.UID] = c.Flags
	}
	var unchanged []uint32
	for _, r := range refs {
		if _, ok := newFlags[r.uid]; !ok {
			unchanged = append(unchanged, r.uid)
		}
	}
	if len(unchanged) > 0 {
		infos, err := s.srv.Store.MessagesByUID(s.ctx, v.mbox.ID, unchanged)
		if err != nil {
			return s.internal("store", err)
		}
		for _, m := range infos {
			newFlags[m.UID] = m.Flags
		}
	}
	for _, r := range refs {
		f, ok := newFlags[r.uid]
		if !ok {
			continue
		}
		rw := w.CreateMessage(r.seq)
		rw.WriteUID(imap.UID(r.uid))
		rw.WriteFlags(toFlags(f))
		if err := rw.Close(); err != nil {
			return err
		}
	}
	return nil
}

func isSystemFlag(f string) bool {
	switch f {
	case `\Seen`, `\Answered`, `\Flagged`, `\Deleted`, `\Draft`:
		return true
	}
	return false
}

// Expunge implements EXPUNGE, UID EXPUNGE (RFC 4315) and the expunge of CLOSE. The EXPUNGE
// responses carry this session's sequence numbers and are written in descending order.
func (s *session) Expunge(w *goimapserver.ExpungeWriter, uids *imap.UIDSet) error {
	v := s.sel
	if v.readOnly {
		if s.wire.command() == "CLOSE" {
			return nil // RFC 9051 6.4.1: CLOSE after EXAMINE expunges nothing
		}
		return s.readOnlyError()
	}
	var only []uint32
	if uids != nil {
		only = refUIDs(v.resolve(*uids))
		if len(only) == 0 {
			return nil
		}
	}
	gone, modseq, err := s.srv.Store.Expunge(s.ctx, v.mbox.ID, only)
	if err != nil {
		return s.internal("expunge", err)
	}
	if modseq != 0 {
		v.own[modseq] = true
	}
	for _, uid := range gone {
		v.gone[uid] = true
	}
	return v.announceGone(w)
}

// destination looks up the target mailbox of COPY or MOVE (RFC 9051 6.4.7: NO [TRYCREATE]
// when it does not exist).
func (s *session) destination(name string) (store.Mailbox, error) {
	n, err := mailboxName(name)
	if err != nil {
		return store.Mailbox{}, err
	}
	m, err := s.srv.Store.GetMailbox(s.ctx, s.account.ID, n)
	if errors.Is(err, store.ErrNotFound) {
		return store.Mailbox{}, no(imap.ResponseCodeTryCreate, "No such mailbox")
	}
	if err != nil {
		return store.Mailbox{}, s.internal("copy", err)
	}
	return m, nil
}

func copyData(res store.CopyResult) *imap.CopyData {
	// A COPYUID for nothing would be an empty set, which go-imap encodes as garbage: answer a
	// plain OK instead (RFC 4315 allows omitting COPYUID).
	if len(res.SourceUIDs) == 0 {
		return nil
	}
	d := &imap.CopyData{UIDValidity: res.UIDValidity}
	for i := range res.SourceUIDs {
		d.SourceUIDs.AddNum(imap.UID(res.SourceUIDs[i]))
		d.DestUIDs.AddNum(imap.UID(res.DestUIDs[i]))
	}
	return d
}

// Copy implements COPY and UID COPY (RFC 9051 6.4.7, RFC 4315 COPYUID).
func (s *session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	v := s.sel
	dst, err := s.destination(dest)
	if err != nil {
		return nil, err
	}
	if v.readOnly && dst.ID == v.mbox.ID {
		return nil, s.readOnlyError()
	}
	refs := v.resolve(numSet)
	if len(refs) == 0 {
		return nil, nil
	}
	res, err := s.srv.Store.CopyMessages(s.ctx, v.mbox.ID, refUIDs(refs), dst.ID)
	if err != nil {
		return nil, s.internal("copy", err)
	}
	return copyData(res), nil
}

// Move implements MOVE and UID MOVE (RFC 6851): the copy and the expunge are one store
// transaction; the EXPUNGE responses use this session's sequence numbers.
func (s *session) Move(w *goimapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	v := s.sel
	if v.readOnly {
		return s.readOnlyError()
	}
	dst, err := s.destination(dest)
	if err != nil {
		return err
	}
	if dst.ID == v.mbox.ID {
		return no(imap.ResponseCodeCannot, "Cannot move into the same mailbox")
	}
	refs := v.resolve(numSet)
	if len(refs) == 0 {
		return nil
	}
	res, err := s.srv.Store.MoveMessages(s.ctx, v.mbox.ID, refUIDs(refs), dst.ID)
	if err != nil {
		return s.internal("move", err)
	}
	if len(res.SourceUIDs) == 0 {
		return nil
	}
	if err := w.WriteCopyData(copyData(res)); err != nil {
		return err
	}
	for _, uid := range res.SourceUIDs {
		v.gone[uid] = true
	}
	return v.announceGone(w)
}

// Append implements APPEND (RFC 9051 6.3.12, UIDPLUS APPENDUID). The message is streamed
// into a blob, bare LF line ends become CRLF, and it is stored durably before OK. The
// literal must be read to its announced size: go-imap takes a connection that ends inside
// the literal for the end of the message (upstream #650), which would store a truncated
// message as complete.
func (s *session) Append(name string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	n, err := mailboxName(name)
	if err != nil {
		return nil, err
	}
	m, err := s.srv.Store.GetMailbox(s.ctx, s.account.ID, n)
	if errors.Is(err, store.ErrNotFound) {
		return nil, no(imap.ResponseCodeTryCreate, "No such mailbox")
	}
	if err != nil {
		return nil, s.internal("append", err)
	}
	var flags []string
	for _, f := range options.Flags {
		if f == imap.FlagWildcard || strings.EqualFold(string(f), `\Recent`) {
			continue
		}
		flags = append(flags, store.CanonicalFlag(string(f)))
	}
	blob, err := s.srv.Store.NewBlob()
	if err != nil {
		return nil, s.internal("append", err)
	}
	defer blob.Abort()
	cr := &countingReader{r: r}
	if err := copyCRLF(blob, cr); err != nil {
		if cr.n != r.Size() {
			return nil, truncated(cr.n, r.Size())
		}
		return nil, s.internal("append", err)
	}
	if cr.n != r.Size() {
		return nil, truncated(cr.n, r.Size())
	}
	if cr.n == 0 {
		return nil, bad("Empty message")
	}
	res, err := s.srv.Store.AppendMessage(s.ctx, m.ID, blob, flags, options.Time)
	if err != nil {
		return nil, s.internal("append", err)
	}
	s.log.Info("imap append", "mailbox", n, "msgid", res.MessageID, "uid", res.UID, "size", cr.n)
	return &imap.AppendData{UID: imap.UID(res.UID), UIDValidity: res.UIDValidity}, nil
}

func truncated(got, want int64) error {
	return bad(fmt.Sprintf("Message literal ended after %d of %d bytes", got, want))
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// copyCRLF copies r to w, turning a bare LF into CRLF (RFC 9051 2.2: lines end with CRLF).
func copyCRLF(w io.Writer, r io.Reader) error {
	br := bufio.NewReaderSize(r, 32<<10)
	bw := bufio.NewWriterSize(w, 32<<10)
	var prev byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if chunk[len(chunk)-1] == '\n' {
				before := prev
				if len(chunk) >= 2 {
					before = chunk[len(chunk)-2]
				}
				if before != '\r' {
					bw.Write(chunk[:len(chunk)-1])
					bw.WriteString("\r\n")
				} else {
					bw.Write(chunk)
				}
			} else {
				bw.Write(chunk)
			}
			prev = chunk[len(chunk)-1]
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err == io.EOF {
			return bw.Flush()
		}
		if err != nil {
			bw.Flush()
			return err
		}
	}
}
