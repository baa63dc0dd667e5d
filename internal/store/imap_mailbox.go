package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Mailbox names are stored as the client means them (UTF-8, "/" as the hierarchy
// separator, "INBOX" in upper case); the protocol layer validates and normalizes them. The
// store only keeps names unique per account and renames a mailbox's children with it.

// ErrInvalid is returned for a request the store refuses by its nature, such as deleting INBOX.
var ErrInvalid = errors.New("invalid request")

const mailboxColumns = `id, account_id, name, special_use, uidvalidity, uidnext, highestmodseq, subscribed`

func scanMailbox(row interface{ Scan(...any) error }) (Mailbox, error) {
	var m Mailbox
	var uidValidity, uidNext, modseq, subscribed int64
	if err := row.Scan(&m.ID, &m.AccountID, &m.Name, &m.SpecialUse, &uidValidity, &uidNext, &modseq, &subscribed); err != nil {
		return Mailbox{}, err
	}
	m.UIDValidity, m.UIDNext, m.HighestModSeq = uint32(uidValidity), uint32(uidNext), uint64(modseq)
	m.Subscribed = subscribed != 0
	return m, nil
}

// GetMailbox returns an account's mailbox by exact name (Messages is not filled in), or
// ErrNotFound.
func (s *Store) GetMailbox(ctx context.Context, accountID int64, name string) (Mailbox, error) {
	m, err := scanMailbox(s.rdb(ctx).QueryRowContext(ctx, `SELECT `+mailboxColumns+` FROM mailboxes WHERE account_id = ? AND name = ?`, accountID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Mailbox{}, fmt.Errorf("mailbox %q of account %d: %w", name, accountID, ErrNotFound)
	}
	if err != nil {
		return Mailbox{}, fmt.Errorf("mailbox %q of account %d: %w", name, accountID, err)
	}
	return m, nil
}

// CreateMailbox creates a mailbox with a fresh UIDVALIDITY; ErrExists if the name is taken.
// specialUse is an RFC 6154 attribute such as `\Archive`, or "".
func (s *Store) CreateMailbox(ctx context.Context, accountID int64, name, specialUse string) (Mailbox, error) {
	var m Mailbox
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		var err error
		m, err = createMailboxTx(ctx, tx, s, accountID, name, specialUse, false)
		return err
	})
	if err != nil {
		return Mailbox{}, fmt.Errorf("create mailbox %q: %w", name, err)
	}
	s.subs.notify(accountID)
	return m, nil
}

func createMailboxTx(ctx context.Context, tx *sql.Tx, s *Store, accountID int64, name, specialUse string, subscribed bool) (Mailbox, error) {
	ok, err := exists(ctx, tx, `SELECT 1 FROM mailboxes WHERE account_id = ? AND name = ?`, accountID, name)
	if err != nil {
		return Mailbox{}, err
	}
	if ok {
		return Mailbox{}, ErrExists
	}
	if ok, err := exists(ctx, tx, `SELECT 1 FROM accounts WHERE id = ?`, accountID); err != nil {
		return Mailbox{}, err
	} else if !ok {
		return Mailbox{}, fmt.Errorf("account %d: %w", accountID, ErrNotFound)
	}
	uidValidity, err := nextUIDValidity(ctx, tx, s.now())
	if err != nil {
		return Mailbox{}, err
	}
	return scanMailbox(tx.QueryRowContext(ctx, `INSERT INTO mailboxes (account_id, name, special_use, uidvalidity, uidnext, highestmodseq, subscribed)
		VALUES (?, ?, ?, ?, 1, 1, ?) RETURNING `+mailboxColumns, accountID, name, specialUse, uidValidity, boolInt(subscribed)))
}

// DeleteMailbox deletes a mailbox and its entries (not its children, which stay as mailboxes
// of their own). INBOX cannot be deleted (ErrInvalid). The message rows stay until
// DeleteUnreferenced.
func (s *Store) DeleteMailbox(ctx context.Context, accountID int64, name string) error {
	if name == "INBOX" {
		return fmt.Errorf("delete mailbox INBOX: %w", ErrInvalid)
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		return mustAffect(tx.ExecContext(ctx, `DELETE FROM mailboxes WHERE account_id = ? AND name = ?`, accountID, name))
	})
	if err != nil {
		return fmt.Errorf("delete mailbox %q: %w", name, err)
	}
	s.subs.notify(accountID)
	return nil
}

