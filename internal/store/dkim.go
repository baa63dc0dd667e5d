package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// DKIM signing keys, per domain and selector. The private key is PEM (PKCS#8) in the
// database, so the data directory stays the whole state; protect it like the key itself.
const schemaDKIM = `
CREATE TABLE dkim_keys (
	domain      TEXT NOT NULL REFERENCES domains (name),
	selector    TEXT NOT NULL,
	algorithm   TEXT NOT NULL,
	private_pem TEXT NOT NULL,
	created     INTEGER NOT NULL,
	PRIMARY KEY (domain, selector)
);
`

// DKIMKey is one signing key.
type DKIMKey struct {
	Domain, Selector string
	Algorithm        string // "ed25519" or "rsa"
	PrivatePEM       string
	Created          time.Time
}

// AddDKIMKey stores a key; ErrExists when the selector is taken, ErrNotFound for an unknown
// domain.
func (s *Store) AddDKIMKey(ctx context.Context, k DKIMKey) error {
	domain := key(k.Domain)
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM domains WHERE name = ?`, domain).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM dkim_keys WHERE domain = ? AND selector = ?`, domain, k.Selector).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return ErrExists
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO dkim_keys (domain, selector, algorithm, private_pem, created) VALUES (?, ?, ?, ?, ?)`,
			domain, k.Selector, k.Algorithm, k.PrivatePEM, s.now().Unix())
		return err
	})
	if err != nil {
		return fmt.Errorf("add DKIM key %s for %s: %w", k.Selector, domain, err)
	}
	return nil
}

// DKIMKeys lists the keys of a domain ("" = every domain), by domain and selector.
func (s *Store) DKIMKeys(ctx context.Context, domain string) ([]DKIMKey, error) {
	rows, err := s.rdb(ctx).QueryContext(ctx, `SELECT domain, selector, algorithm, private_pem, created FROM dkim_keys
		WHERE ? = '' OR domain = ? ORDER BY domain, selector`, key(domain), key(domain))
	if err != nil {
		return nil, fmt.Errorf("DKIM keys of %s: %w", domain, err)
	}
	defer rows.Close()
	var out []DKIMKey
	for rows.Next() {
		var k DKIMKey
		var created int64
		if err := rows.Scan(&k.Domain, &k.Selector, &k.Algorithm, &k.PrivatePEM, &created); err != nil {
			return nil, err
		}
		k.Created = time.Unix(created, 0).UTC()
		out = append(out, k)
	}
	return out, rows.Err()
}

// RemoveDKIMKey deletes a key; ErrNotFound when there is none.
func (s *Store) RemoveDKIMKey(ctx context.Context, domain, selector string) error {
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		return mustAffect(tx.ExecContext(ctx, `DELETE FROM dkim_keys WHERE domain = ? AND selector = ?`, key(domain), selector))
	})
	if err != nil {
		return fmt.Errorf("remove DKIM key %s of %s: %w", selector, domain, err)
	}
	return nil
}
