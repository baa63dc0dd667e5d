package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// MessageMeta is the cached parse of a message (see schemaMailbox): its header block, and
// encodings of its MIME structure and ENVELOPE that only the protocol layer interprets, and
// Search, the text that SearchCandidates scans.
type MessageMeta struct {
	Header    []byte
	Structure []byte
	Envelope  []byte
	Search    []byte
}

// MetaColumns selects the cached columns MessagesWithMeta returns: reading only what a
// command needs keeps a FETCH of 10,000 envelopes from copying every header.
type MetaColumns uint8

const (
	MetaHeader MetaColumns = 1 << iota
	MetaStructure
	MetaEnvelope
	// MetaOpen: the caller will open every entry's message (Open), not only the ones
	// not parsed yet.
	MetaOpen
	// MetaEntryOnly: only the mailbox's own rows are read (Size is 0, nothing is Cached),
	// for a caller that keeps sizes and envelopes itself.
	MetaEntryOnly
)

// MessageEntry is a mailbox entry with its cached parse.
type MessageEntry struct {
	MessageInfo
	Meta   MessageMeta // only the columns asked for
	Cached bool        // false: the message has not been parsed yet, Meta is empty

	s       *Store
	rel     string // blob path, or "" when data holds the message
	data    []byte
	canOpen bool
}

// Open opens the entry's message like OpenMessage, without another query: the blob's path
// (or a small message's bytes) came with the entry. It needs MetaOpen, or any column for an
// entry that is not Cached; otherwise it falls back to OpenMessage.
func (e *MessageEntry) Open(ctx context.Context) (MessageReader, error) {
	if !e.canOpen {
		r, _, err := e.s.OpenMessage(ctx, e.MessageID)
		return r, err
	}
	if e.rel == "" {
		return newMemReader(e.data), nil
	}
	f, err := os.Open(filepath.Join(e.s.dir, filepath.FromSlash(e.rel)))
	if err != nil {
		return nil, fmt.Errorf("open message %s: %w", e.MessageID, err)
	}
	return f, nil
}

// MessagesWithMeta is MessagesByUID with the cached columns cols of each message, read in the
// same query.
func (s *Store) MessagesWithMeta(ctx context.Context, mailboxID int64, uids []uint32, cols MetaColumns) ([]MessageEntry, error) {
	if len(uids) == 0 {
		return nil, nil
	}
	// Cached entries take everything from message_meta (one lookup each). A small message's
	// bytes are read along only when it will be opened: to be parsed, or because the caller
	// asked (MetaOpen). Without cached columns, message_meta is not read.
	var from, size, rel, data, cached string
	if cols == MetaEntryOnly {
		from = "mailbox_messages mm"
		size, rel, cached, data = "0", "''", "0", "NULL"
	} else if cols&^MetaOpen == 0 {
		from = "mailbox_messages mm JOIN messages m ON m.id = mm.message_id"
		size, rel, cached, data = "m.size", "m.blob_path", "0", "NULL"
		if cols&MetaOpen != 0 {
			data = "CASE WHEN m.blob_path = '' THEN m.data END"
		}
	} else {
		// messages is joined only for the entries that will be opened.
		open := "mt.message_id IS NULL"
		if cols&MetaOpen != 0 {
			open = "1"
		}
		from = "mailbox_messages mm LEFT JOIN message_meta mt ON mt.message_id = mm.message_id LEFT JOIN messages m ON " + open + " AND m.id = mm.message_id"
		size = "COALESCE(mt.size, m.size)"
		cached = "mt.message_id IS NOT NULL"
		rel = "COALESCE(m.blob_path, '')"
		data = "CASE WHEN m.blob_path = '' THEN m.data END"
	}
	sel := []string{size, cached, rel, data}
	for _, c := range []struct {
		bit  MetaColumns
		name string
	}{{MetaHeader, "header"}, {MetaStructure, "structure"}, {MetaEnvelope, "envelope"}} {
		if cols&c.bit != 0 {
			sel = append(sel, "mt."+c.name)
		} else {
			sel = append(sel, "NULL")
		}
	}
	where, args := uidCond(mailboxID, uids)
	rows, err := s.rdb(ctx).QueryContext(ctx, `
		SELECT mm.uid, mm.message_id, mm.flags, mm.modseq, mm.internal_date, `+strings.Join(sel, ", ")+`
		FROM `+from+` WHERE `+where+` ORDER BY mm.uid`, args...)
	if err != nil {
		return nil, fmt.Errorf("messages of mailbox %d: %w", mailboxID, err)
	}
	defer rows.Close()
	out := make([]MessageEntry, 0, len(uids))
	want := uidSet{uids: uids}
	fs := &flagScan{}
	for rows.Next() {
		var e MessageEntry
		var uid, modseq, date int64
		if err := rows.Scan(&uid, &e.MessageID, fs, &modseq, &date, &e.Size, &e.Cached, &e.rel, &e.data, &e.Meta.Header, &e.Meta.Structure, &e.Meta.Envelope); err != nil {
			return nil, fmt.Errorf("messages of mailbox %d: %w", mailboxID, err)
		}
		in, more := want.next(uint32(uid))
		if !more {
			break
		}
		if !in {
			continue
		}
		e.UID, e.ModSeq, e.InternalDate, e.Flags = uint32(uid), uint64(modseq), fromUnix(date), fs.flags
		e.s, e.canOpen = s, cols&MetaOpen != 0 || (cols&^MetaOpen != 0 && cols != MetaEntryOnly && !e.Cached)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("messages of mailbox %d: %w", mailboxID, err)
	}
	return out, nil
}