// RenameMailbox renames a mailbox and every mailbox below it in the hierarchy (names that
// start with oldName+sep); UIDVALIDITY and UIDs stay. ErrNotFound if oldName does not exist,
// ErrExists if newName or one of the new child names is taken.
//
// RFC 9051 6.3.6: renaming INBOX moves all its messages into a new mailbox with the new name
// and leaves INBOX empty; INBOX's children are not renamed.
func (s *Store) RenameMailbox(ctx context.Context, accountID int64, oldName, newName string, sep string) error {
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		if oldName == "INBOX" {
			return s.renameInboxTx(ctx, tx, accountID, newName)
		}
		rows, err := tx.QueryContext(ctx, `SELECT id, name FROM mailboxes WHERE account_id = ? AND (name = ? OR substr(name, 1, ?) = ?)`,
			accountID, oldName, len(oldName)+len(sep), oldName+sep)
		if err != nil {
			return err
		}
		type ren struct {
			id   int64
			name string
		}
		var rs []ren
		found := false
		for rows.Next() {
			var r ren
			if err := rows.Scan(&r.id, &r.name); err != nil {
				rows.Close()
				return err
			}
			found = found || r.name == oldName
			r.name = newName + strings.TrimPrefix(r.name, oldName)
			rs = append(rs, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		for _, r := range rs {
			if ok, err := exists(ctx, tx, `SELECT 1 FROM mailboxes WHERE account_id = ? AND name = ?`, accountID, r.name); err != nil {
				return err
			} else if ok {
				return fmt.Errorf("%q: %w", r.name, ErrExists)
			}
		}
		for _, r := range rs {
			if _, err := tx.ExecContext(ctx, `UPDATE mailboxes SET name = ? WHERE id = ?`, r.name, r.id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rename mailbox %q to %q: %w", oldName, newName, err)
	}
	s.subs.notify(accountID)
	return nil
}

func (s *Store) renameInboxTx(ctx context.Context, tx *sql.Tx, accountID int64, newName string) error {
	dst, err := createMailboxTx(ctx, tx, s, accountID, newName, "", false)
	if err != nil {
		return err
	}
	var inbox int64
	if err := tx.QueryRowContext(ctx, `SELECT id FROM mailboxes WHERE account_id = ? AND name = 'INBOX'`, accountID).Scan(&inbox); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	}
	uids, err := allUIDsTx(ctx, tx, inbox)
	if err != nil {
		return err
	}
	_, _, err = copyTx(ctx, tx, inbox, uids, dst.ID, true)
	return err
}

// SetSubscribed subscribes or unsubscribes an existing mailbox; ErrNotFound if there is none.
func (s *Store) SetSubscribed(ctx context.Context, accountID int64, name string, subscribed bool) error {
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		return mustAffect(tx.ExecContext(ctx, `UPDATE mailboxes SET subscribed = ? WHERE account_id = ? AND name = ?`, boolInt(subscribed), accountID, name))
	})
	if err != nil {
		return fmt.Errorf("subscribe mailbox %q: %w", name, err)
	}
	return nil
}

// MailboxStatus is what STATUS reports about a mailbox.
type MailboxStatus struct {
	Mailbox
	Unseen  int
	Deleted int
	Size    int64 // sum of the message sizes
}

// GetMailboxStatus counts a mailbox's messages, unseen and deleted ones and their total size.
func (s *Store) GetMailboxStatus(ctx context.Context, accountID int64, name string) (MailboxStatus, error) {
	tx, err := s.rdb(ctx).BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return MailboxStatus{}, fmt.Errorf("status of mailbox %q: %w", name, err)
	}
	defer tx.Rollback()
	m, err := scanMailbox(tx.QueryRowContext(ctx, `SELECT `+mailboxColumns+` FROM mailboxes WHERE account_id = ? AND name = ?`, accountID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return MailboxStatus{}, fmt.Errorf("status of mailbox %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return MailboxStatus{}, fmt.Errorf("status of mailbox %q: %w", name, err)
	}
	st := MailboxStatus{Mailbox: m}
	// Flags are space separated and in standard case, so a padded LIKE finds a flag exactly.
	err = tx.QueryRowContext(ctx, `
		SELECT COUNT(*),
			COALESCE(SUM(CASE WHEN ' ' || mm.flags || ' ' LIKE '% \Seen %' THEN 0 ELSE 1 END), 0),
			COALESCE(SUM(CASE WHEN ' ' || mm.flags || ' ' LIKE '% \Deleted %' THEN 1 ELSE 0 END), 0),
			COALESCE(SUM(m.size), 0)
		FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id
		WHERE mm.mailbox_id = ?`, m.ID).Scan(&st.Messages, &st.Unseen, &st.Deleted, &st.Size)
	if err != nil {
		return MailboxStatus{}, fmt.Errorf("status of mailbox %q: %w", name, err)
	}
	return st, nil
}
