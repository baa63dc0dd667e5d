package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// App passwords: extra named passwords of an account, one per device, each revocable alone.
// Only their hashes are stored, like the account's own password.
const schemaAuth = `
CREATE TABLE app_passwords (
	account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	name       TEXT NOT NULL,
	hash       TEXT NOT NULL,
	created    INTEGER NOT NULL,
	PRIMARY KEY (account_id, name)
);
`

// AppPassword is one app password, without its hash.
type AppPassword struct {
	Name    string
	Created time.Time
}

// AddAppPassword adds a named app password to an account; ErrExists when the name is taken.
func (s *Store) AddAppPassword(ctx context.Context, address, name, hash string) error {
	address = key(address)
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		var id int64
		if err := tx.QueryRowContext(ctx, `SELECT id FROM accounts WHERE address = ?`, address).Scan(&id); err == sql.ErrNoRows {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM app_passwords WHERE account_id = ? AND name = ?`, id, name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return ErrExists
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO app_passwords (account_id, name, hash, created) VALUES (?, ?, ?, ?)`, id, name, hash, s.now().Unix())
		return err
	})
	if err != nil {
		return fmt.Errorf("add app password %q of %s: %w", name, address, err)
	}
	return nil
}

// ListAppPasswords lists an account's app passwords by name.
func (s *Store) ListAppPasswords(ctx context.Context, address string) ([]AppPassword, error) {
	address = key(address)
	rows, err := s.rdb(ctx).QueryContext(ctx, `SELECT p.name, p.created FROM app_passwords p JOIN accounts a ON a.id = p.account_id WHERE a.address = ? ORDER BY p.name`, address)
	if err != nil {
		return nil, fmt.Errorf("list app passwords of %s: %w", address, err)
	}
	defer rows.Close()
	var out []AppPassword
	for rows.Next() {
		var p AppPassword
		var created int64
		if err := rows.Scan(&p.Name, &created); err != nil {
			return nil, err
		}
		p.Created = time.Unix(created, 0).UTC()
		out = append(out, p)
	}
	return out, rows.Err()
}

// RemoveAppPassword revokes one app password; ErrNotFound when there is none of that name.
func (s *Store) RemoveAppPassword(ctx context.Context, address, name string) error {
	address = key(address)
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		return mustAffect(tx.ExecContext(ctx, `DELETE FROM app_passwords WHERE name = ? AND account_id = (SELECT id FROM accounts WHERE address = ?)`, name, address))
	})
	if err != nil {
		return fmt.Errorf("remove app password %q of %s: %w", name, address, err)
	}
	return nil
}

// AppPasswordHashes returns the hashes of an account's app passwords (for login).
func (s *Store) AppPasswordHashes(ctx context.Context, accountID int64) ([]string, error) {
	rows, err := s.rdb(ctx).QueryContext(ctx, `SELECT hash FROM app_passwords WHERE account_id = ?`, accountID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}
