package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Mailbox is one mailbox of an account.
type Mailbox struct {
	ID, AccountID int64
	Name          string
	SpecialUse    string // RFC 6154 attribute such as `\Sent`, or ""
	UIDValidity   uint32
	UIDNext       uint32
	HighestModSeq uint64
	Subscribed    bool
	Messages      int
}

// MessageInfo is one entry of a mailbox.
type MessageInfo struct {
	UID          uint32
	MessageID    string
	Size         int64
	Flags        []string // standard case, e.g. `\Seen`; nil when none
	ModSeq       uint64
	InternalDate time.Time
}

// ListMailboxes returns an account's mailboxes, INBOX first, then by name.
// An unknown account has no mailboxes.
func (s *Store) ListMailboxes(ctx context.Context, accountID int64) ([]Mailbox, error) {
	rows, err := s.rdb(ctx).QueryContext(ctx, `
		SELECT m.id, m.account_id, m.name, m.special_use, m.uidvalidity, m.uidnext, m.highestmodseq, m.subscribed,
			(SELECT COUNT(*) FROM mailbox_messages mm WHERE mm.mailbox_id = m.id)
		FROM mailboxes m WHERE m.account_id = ?
		ORDER BY CASE WHEN m.name = 'INBOX' THEN 0 ELSE 1 END, m.name`, accountID)
	if err != nil {
		return nil, fmt.Errorf("list mailboxes of account %d: %w", accountID, err)
	}
	defer rows.Close()
	var ms []Mailbox
	for rows.Next() {
		var m Mailbox
		var uidValidity, uidNext, modseq, subscribed int64
		if err := rows.Scan(&m.ID, &m.AccountID, &m.Name, &m.SpecialUse, &uidValidity, &uidNext, &modseq, &subscribed, &m.Messages); err != nil {
			return nil, fmt.Errorf("list mailboxes of account %d: %w", accountID, err)
		}
		m.UIDValidity, m.UIDNext, m.HighestModSeq = uint32(uidValidity), uint32(uidNext), uint64(modseq)
		m.Subscribed = subscribed != 0
		ms = append(ms, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list mailboxes of account %d: %w", accountID, err)
	}
	return ms, nil
}

// ListMessages returns the entries of an account's mailbox ordered by UID;
// ErrNotFound if there is no such mailbox.
func (s *Store) ListMessages(ctx context.Context, accountID int64, mailbox string) ([]MessageInfo, error) {
	var mboxID int64
	err := s.rdb(ctx).QueryRowContext(ctx, `SELECT id FROM mailboxes WHERE account_id = ? AND name = ?`, accountID, mailbox).Scan(&mboxID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("mailbox %q of account %d: %w", mailbox, accountID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("mailbox %q of account %d: %w", mailbox, accountID, err)
	}
	rows, err := s.rdb(ctx).QueryContext(ctx, `
		SELECT mm.uid, mm.message_id, m.size, mm.flags, mm.modseq, mm.internal_date
		FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id
		WHERE mm.mailbox_id = ? ORDER BY mm.uid`, mboxID)
	if err != nil {
		return nil, fmt.Errorf("list messages of mailbox %q of account %d: %w", mailbox, accountID, err)
	}
	defer rows.Close()
	var ms []MessageInfo
	for rows.Next() {
		var m MessageInfo
		var uid, modseq, date int64
		var flags string
		if err := rows.Scan(&uid, &m.MessageID, &m.Size, &flags, &modseq, &date); err != nil {
			return nil, fmt.Errorf("list messages of mailbox %q of account %d: %w", mailbox, accountID, err)
		}
		m.UID, m.ModSeq, m.InternalDate = uint32(uid), uint64(modseq), fromUnix(date)
		m.Flags = strings.Fields(flags)
		if len(m.Flags) == 0 {
			m.Flags = nil
		}
		ms = append(ms, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list messages of mailbox %q of account %d: %w", mailbox, accountID, err)
	}
	return ms, nil
}

// QueueLen returns the number of queue rows (remote recipients not yet done).
func (s *Store) QueueLen(ctx context.Context) (int, error) {
	var n int
	if err := s.rdb(ctx).QueryRowContext(ctx, `SELECT COUNT(*) FROM queue`).Scan(&n); err != nil {
		return 0, fmt.Errorf("queue length: %w", err)
	}
	return n, nil
}
