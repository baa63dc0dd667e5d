package imapserver

import (
	"errors"
	"slices"

	"github.com/emersion/go-imap/v2"
	goimapserver "github.com/emersion/go-imap/v2/imapserver"

	"yubin/internal/store"
)

// view is a session's picture of its selected mailbox: the UIDs in the order of the client's
// sequence numbers, and the MODSEQ up to which the client has been told of changes.
//
// go-imap's MailboxTracker keeps one in-memory picture per mailbox that every change must be
// pushed into; it cannot see commits made by SMTP delivery or by another process, panics on
// numbers it did not expect, and its reference backend announces MOVE's expunges with wrong
// numbers. Here every session compares its own view with the store after each command (one
// primary-key read when nothing changed, RFC 7162-style range reads otherwise), so an EXPUNGE
// always carries the number the client itself would give the message, and nothing is shared
// between sessions but the store.
type view struct {
	mbox     store.Mailbox
	readOnly bool
	uids     []uint32        // uids[seq-1]; ascending
	gone     map[uint32]bool // expunged in the store, not yet announced to the client
	maxUID   uint32          // highest UID the client knows of: newer UIDs are new messages
	modseq   uint64          // the client has been told of every change up to here
	own      map[uint64]bool // modseqs of this session's own flag changes, already answered
	saved    []uint32        // the result of the last SEARCH RETURN (SAVE), RFC 5182
	notes    <-chan struct{}
	cancel   func()
}

// announceGone sends an EXPUNGE for every message of v.gone, highest sequence number first,
// so that each number is right when the client applies it (RFC 9051 7.5.1), and then drops
// them from the view in one pass.
func (v *view) announceGone(w interface{ WriteExpunge(seqNum uint32) error }) error {
	if len(v.gone) == 0 {
		return nil
	}
	for i := len(v.uids) - 1; i >= 0; i-- {
		if v.gone[v.uids[i]] {
			if err := w.WriteExpunge(uint32(i + 1)); err != nil {
				return err
			}
		}
	}
	v.uids = slices.DeleteFunc(v.uids, func(uid uint32) bool { return v.gone[uid] })
	clear(v.gone)
	return nil
}

var systemFlagList = []imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft}

// Select implements SELECT and EXAMINE (RFC 9051 6.3.2, 6.3.3).
func (s *session) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	s.unselect()
	n, err := mailboxName(name)
	if err != nil {
		return nil, err
	}
	// Subscribe first: a change committed after the snapshot always wakes IDLE.
	notes, cancel := s.srv.Store.Subscribe(s.account.ID)
	snap, err := s.srv.snapshot(s.ctx, s.account.ID, n)
	if err != nil {
		cancel()
		if errors.Is(err, store.ErrNotFound) {
			return nil, s.notFound(n)
		}
		return nil, s.internal("select", err)
	}
	v := &view{
		mbox:     snap.Mailbox,
		readOnly: options != nil && options.ReadOnly,
		uids:     snap.UIDs,
		gone:     map[uint32]bool{},
		maxUID:   snap.UIDNext - 1,
		modseq:   snap.HighestModSeq,
		own:      map[uint64]bool{},
		notes:    notes,
		cancel:   cancel,
	}
	if len(v.uids) > 0 {
		v.maxUID = max(v.maxUID, v.uids[len(v.uids)-1])
	}
	s.sel = v
	data := &imap.SelectData{
		Flags:             systemFlagList,
		PermanentFlags:    append(slices.Clone(systemFlagList), imap.FlagWildcard),
		NumMessages:       uint32(len(v.uids)),
		FirstUnseenSeqNum: snap.FirstUnseen,
		UIDNext:           imap.UID(snap.UIDNext),
		UIDValidity:       snap.UIDValidity,
	}
	if v.readOnly {
		data.PermanentFlags = []imap.Flag{}
	}
	if s.conn.EnabledCaps().Has(imap.CapIMAP4rev2) {
		// RFC 9051 6.3.2: an IMAP4rev2 SELECT returns the mailbox's LIST data.
		attrs := []imap.MailboxAttr{}
		if snap.SpecialUse != "" {
			attrs = append(attrs, imap.MailboxAttr(snap.SpecialUse))
		}
		data.List = &imap.ListData{Attrs: attrs, Delim: '/', Mailbox: n}
	}
	return data, nil
}

// Unselect implements UNSELECT and the end of CLOSE.
func (s *session) Unselect() error {
	s.unselect()
	return nil
}

func (s *session) unselect() {
	if s.sel != nil {
		s.sel.cancel()
		s.sel = nil
	}
}

// Poll is called by the library after each command: it announces what other sessions and
// deliveries changed. allowExpunge is false after FETCH, STORE and SEARCH, when RFC 9051
// 7.5.1 forbids EXPUNGE responses; the expunged messages then stay in the view (as gone)
// until a later command.
func (s *session) Poll(w *goimapserver.UpdateWriter, allowExpunge bool) error {
	if s.sel == nil {
		return nil
	}
	return s.update(w, allowExpunge)
}