// uidCond selects the entries of uids (ascending) from mailbox_messages mm: a range when
// they are dense (1:*), and a list when they are sparse, so that fetching 100 messages spread
// over a large mailbox does not read every row in between.
func uidCond(mailboxID int64, uids []uint32) (string, []any) {
	lo, hi := uids[0], uids[len(uids)-1]
	if len(uids) > maxUIDList || uint64(len(uids))*2 > uint64(hi-lo)+1 {
		return "mm.mailbox_id = ? AND mm.uid BETWEEN ? AND ?", []any{mailboxID, lo, hi}
	}
	args := make([]any, 0, len(uids)+1)
	args = append(args, mailboxID)
	for _, u := range uids {
		args = append(args, u)
	}
	return "mm.mailbox_id = ? AND mm.uid IN (?" + strings.Repeat(",?", len(uids)-1) + ")", args
}

// maxUIDList bounds the parameters of one query (SQLite allows 32766).
const maxUIDList = 1000

// flagScan splits a flags column, sharing the slice of the previous row when the text is the
// same: in a large mailbox most messages have one of a few flag sets, and a FETCH FLAGS of
// every message should not allocate for each. The slices are read-only.
type flagScan struct {
	text  string
	flags []string
}

func (f *flagScan) Scan(v any) error {
	switch v := v.(type) {
	case string:
		if v != f.text {
			f.text, f.flags = v, splitFlags(v)
		}
	case []byte:
		if string(v) != f.text {
			f.text = string(v)
			f.flags = splitFlags(f.text)
		}
	case nil:
		f.text, f.flags = "", nil
	default:
		return fmt.Errorf("flags: unexpected %T", v)
	}
	return nil
}

// GetMessageMeta returns the cached parse of messages, by message id; ids without one are
// absent from the map.
func (s *Store) GetMessageMeta(ctx context.Context, ids []string) (map[string]MessageMeta, error) {
	out := make(map[string]MessageMeta, len(ids))
	const chunk = 500
	for len(ids) > 0 {
		n := min(chunk, len(ids))
		part := ids[:n]
		ids = ids[n:]
		args := make([]any, len(part))
		for i, id := range part {
			args[i] = id
		}
		rows, err := s.rdb(ctx).QueryContext(ctx, `SELECT message_id, header, structure, envelope, search FROM message_meta WHERE message_id IN (?`+strings.Repeat(",?", len(part)-1)+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("message meta: %w", err)
		}
		for rows.Next() {
			var id string
			var m MessageMeta
			if err := rows.Scan(&id, &m.Header, &m.Structure, &m.Envelope, &m.Search); err != nil {
				rows.Close()
				return nil, fmt.Errorf("message meta: %w", err)
			}
			out[id] = m
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("message meta: %w", err)
		}
	}
	return out, nil
}

// PutMessageMeta caches parses of messages; existing entries are kept (a message's bytes never
// change, so neither does its parse), except that an empty Structure (not parsed yet: the
// protocol layer may read only the header) is filled in. Messages deleted meanwhile are skipped. Every mailbox
// entry of the message gets its search text (mailbox_search).
func (s *Store) PutMessageMeta(ctx context.Context, metas map[string]MessageMeta) error {
	if len(metas) == 0 {
		return nil
	}
	// A cache need not survive a power failure: the write skips the fsync when it commits
	// alone, and otherwise shares the committer's. It is idempotent, as groupTx requires.
	err := s.groupTxLazy(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return s.putMetaTx(ctx, tx, metas)
	})
	if err != nil {
		return fmt.Errorf("cache message meta: %w", err)
	}
	for id := range metas {
		s.mc.release(id) // the indexer is done with the bytes (see msgCache)
	}
	return nil
}

