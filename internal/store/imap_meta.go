package store

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
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
		return memReader{bytes.NewReader(e.data)}, nil
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
	// A small message's bytes are read along only when it will be opened: to be parsed, or
	// because the caller asked (MetaOpen). Without cached columns, message_meta is not read.
	sel := []string{"mt.message_id IS NOT NULL", "m.blob_path", "NULL"}
	join := "LEFT JOIN message_meta mt ON mt.message_id = mm.message_id"
	switch {
	case cols&^MetaOpen == 0:
		sel[0], join = "0", ""
		if cols&MetaOpen != 0 {
			sel[2] = "CASE WHEN m.blob_path = '' THEN m.data END"
		}
	case cols&MetaOpen != 0:
		sel[2] = "CASE WHEN m.blob_path = '' THEN m.data END"
	default:
		sel[2] = "CASE WHEN m.blob_path = '' AND mt.message_id IS NULL THEN m.data END"
	}
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
	rows, err := s.r.QueryContext(ctx, `
		SELECT mm.uid, mm.message_id, m.size, mm.flags, mm.modseq, mm.internal_date, `+strings.Join(sel, ", ")+`
		FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id `+join+`
		WHERE mm.mailbox_id = ? AND mm.uid BETWEEN ? AND ? ORDER BY mm.uid`, mailboxID, uids[0], uids[len(uids)-1])
	if err != nil {
		return nil, fmt.Errorf("messages of mailbox %d: %w", mailboxID, err)
	}
	defer rows.Close()
	out := make([]MessageEntry, 0, len(uids))
	i := 0
	fs := &flagScan{}
	for rows.Next() {
		var e MessageEntry
		var uid, modseq, date int64
		if err := rows.Scan(&uid, &e.MessageID, &e.Size, fs, &modseq, &date, &e.Cached, &e.rel, &e.data, &e.Meta.Header, &e.Meta.Structure, &e.Meta.Envelope); err != nil {
			return nil, fmt.Errorf("messages of mailbox %d: %w", mailboxID, err)
		}
		for i < len(uids) && uids[i] < uint32(uid) {
			i++
		}
		if i == len(uids) {
			break
		}
		if uids[i] != uint32(uid) {
			continue
		}
		e.UID, e.ModSeq, e.InternalDate, e.Flags = uint32(uid), uint64(modseq), fromUnix(date), fs.flags
		e.s, e.canOpen = s, cols&MetaOpen != 0 || (cols&^MetaOpen != 0 && !e.Cached)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("messages of mailbox %d: %w", mailboxID, err)
	}
	return out, nil
}

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
		rows, err := s.r.QueryContext(ctx, `SELECT message_id, header, structure, envelope, search FROM message_meta WHERE message_id IN (?`+strings.Repeat(",?", len(part)-1)+`)`, args...)
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
// change, so neither does its parse). Messages deleted meanwhile are skipped.
func (s *Store) PutMessageMeta(ctx context.Context, metas map[string]MessageMeta) error {
	if len(metas) == 0 {
		return nil
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `INSERT INTO message_meta (message_id, header, structure, envelope, search)
			SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM messages WHERE id = ?) ON CONFLICT DO NOTHING`)
		if err != nil {
			return err
		}
		defer st.Close()
		for id, m := range metas {
			if _, err := st.ExecContext(ctx, id, nonNil(m.Header), nonNil(m.Structure), nonNil(m.Envelope), nonNil(m.Search), id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cache message meta: %w", err)
	}
	return nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// SearchCandidates returns the UIDs (ascending) of a mailbox's entries whose cached Search
// text contains every needle as bytes, and of the entries not parsed yet: a superset of the
// messages a header SEARCH can match, which the caller then checks exactly. The scan runs
// inside SQLite, so a SEARCH HEADER over a large mailbox reads no rows into Go but the
// candidates.
func (s *Store) SearchCandidates(ctx context.Context, mailboxID int64, needles [][]byte) ([]uint32, error) {
	q := `SELECT mm.uid FROM mailbox_messages mm LEFT JOIN message_meta mt ON mt.message_id = mm.message_id
		WHERE mm.mailbox_id = ? AND (mt.search IS NULL OR (1`
	args := []any{mailboxID}
	for _, n := range needles {
		q += ` AND instr(mt.search, ?) > 0`
		args = append(args, n)
	}
	q += `)) ORDER BY mm.uid`
	rows, err := s.r.QueryContext(ctx, q, args...)
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
	return out, nil
}