// Idle implements IDLE (RFC 2177): it first announces what changed since the last command
// (go-imap's tracker drops what arrives between DONE and the next IDLE, upstream #767),
// then waits for the store's notifications.
func (s *session) Idle(w *goimapserver.UpdateWriter, stop <-chan struct{}) error {
	if s.sel == nil {
		select {
		case <-stop:
		case <-s.ctx.Done():
		}
		return nil
	}
	if err := s.update(w, true); err != nil {
		return err
	}
	notes := s.sel.notes
	for {
		select {
		case <-stop:
			return nil
		case <-s.ctx.Done():
			return nil
		case _, ok := <-notes:
			if !ok {
				notes = nil
				continue
			}
			if err := s.update(w, true); err != nil {
				return err
			}
		}
	}
}

var errMailboxGone = errors.New("selected mailbox was deleted")

// update brings the client's view up to date with the store and writes the differences:
// EXPUNGE (in descending sequence order, so each number is valid when sent), FETCH FLAGS for
// messages others re-flagged, then EXISTS for new messages.
func (s *session) update(w *goimapserver.UpdateWriter, allowExpunge bool) error {
	v := s.sel
	ch, err := s.srv.Store.ChangesSince(s.ctx, v.mbox.ID, v.modseq)
	if errors.Is(err, store.ErrNotFound) {
		s.conn.Bye("Selected mailbox was deleted")
		return errMailboxGone
	}
	if err != nil {
		s.log.Warn("imap: reading mailbox changes failed", "err", err)
		return nil
	}
	for _, uid := range ch.Expunged {
		if uid <= v.maxUID && v.seqOf(uid) > 0 {
			v.gone[uid] = true
		}
	}
	if allowExpunge {
		if err := v.announceGone(w); err != nil {
			return err
		}
	}
	added := false
	for _, m := range ch.Changed {
		if m.UID > v.maxUID {
			v.uids = append(v.uids, m.UID)
			v.maxUID = m.UID
			added = true
			continue
		}
		if v.own[m.ModSeq] || v.gone[m.UID] {
			continue
		}
		if seq := v.seqOf(m.UID); seq > 0 {
			if err := w.WriteMessageFlags(seq, imap.UID(m.UID), toFlags(m.Flags)); err != nil {
				return err
			}
		}
	}
	if added {
		if err := w.WriteNumMessages(uint32(len(v.uids))); err != nil {
			return err
		}
	}
	v.modseq = max(v.modseq, ch.HighestModSeq)
	clear(v.own)
	return nil
}

func toFlags(fs []string) []imap.Flag {
	out := make([]imap.Flag, len(fs))
	for i, f := range fs {
		out[i] = imap.Flag(store.CanonicalFlag(f))
	}
	return out
}

// seqOf returns the sequence number of a UID in the view, or 0.
func (v *view) seqOf(uid uint32) uint32 {
	i, ok := slices.BinarySearch(v.uids, uid)
	if !ok {
		return 0
	}
	return uint32(i + 1)
}

// msgRef is one message a command works on.
type msgRef struct {
	seq uint32
	uid uint32
}

// resolve turns a sequence or UID set into the messages of the view it names, in sequence
// order, without duplicates and without messages already expunged. "*" is the last message;
// RFC 9051 6.4.8: a UID range "n:*" always includes the last message, even when n is above
// every UID.
func (v *view) resolve(set imap.NumSet) []msgRef {
	n := uint32(len(v.uids))
	var seqs []uint32
	if imap.IsSearchRes(set) {
		// "$": the UIDs saved by SEARCH RETURN (SAVE) that are still there.
		for _, uid := range v.saved {
			if q := v.seqOf(uid); q > 0 {
				seqs = append(seqs, q)
			}
		}
		set = nil
	}
	switch set := set.(type) {
	case imap.SeqSet:
		for _, r := range set {
			start, stop := rangeBounds(r.Start, r.Stop, n)
			start = max(start, 1)
			stop = min(stop, n)
			for q := start; q <= stop && q != 0; q++ {
				seqs = append(seqs, q)
			}
		}
	case imap.UIDSet:
		var last uint32
		if n > 0 {
			last = v.uids[n-1]
		}
		for _, r := range set {
			start, stop := rangeBounds(uint32(r.Start), uint32(r.Stop), last)
			i, _ := slices.BinarySearch(v.uids, start)
			for ; i < len(v.uids) && v.uids[i] <= stop; i++ {
				seqs = append(seqs, uint32(i+1))
			}
		}
	}
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)
	out := make([]msgRef, 0, len(seqs))
	for _, q := range seqs {
		uid := v.uids[q-1]
		if !v.gone[uid] {
			out = append(out, msgRef{seq: q, uid: uid})
		}
	}
	return out
}

func refUIDs(refs []msgRef) []uint32 {
	uids := make([]uint32, len(refs))
	for i, r := range refs {
		uids[i] = r.uid
	}
	return uids
}

func (s *session) readOnlyError() error {
	return no(imap.ResponseCodeCannot, "Mailbox is read-only (EXAMINE)")
}

// rangeBounds resolves a range of a sequence set: 0 stands for "*" (star, the largest
// number in use), and n:m is the same as m:n (RFC 9051 9, seq-range).
func rangeBounds(start, stop, star uint32) (uint32, uint32) {
	if start == 0 {
		start = star
	}
	if stop == 0 {
		stop = star
	}
	return min(start, stop), max(start, stop)
}