// The statements of putMetaTx: the parse of a message, and the copy of its search text to
// every mailbox entry of the messages given as a JSON list of ids.
const (
	insertMetaSQL = `INSERT INTO message_meta (message_id, size, envelope, structure, search, header)
		SELECT id, size, ?, ?, ?, ? FROM messages WHERE id = ?
		ON CONFLICT (message_id) DO UPDATE SET structure = excluded.structure
		WHERE length(message_meta.structure) = 0 AND length(excluded.structure) > 0`
	insertSearchSQL = `INSERT OR IGNORE INTO mailbox_search (mailbox_id, uid, search)
		SELECT mm.mailbox_id, mm.uid, mt.search FROM json_each(?) j
		JOIN mailbox_messages mm ON mm.message_id = j.value JOIN message_meta mt ON mt.message_id = j.value`
)

// putMetaTx writes cache entries in tx (PutMessageMeta). It is also what a commit would
// call to cache a message parsed at delivery, after the message's mailbox rows. Both
// statements come from the writer's cache (wstmt): the indexer writes a batch every few
// dozen new messages, and preparing them anew each time was most of a small batch's cost.
func (s *Store) putMetaTx(ctx context.Context, tx *sql.Tx, metas map[string]MessageMeta) error {
	st, err := s.wstmt(ctx, tx, insertMetaSQL)
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(metas))
	for id, m := range metas {
		if _, err := st.ExecContext(ctx, nonNil(m.Envelope), nonNil(m.Structure), nonNil(m.Search), nonNil(m.Header), id); err != nil {
			return err
		}
		ids = append(ids, id)
	}
	// One statement gives every entry of these messages its search text.
	list, err := json.Marshal(ids)
	if err != nil {
		return err
	}
	search, err := s.wstmt(ctx, tx, insertSearchSQL)
	if err != nil {
		return err
	}
	_, err = search.ExecContext(ctx, string(list))
	return err
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// SearchCandidates returns the UIDs (ascending) of a mailbox's entries whose cached search
// text contains every needle as bytes, and of the entries not parsed yet: a superset of the
// messages a header SEARCH can match, which the caller then checks exactly. The scan runs
// inside SQLite over mailbox_search in key order, so a SEARCH HEADER over a large mailbox
// reads no rows into Go but the candidates.
func (s *Store) SearchCandidates(ctx context.Context, mailboxID int64, needles [][]byte) ([]uint32, error) {
	missing, err := s.searchMissing(ctx, mailboxID)
	if err != nil {
		return nil, fmt.Errorf("search mailbox %d: %w", mailboxID, err)
	}
	if missing > 0 {
		// Entries whose message was parsed but that have no search row yet (say, made
		// before the parse was cached): copy the message's text to them.
		err := s.groupTxLazy(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO mailbox_search (mailbox_id, uid, search)
				SELECT mm.mailbox_id, mm.uid, mt.search FROM mailbox_messages mm JOIN message_meta mt ON mt.message_id = mm.message_id
				WHERE mm.mailbox_id = ? AND NOT EXISTS (SELECT 1 FROM mailbox_search ms WHERE ms.mailbox_id = mm.mailbox_id AND ms.uid = mm.uid)`, mailboxID)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("search mailbox %d: %w", mailboxID, err)
		}
	}
	q := `SELECT uid FROM mailbox_search WHERE mailbox_id = ?`
	args := []any{mailboxID}
	for _, n := range needles {
		q += ` AND instr(search, ?) > 0`
		args = append(args, n)
	}
	if missing > 0 {
		q += ` UNION ALL SELECT mm.uid FROM mailbox_messages mm WHERE mm.mailbox_id = ?
			AND NOT EXISTS (SELECT 1 FROM mailbox_search ms WHERE ms.mailbox_id = mm.mailbox_id AND ms.uid = mm.uid)`
		args = append(args, mailboxID)
	}
	rows, err := s.rdb(ctx).QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("search mailbox %d: %w", mailboxID, err)
	}
	defer rows.Close()
	var out []uint32
	for rows.Next() {
		var uid int64
		if err := rows.Scan(&uid); err != nil {
			return nil, fmt.Errorf("search mailbox %d: %w", mailboxID, err)
		}
		out = append(out, uint32(uid))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("search mailbox %d: %w", mailboxID, err)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// searchMissing counts the entries of a mailbox without a search row. Every search row
// belongs to an entry (the foreign key), so equal counts mean none is missing, and two
// counts over the primary keys are all a fully cached mailbox costs.
func (s *Store) searchMissing(ctx context.Context, mailboxID int64) (int64, error) {
	var n int64
	err := s.rdb(ctx).QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM mailbox_messages WHERE mailbox_id = ?) - (SELECT COUNT(*) FROM mailbox_search WHERE mailbox_id = ?)`,
		mailboxID, mailboxID).Scan(&n)
	return n, err
}
