package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Flags are stored space separated. System flags are kept in their standard case (RFC 9051
// 2.3.2: `\Seen`, never `\seen`; mbsync drops flags it does not recognize), keywords as first
// given; both compare case-insensitively, so one flag is never stored twice.

var systemFlags = []string{`\Seen`, `\Answered`, `\Flagged`, `\Deleted`, `\Draft`}

// CanonicalFlag returns a system flag in its standard case and a keyword unchanged.
func CanonicalFlag(f string) string {
	for _, sf := range systemFlags {
		if strings.EqualFold(f, sf) {
			return sf
		}
	}
	return f
}

// normalizeFlags canonicalizes, removes duplicates (case-insensitively) and orders flags:
// system flags in their usual order, then keywords in the order given.
func normalizeFlags(in []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, sf := range systemFlags {
		for _, f := range in {
			if strings.EqualFold(f, sf) && !seen[strings.ToLower(sf)] {
				seen[strings.ToLower(sf)] = true
				out = append(out, sf)
			}
		}
	}
	for _, f := range in {
		k := strings.ToLower(f)
		if f == "" || strings.HasPrefix(f, `\`) || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, f)
	}
	return out
}

func hasFlag(flags []string, f string) bool {
	return slices.ContainsFunc(flags, func(g string) bool { return strings.EqualFold(f, g) })
}

func joinFlags(flags []string) string { return strings.Join(flags, " ") }

func splitFlags(s string) []string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return nil
	}
	return f
}

// FlagOp says how StoreFlags combines the given flags with a message's flags.
type FlagOp int

const (
	FlagsReplace FlagOp = iota
	FlagsAdd
	FlagsRemove
)

// MailboxSnapshot is a consistent view of a mailbox taken in one read transaction.
type MailboxSnapshot struct {
	Mailbox
	UIDs        []uint32 // ascending
	FirstUnseen uint32   // sequence number of the first message without \Seen, 0 if none
}

// SnapshotMailbox returns a mailbox and the UIDs of its messages, as SELECT needs them. It
// reads only the (mailbox_id, uid) key: one query for every UID, and one range lookup from the
// mailbox's unseen_low mark for the first message without \Seen.
func (s *Store) SnapshotMailbox(ctx context.Context, accountID int64, name string) (MailboxSnapshot, error) {
	tx, err := s.rdb(ctx).BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return MailboxSnapshot{}, fmt.Errorf("snapshot mailbox %q: %w", name, err)
	}
	defer tx.Rollback()
	m, err := scanMailbox(tx.QueryRowContext(ctx, `SELECT `+mailboxColumns+` FROM mailboxes WHERE account_id = ? AND name = ?`, accountID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return MailboxSnapshot{}, fmt.Errorf("snapshot mailbox %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return MailboxSnapshot{}, fmt.Errorf("snapshot mailbox %q: %w", name, err)
	}
	snap := MailboxSnapshot{Mailbox: m}
	if snap.UIDs, err = uidsTx(ctx, tx, m.ID); err != nil {
		return MailboxSnapshot{}, fmt.Errorf("snapshot mailbox %q: %w", name, err)
	}
	var unseen int64
	err = tx.QueryRowContext(ctx, firstUnseenQuery, m.ID).Scan(&unseen)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return MailboxSnapshot{}, fmt.Errorf("snapshot mailbox %q: %w", name, err)
	default:
		if i, ok := slices.BinarySearch(snap.UIDs, uint32(unseen)); ok {
			snap.FirstUnseen = uint32(i + 1)
		}
	}
	snap.Messages = len(snap.UIDs)
	return snap, nil
}

// FirstUnseen returns the UID of the first entry without \Seen, or 0.
func (s *Store) FirstUnseen(ctx context.Context, mailboxID int64) (uint32, error) {
	var uid int64
	err := s.rdb(ctx).QueryRowContext(ctx, firstUnseenQuery, mailboxID).Scan(&uid)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("first unseen in mailbox %d: %w", mailboxID, err)
	}
	return uint32(uid), nil
}

// firstUnseenQuery walks the mailbox's entries in UID order from its unseen_low mark, below
// which every entry has \Seen. The writers keep the mark on the first unseen entry (see
// unseenLowSQL), so the walk usually stops at its first row.
const firstUnseenQuery = `SELECT uid FROM mailbox_messages WHERE mailbox_id = ?1 AND uid >= (SELECT unseen_low FROM mailboxes WHERE id = ?1) AND ` + unseenCond + ` ORDER BY uid LIMIT 1`

// unseenCond is true for an entry without \Seen. Flags are stored in standard case and a
// keyword cannot contain a backslash, so `\Seen` appears in flags only as the flag itself.
const unseenCond = `instr(flags, '\Seen') = 0`

// unseenLowSQL moves a mailbox's unseen_low mark onto its first entry without \Seen (uidnext
// when there is none), looking from the lower of the mark and ?2.
//
// The mark is what a partial index of the unseen entries was for, without its cost: that
// index was one more B-tree page written by every delivery, about a tenth of a one-message
// commit. A new message needs no change to the mark, since its UID is at least uidnext, which
// is never below the mark. Every other change to a mailbox's entries runs this statement in
// its transaction: ?2 is the lowest UID that lost \Seen (removing the flag is the only way an
// entry below the mark can become unseen), or a UID above all for the other changes. The walk
// costs one row when the mark's entry is still unseen; it is longer only after \Seen is set on
// the first unseen entry or that entry is removed, and then it steps over seen entries that
// later reads would otherwise step over each time (Dovecot keeps a similar low-water mark in
// its index header).
const unseenLowSQL = `UPDATE mailboxes SET unseen_low = coalesce((SELECT uid FROM mailbox_messages
	WHERE mailbox_id = ?1 AND uid >= min(?2, mailboxes.unseen_low) AND ` + unseenCond + ` ORDER BY uid LIMIT 1), uidnext)
	WHERE id = ?1`

// noLowerUID is unseenLowSQL's ?2 when no entry lost \Seen.
const noLowerUID = int64(1) << 32

func advanceUnseenTx(ctx context.Context, tx *sql.Tx, mailboxID int64, lost int64) error {
	_, err := tx.ExecContext(ctx, unseenLowSQL, mailboxID, lost)
	return err
}

// uidsTx returns the UIDs of a mailbox, ascending. SQLite joins them into one text value from
// the covering (mailbox_id, uid) index, which costs far less than a row per message through
// database/sql.
func uidsTx(ctx context.Context, tx *sql.Tx, mailboxID int64) ([]uint32, error) {
	var n int64
	var list sql.NullString
	err := tx.QueryRowContext(ctx, `SELECT COUNT(*), group_concat(uid, ',') FROM (SELECT uid FROM mailbox_messages WHERE mailbox_id = ? ORDER BY uid)`, mailboxID).Scan(&n, &list)
	if err != nil {
		return nil, err
	}
	uids := make([]uint32, 0, n)
	s := list.String
	for len(s) > 0 {
		var u uint32
		i := 0
		for ; i < len(s) && s[i] != ','; i++ {
			c := s[i]
			if c < '0' || c > '9' {
				return nil, fmt.Errorf("uid list: unexpected %q", c)
			}
			u = u*10 + uint32(c-'0')
		}
		uids = append(uids, u)
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	if int64(len(uids)) != n {
		return nil, errors.New("uid list: inconsistent")
	}
	if !slices.IsSorted(uids) { // group_concat's order is not promised
		slices.Sort(uids)
	}
	return uids, nil
}

// MailboxChanges is what happened in a mailbox after a modseq.
type MailboxChanges struct {
	HighestModSeq uint64
	Changed       []MessageInfo // new or re-flagged entries (UID, Flags, ModSeq), by UID
	Expunged      []uint32      // ascending
}

// ChangesSince returns the entries changed and expunged after modseq since, read in one
// transaction so that HighestModSeq covers exactly what is returned. ErrNotFound means the
// mailbox is gone. A session calls it after every command and in IDLE; when nothing changed
// it costs one primary-key lookup.
func (s *Store) ChangesSince(ctx context.Context, mailboxID int64, since uint64) (MailboxChanges, error) {
	var ch MailboxChanges
	tx, err := s.rdb(ctx).BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return ch, fmt.Errorf("changes of mailbox %d: %w", mailboxID, err)
	}
	defer tx.Rollback()
	var highest int64
	err = tx.QueryRowContext(ctx, `SELECT highestmodseq FROM mailboxes WHERE id = ?`, mailboxID).Scan(&highest)
	if errors.Is(err, sql.ErrNoRows) {
		return ch, fmt.Errorf("changes of mailbox %d: %w", mailboxID, ErrNotFound)
	}
	if err != nil {
		return ch, fmt.Errorf("changes of mailbox %d: %w", mailboxID, err)
	}
	ch.HighestModSeq = uint64(highest)
	if ch.HighestModSeq <= since {
		return ch, nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT uid, flags, modseq FROM mailbox_messages WHERE mailbox_id = ? AND modseq > ? ORDER BY uid`, mailboxID, int64(since))
	if err != nil {
		return ch, fmt.Errorf("changes of mailbox %d: %w", mailboxID, err)
	}
	for rows.Next() {
		var m MessageInfo
		var uid, modseq int64
		var flags string
		if err := rows.Scan(&uid, &flags, &modseq); err != nil {
			rows.Close()
			return ch, fmt.Errorf("changes of mailbox %d: %w", mailboxID, err)
		}
		m.UID, m.ModSeq, m.Flags = uint32(uid), uint64(modseq), splitFlags(flags)
		ch.Changed = append(ch.Changed, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return ch, fmt.Errorf("changes of mailbox %d: %w", mailboxID, err)
	}
	rows, err = tx.QueryContext(ctx, `SELECT uid FROM mailbox_expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid`, mailboxID, int64(since))
	if err != nil {
		return ch, fmt.Errorf("changes of mailbox %d: %w", mailboxID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var uid int64
		if err := rows.Scan(&uid); err != nil {
			return ch, fmt.Errorf("changes of mailbox %d: %w", mailboxID, err)
		}
		ch.Expunged = append(ch.Expunged, uint32(uid))
	}
	if err := rows.Err(); err != nil {
		return ch, fmt.Errorf("changes of mailbox %d: %w", mailboxID, err)
	}
	return ch, nil
}

// MessagesByUID returns the entries of a mailbox whose UIDs are in uids (ascending), with
// size and internal date, by UID. UIDs that are not there are skipped.
func (s *Store) MessagesByUID(ctx context.Context, mailboxID int64, uids []uint32) ([]MessageInfo, error) {
	if len(uids) == 0 {
		return nil, nil
	}
	where, args := uidCond(mailboxID, uids)
	rows, err := s.rdb(ctx).QueryContext(ctx, `
		SELECT mm.uid, mm.message_id, m.size, mm.flags, mm.modseq, mm.internal_date
		FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id
		WHERE `+where+` ORDER BY mm.uid`, args...)
	if err != nil {
		return nil, fmt.Errorf("messages of mailbox %d: %w", mailboxID, err)
	}
	defer rows.Close()
	out := make([]MessageInfo, 0, len(uids))
	want := uidSet{uids: uids}
	for rows.Next() {
		var m MessageInfo
		var uid, modseq, date int64
		var flags string
		if err := rows.Scan(&uid, &m.MessageID, &m.Size, &flags, &modseq, &date); err != nil {
			return nil, fmt.Errorf("messages of mailbox %d: %w", mailboxID, err)
		}
		in, more := want.next(uint32(uid))
		if !more {
			break
		}
		if !in {
			continue
		}
		m.UID, m.ModSeq, m.InternalDate, m.Flags = uint32(uid), uint64(modseq), fromUnix(date), splitFlags(flags)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("messages of mailbox %d: %w", mailboxID, err)
	}
	return out, nil
}

// bumpTx raises a mailbox's highestmodseq by one and returns its account and the new modseq.
func bumpTx(ctx context.Context, tx *sql.Tx, mailboxID int64) (accountID int64, modseq uint64, err error) {
	var m int64
	err = tx.QueryRowContext(ctx, `UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ? RETURNING account_id, highestmodseq`, mailboxID).Scan(&accountID, &m)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, fmt.Errorf("mailbox %d: %w", mailboxID, ErrNotFound)
	}
	return accountID, uint64(m), err
}

type flagRow struct {
	uid   uint32
	flags []string
}

// rowsInTx returns (uid, flags) of the entries whose UIDs are in uids (ascending), or all
// entries when uids is nil.
func rowsInTx(ctx context.Context, tx *sql.Tx, mailboxID int64, uids []uint32) ([]flagRow, error) {
	lo, hi := uint32(1), ^uint32(0)
	if uids != nil {
		if len(uids) == 0 {
			return nil, nil
		}
		lo, hi = uids[0], uids[len(uids)-1]
	}
	rows, err := tx.QueryContext(ctx, `SELECT uid, flags FROM mailbox_messages WHERE mailbox_id = ? AND uid BETWEEN ? AND ? ORDER BY uid`, mailboxID, lo, hi)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []flagRow
	want := uidSet{uids: uids}
	for rows.Next() {
		var uid int64
		var flags string
		if err := rows.Scan(&uid, &flags); err != nil {
			return nil, err
		}
		if uids != nil {
			in, more := want.next(uint32(uid))
			if !more {
				break
			}
			if !in {
				continue
			}
		}
		out = append(out, flagRow{uint32(uid), splitFlags(flags)})
	}
	return out, rows.Err()
}

func allUIDsTx(ctx context.Context, tx *sql.Tx, mailboxID int64) ([]uint32, error) {
	rs, err := rowsInTx(ctx, tx, mailboxID, nil)
	if err != nil {
		return nil, err
	}
	uids := make([]uint32, len(rs))
	for i, r := range rs {
		uids[i] = r.uid
	}
	return uids, nil
}

// StoreFlags changes the flags of the entries with the given UIDs (ascending). Only entries
// whose flags really change get the new modseq. It returns those entries (UID, Flags,
// ModSeq) and the modseq of the change (0 when nothing changed).
func (s *Store) StoreFlags(ctx context.Context, mailboxID int64, uids []uint32, op FlagOp, flags []string) ([]MessageInfo, uint64, error) {
	flags = normalizeFlags(flags)
	var changed []MessageInfo
	var accountID int64
	var modseq uint64
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		changed, modseq = nil, 0
		rs, err := rowsInTx(ctx, tx, mailboxID, uids)
		if err != nil {
			return err
		}
		seenChanged, lost := false, noLowerUID
		for _, r := range rs {
			var nf []string
			switch op {
			case FlagsReplace:
				nf = flags
			case FlagsAdd:
				nf = normalizeFlags(append(slices.Clone(r.flags), flags...))
			case FlagsRemove:
				for _, f := range r.flags {
					if !hasFlag(flags, f) {
						nf = append(nf, f)
					}
				}
			}
			nf = normalizeFlags(nf)
			if joinFlags(nf) == joinFlags(r.flags) {
				continue
			}
			if modseq == 0 {
				if accountID, modseq, err = bumpTx(ctx, tx, mailboxID); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `UPDATE mailbox_messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?`, joinFlags(nf), int64(modseq), mailboxID, r.uid); err != nil {
				return err
			}
			changed = append(changed, MessageInfo{UID: r.uid, Flags: nf, ModSeq: modseq})
			if was, is := hasFlag(r.flags, `\Seen`), hasFlag(nf, `\Seen`); was != is {
				seenChanged = true
				if was {
					lost = min(lost, int64(r.uid))
				}
			}
		}
		if seenChanged {
			return advanceUnseenTx(ctx, tx, mailboxID, lost)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("store flags in mailbox %d: %w", mailboxID, err)
	}
	if modseq != 0 {
		s.subs.notify(accountID)
	}
	return changed, modseq, nil
}

// Expunge removes the entries flagged \Deleted, only those with UIDs in uids when uids is
// not nil, leaving a tombstone with the new modseq for each. It returns the removed UIDs
// (ascending) and the modseq (0 when nothing was removed).
func (s *Store) Expunge(ctx context.Context, mailboxID int64, uids []uint32) ([]uint32, uint64, error) {
	var gone []uint32
	var accountID int64
	var modseq uint64
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		gone, modseq = nil, 0
		rs, err := rowsInTx(ctx, tx, mailboxID, uids)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if hasFlag(r.flags, `\Deleted`) {
				gone = append(gone, r.uid)
			}
		}
		if len(gone) == 0 {
			return nil
		}
		if accountID, modseq, err = bumpTx(ctx, tx, mailboxID); err != nil {
			return err
		}
		return removeTx(ctx, tx, mailboxID, gone, modseq)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("expunge mailbox %d: %w", mailboxID, err)
	}
	if modseq != 0 {
		s.subs.notify(accountID)
	}
	return gone, modseq, nil
}

func removeTx(ctx context.Context, tx *sql.Tx, mailboxID int64, uids []uint32, modseq uint64) error {
	for _, uid := range uids {
		if _, err := tx.ExecContext(ctx, `DELETE FROM mailbox_messages WHERE mailbox_id = ? AND uid = ?`, mailboxID, uid); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO mailbox_expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)
			ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq`, mailboxID, uid, int64(modseq)); err != nil {
			return err
		}
	}
	return advanceUnseenTx(ctx, tx, mailboxID, noLowerUID)
}

// CopyResult says where CopyMessages and MoveMessages put the messages. SourceUIDs and
// DestUIDs correspond one to one, ascending; both are empty when none of the UIDs existed.
type CopyResult struct {
	UIDValidity uint32 // of the destination
	SourceUIDs  []uint32
	DestUIDs    []uint32
}

// CopyMessages copies the entries with the given UIDs (ascending) into another mailbox (of
// the same account), keeping flags and internal dates; the message blobs are shared.
func (s *Store) CopyMessages(ctx context.Context, srcID int64, uids []uint32, dstID int64) (CopyResult, error) {
	return s.copyOrMove(ctx, srcID, uids, dstID, false)
}

// MoveMessages is CopyMessages followed by removing the sources, in one transaction (RFC
// 6851: a MOVE is atomic).
func (s *Store) MoveMessages(ctx context.Context, srcID int64, uids []uint32, dstID int64) (CopyResult, error) {
	return s.copyOrMove(ctx, srcID, uids, dstID, true)
}

func (s *Store) copyOrMove(ctx context.Context, srcID int64, uids []uint32, dstID int64, move bool) (CopyResult, error) {
	var res CopyResult
	var accountID int64
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		var err error
		res, accountID, err = copyTx(ctx, tx, srcID, uids, dstID, move)
		return err
	})
	if err != nil {
		return CopyResult{}, fmt.Errorf("copy from mailbox %d to %d: %w", srcID, dstID, err)
	}
	if len(res.SourceUIDs) > 0 {
		s.subs.notify(accountID)
	}
	return res, nil
}

func copyTx(ctx context.Context, tx *sql.Tx, srcID int64, uids []uint32, dstID int64, move bool) (CopyResult, int64, error) {
	var res CopyResult
	if srcID == dstID && move {
		return res, 0, fmt.Errorf("move into the same mailbox: %w", ErrInvalid)
	}
	var accountID int64
	var uidValidity int64
	err := tx.QueryRowContext(ctx, `SELECT account_id, uidvalidity FROM mailboxes WHERE id = ?`, dstID).Scan(&accountID, &uidValidity)
	if errors.Is(err, sql.ErrNoRows) {
		return res, 0, fmt.Errorf("mailbox %d: %w", dstID, ErrNotFound)
	}
	if err != nil {
		return res, 0, err
	}
	res.UIDValidity = uint32(uidValidity)
	type row struct {
		uid          uint32
		messageID    string
		flags        string
		internalDate int64
	}
	var src []row
	if len(uids) > 0 {
		rows, err := tx.QueryContext(ctx, `SELECT uid, message_id, flags, internal_date FROM mailbox_messages WHERE mailbox_id = ? AND uid BETWEEN ? AND ? ORDER BY uid`,
			srcID, uids[0], uids[len(uids)-1])
		if err != nil {
			return res, 0, err
		}
		i := 0
		for rows.Next() {
			var r row
			var uid int64
			if err := rows.Scan(&uid, &r.messageID, &r.flags, &r.internalDate); err != nil {
				rows.Close()
				return res, 0, err
			}
			r.uid = uint32(uid)
			for i < len(uids) && uids[i] < r.uid {
				i++
			}
			if i < len(uids) && uids[i] == r.uid {
				src = append(src, r)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return res, 0, err
		}
	}
	if len(src) == 0 {
		return res, accountID, nil
	}
	var first, modseq int64
	err = tx.QueryRowContext(ctx, `UPDATE mailboxes SET uidnext = uidnext + ?, highestmodseq = highestmodseq + 1 WHERE id = ? RETURNING uidnext - ?, highestmodseq`,
		len(src), dstID, len(src)).Scan(&first, &modseq)
	if err != nil {
		return res, 0, err
	}
	for i, r := range src {
		uid := uint32(first) + uint32(i)
		if _, err := tx.ExecContext(ctx, `INSERT INTO mailbox_messages (mailbox_id, uid, message_id, flags, modseq, internal_date) VALUES (?, ?, ?, ?, ?, ?)`,
			dstID, uid, r.messageID, r.flags, modseq, r.internalDate); err != nil {
			return res, 0, err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO mailbox_search (mailbox_id, uid, search) SELECT ?, ?, search FROM mailbox_search WHERE mailbox_id = ? AND uid = ?`,
			dstID, uid, srcID, r.uid); err != nil {
			return res, 0, err
		}
		res.SourceUIDs = append(res.SourceUIDs, r.uid)
		res.DestUIDs = append(res.DestUIDs, uid)
	}
	if err := advanceUnseenTx(ctx, tx, dstID, noLowerUID); err != nil {
		return res, 0, err
	}
	if move {
		_, srcModseq, err := bumpTx(ctx, tx, srcID)
		if err != nil {
			return res, 0, err
		}
		if err := removeTx(ctx, tx, srcID, res.SourceUIDs, srcModseq); err != nil {
			return res, 0, err
		}
	}
	return res, accountID, nil
}

// AppendResult is where AppendMessage stored a message.
type AppendResult struct {
	UIDValidity uint32
	UID         uint32
	MessageID   string
}

// AppendMessage makes b durable and records it as a new entry of a mailbox with the given
// flags and internal date (zero: now), for IMAP APPEND. Like Deliver it returns only once the
// message survives a crash: the blob is fsynced and renamed, its directory fsynced, and the
// rows committed. On error nothing is stored and the blob is gone; either way b is finished.
func (s *Store) AppendMessage(ctx context.Context, mailboxID int64, b *BlobWriter, flags []string, internalDate time.Time) (AppendResult, error) {
	if b == nil || b.s != s || b.done {
		return AppendResult{}, errors.New("append: blob not usable")
	}
	defer s.setLive(b.id, false)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		b.Abort()
		return AppendResult{}, fmt.Errorf("append %s: %w", b.id, ErrClosed)
	}
	s.inflight.Add(1)
	s.mu.Unlock()
	defer s.inflight.Done()

	now := s.now()
	if internalDate.IsZero() {
		internalDate = now
	}
	day := dayOf(now)
	rel, err := b.finish(day)
	if err != nil {
		return AppendResult{}, fmt.Errorf("append: %w", err)
	}
	if err := syncDir(filepath.Join(s.dir, blobsDirName, day)); err == nil {
		err = syncDir(filepath.Join(s.dir, blobsDirName))
	}
	if err != nil {
		s.removeBlob(rel)
		return AppendResult{}, fmt.Errorf("append %s: %w", b.id, err)
	}
	res := AppendResult{MessageID: b.id}
	var accountID int64
	err = s.writeTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO messages (id, blob_path, size, received_at, env_from) VALUES (?, ?, ?, ?, '')`,
			b.id, rel, b.size, unix(now)); err != nil {
			return err
		}
		var uidValidity, uid, modseq int64
		err := tx.QueryRowContext(ctx, `UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1 WHERE id = ?
			RETURNING account_id, uidvalidity, uidnext - 1, highestmodseq`, mailboxID).Scan(&accountID, &uidValidity, &uid, &modseq)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("mailbox %d: %w", mailboxID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		res.UIDValidity, res.UID = uint32(uidValidity), uint32(uid)
		if _, err := tx.ExecContext(ctx, `INSERT INTO mailbox_messages (mailbox_id, uid, message_id, flags, modseq, internal_date) VALUES (?, ?, ?, ?, ?, ?)`,
			mailboxID, uid, b.id, joinFlags(normalizeFlags(flags)), modseq, unix(internalDate)); err != nil {
			return err
		}
		return advanceUnseenTx(ctx, tx, mailboxID, noLowerUID)
	})
	if err != nil {
		s.removeBlob(rel)
		return AppendResult{}, fmt.Errorf("append %s: %w", b.id, err)
	}
	s.subs.notify(accountID)
	return res, nil
}

// RemoveMessages removes the entries with the given UIDs (ascending) whatever their flags,
// leaving tombstones like Expunge: POP3's deletions at QUIT. It returns the removed UIDs.
func (s *Store) RemoveMessages(ctx context.Context, mailboxID int64, uids []uint32) ([]uint32, error) {
	var gone []uint32
	var accountID int64
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		gone = nil
		rs, err := rowsInTx(ctx, tx, mailboxID, uids)
		if err != nil || len(rs) == 0 {
			return err
		}
		for _, r := range rs {
			gone = append(gone, r.uid)
		}
		var modseq uint64
		if accountID, modseq, err = bumpTx(ctx, tx, mailboxID); err != nil {
			return err
		}
		return removeTx(ctx, tx, mailboxID, gone, modseq)
	})
	if err != nil {
		return nil, fmt.Errorf("remove messages of mailbox %d: %w", mailboxID, err)
	}
	if len(gone) > 0 {
		s.subs.notify(accountID)
	}
	return gone, nil
}

// uidSet walks an ascending UID list beside rows read in UID order (a merge join): next
// tells whether a row's UID is in the list, and false for more once the list is used up.
type uidSet struct {
	uids []uint32
	i    int
}

func (w *uidSet) next(uid uint32) (in, more bool) {
	for w.i < len(w.uids) && w.uids[w.i] < uid {
		w.i++
	}
	if w.i == len(w.uids) {
		return false, false
	}
	return w.uids[w.i] == uid, true
}
