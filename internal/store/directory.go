package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Domain is a domain this server receives mail for. Names are lower-case.
type Domain struct {
	Name     string
	CatchAll string // address that gets mail for unknown local parts; "" for none
	Created  time.Time
}

// Account is a mailbox owner who can log in.
type Account struct {
	ID           int64
	Address      string // key form: "user@domain", lower-case
	PasswordHash string
	Disabled     bool
	Created      time.Time
}

// defaultMailboxes are created with every account (RFC 6154 special-use).
var defaultMailboxes = []struct{ name, specialUse string }{
	{"INBOX", ""},
	{"Sent", `\Sent`},
	{"Drafts", `\Drafts`},
	{"Trash", `\Trash`},
	{"Junk", `\Junk`},
	{"Archive", `\Archive`},
}

// key lower-cases an address or domain name. Callers pass the key form
// (package address normalizes); lower-casing again is cheap insurance that
// one spelling can never create two rows.
func key(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// splitAddress returns the domain of a key-form address.
func splitAddress(address string) (string, error) {
	i := strings.LastIndexByte(address, '@')
	if i <= 0 || i == len(address)-1 {
		return "", fmt.Errorf("address %q is not of the form user@domain", address)
	}
	return address[i+1:], nil
}

func exists(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, query string, args ...any) (bool, error) {
	var one int
	err := q.QueryRowContext(ctx, query, args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// directoryTx runs fn in a writer transaction that changes the directory: on success the
// lookup cache starts over and other processes are told (directoryChanged); an error is
// wrapped with what.
func (s *Store) directoryTx(ctx context.Context, what string, fn func(tx *sql.Tx) error) error {
	if err := s.writeTx(ctx, fn); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	s.directoryChanged()
	return nil
}

// AddDomain adds a domain; ErrExists if it is present.
func (s *Store) AddDomain(ctx context.Context, name string) error {
	name = key(name)
	if name == "" || strings.ContainsAny(name, "@ ") {
		return fmt.Errorf("add domain %q: invalid name", name)
	}
	return s.directoryTx(ctx, "add domain "+name, func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT 1 FROM domains WHERE name = ?`, name)
		if err != nil {
			return err
		}
		if ok {
			return ErrExists
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO domains (name, catch_all, created) VALUES (?, '', ?)`, name, unix(s.now()))
		return err
	})
}

// RemoveDomain removes a domain: ErrNotFound if absent, an error wrapping
// ErrNotEmpty while accounts or aliases of it exist.
func (s *Store) RemoveDomain(ctx context.Context, name string) error {
	name = key(name)
	return s.directoryTx(ctx, "remove domain "+name, func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT 1 FROM domains WHERE name = ?`, name)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		var accounts, aliases int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM accounts WHERE domain = ?`, name).Scan(&accounts); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(DISTINCT address) FROM aliases WHERE domain = ?`, name).Scan(&aliases); err != nil {
			return err
		}
		if accounts > 0 || aliases > 0 {
			return fmt.Errorf("%w: %d accounts and %d aliases remain", ErrNotEmpty, accounts, aliases)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM domains WHERE name = ?`, name)
		return err
	})
}

// ListDomains returns all domains ordered by name.
func (s *Store) ListDomains(ctx context.Context) ([]Domain, error) {
	rows, err := s.rdb(ctx).QueryContext(ctx, `SELECT name, catch_all, created FROM domains ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	defer rows.Close()
	var ds []Domain
	for rows.Next() {
		var d Domain
		var created int64
		if err := rows.Scan(&d.Name, &d.CatchAll, &created); err != nil {
			return nil, fmt.Errorf("list domains: %w", err)
		}
		d.Created = fromUnix(created)
		ds = append(ds, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	return ds, nil
}

// GetDomain returns one domain or ErrNotFound.
func (s *Store) getDomainDB(ctx context.Context, name string) (Domain, error) {
	name = key(name)
	d := Domain{Name: name}
	var created int64
	err := s.rdb(ctx).QueryRowContext(ctx, `SELECT catch_all, created FROM domains WHERE name = ?`, name).Scan(&d.CatchAll, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Domain{}, fmt.Errorf("domain %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return Domain{}, fmt.Errorf("domain %s: %w", name, err)
	}
	d.Created = fromUnix(created)
	return d, nil
}

// SetCatchAll sets the catch-all target of a domain; "" clears it.
func (s *Store) SetCatchAll(ctx context.Context, domain, target string) error {
	domain = key(domain)
	return s.directoryTx(ctx, "set catch-all of domain "+domain, func(tx *sql.Tx) error {
		return mustAffect(tx.ExecContext(ctx, `UPDATE domains SET catch_all = ? WHERE name = ?`, strings.TrimSpace(target), domain))
	})
}

// mustAffect turns "no row changed" into ErrNotFound.
func mustAffect(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// AddAccount creates an account and its default mailboxes (INBOX, Sent,
// Drafts, Trash, Junk, Archive, all subscribed) in one transaction. The
// domain must exist (ErrNotFound); ErrExists if the address is taken.
func (s *Store) AddAccount(ctx context.Context, address, passwordHash string) (Account, error) {
	address = key(address)
	domain, err := splitAddress(address)
	if err != nil {
		return Account{}, fmt.Errorf("add account: %w", err)
	}
	now := s.now()
	a := Account{Address: address, PasswordHash: passwordHash, Created: fromUnix(unix(now))}
	err = s.directoryTx(ctx, "add account "+address, func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT 1 FROM domains WHERE name = ?`, domain)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("domain %s: %w", domain, ErrNotFound)
		}
		if ok, err = exists(ctx, tx, `SELECT 1 FROM accounts WHERE address = ?`, address); err != nil {
			return err
		} else if ok {
			return ErrExists
		}
		err = tx.QueryRowContext(ctx, `INSERT INTO accounts (address, domain, password_hash, disabled, created) VALUES (?, ?, ?, 0, ?) RETURNING id`,
			address, domain, passwordHash, unix(now)).Scan(&a.ID)
		if err != nil {
			return err
		}
		uidValidity, err := nextUIDValidity(ctx, tx, now)
		if err != nil {
			return err
		}
		for _, m := range defaultMailboxes {
			_, err := tx.ExecContext(ctx, `INSERT INTO mailboxes (account_id, name, special_use, uidvalidity, uidnext, highestmodseq, subscribed) VALUES (?, ?, ?, ?, 1, 1, 1)`,
				a.ID, m.name, m.specialUse, uidValidity)
			if err != nil {
				return fmt.Errorf("create mailbox %s: %w", m.name, err)
			}
		}
		return nil
	})
	if err != nil {
		return Account{}, err
	}
	return a, nil
}

// nextUIDValidity returns the current Unix time, or one more than the
// largest UIDVALIDITY in use if that is later. RFC 9051 2.3.1.1: a mailbox
// name that is deleted and created again must get a new UIDVALIDITY; taking
// the maximum keeps that true even when an account is removed and added
// again within one second.
func nextUIDValidity(ctx context.Context, tx *sql.Tx, now time.Time) (uint32, error) {
	var maxV sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(uidvalidity) FROM mailboxes`).Scan(&maxV); err != nil {
		return 0, err
	}
	v := uint32(now.Unix())
	if maxV.Valid && uint32(maxV.Int64) >= v {
		v = uint32(maxV.Int64) + 1
	}
	if v == 0 { // UIDVALIDITY is a non-zero number
		v = 1
	}
	return v, nil
}

// SetPassword replaces an account's password hash.
func (s *Store) SetPassword(ctx context.Context, address, passwordHash string) error {
	address = key(address)
	return s.directoryTx(ctx, "set password of "+address, func(tx *sql.Tx) error {
		return mustAffect(tx.ExecContext(ctx, `UPDATE accounts SET password_hash = ? WHERE address = ?`, passwordHash, address))
	})
}

// SetDisabled disables or enables an account. A disabled account cannot log
// in; whether it still receives mail is the directory's decision.
func (s *Store) SetDisabled(ctx context.Context, address string, disabled bool) error {
	address = key(address)
	return s.directoryTx(ctx, "set disabled of "+address, func(tx *sql.Tx) error {
		return mustAffect(tx.ExecContext(ctx, `UPDATE accounts SET disabled = ? WHERE address = ?`, boolInt(disabled), address))
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// RemoveAccount removes an account with its mailboxes and their entries
// (ON DELETE CASCADE). Message rows and blobs stay until DeleteUnreferenced.
func (s *Store) RemoveAccount(ctx context.Context, address string) error {
	address = key(address)
	return s.directoryTx(ctx, "remove account "+address, func(tx *sql.Tx) error {
		return mustAffect(tx.ExecContext(ctx, `DELETE FROM accounts WHERE address = ?`, address))
	})
}

const accountColumns = `id, address, password_hash, disabled, created`

func scanAccount(row interface{ Scan(...any) error }) (Account, error) {
	var a Account
	var disabled, created int64
	if err := row.Scan(&a.ID, &a.Address, &a.PasswordHash, &disabled, &created); err != nil {
		return Account{}, err
	}
	a.Disabled = disabled != 0
	a.Created = fromUnix(created)
	return a, nil
}

// GetAccount returns one account by address or ErrNotFound.
func (s *Store) getAccountDB(ctx context.Context, address string) (Account, error) {
	address = key(address)
	a, err := scanAccount(s.rdb(ctx).QueryRowContext(ctx, `SELECT `+accountColumns+` FROM accounts WHERE address = ?`, address))
	if errors.Is(err, sql.ErrNoRows) {
		return Account{}, fmt.Errorf("account %s: %w", address, ErrNotFound)
	}
	if err != nil {
		return Account{}, fmt.Errorf("account %s: %w", address, err)
	}
	return a, nil
}

// ListAccounts returns the accounts of a domain ("" for all) ordered by address.
func (s *Store) ListAccounts(ctx context.Context, domain string) ([]Account, error) {
	q := `SELECT ` + accountColumns + ` FROM accounts ORDER BY address`
	var args []any
	if domain != "" {
		q = `SELECT ` + accountColumns + ` FROM accounts WHERE domain = ? ORDER BY address`
		args = append(args, key(domain))
	}
	rows, err := s.rdb(ctx).QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	defer rows.Close()
	var as []Account
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return nil, fmt.Errorf("list accounts: %w", err)
		}
		as = append(as, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	return as, nil
}

// AddAlias adds targets to the alias address (creating it); targets already
// present are skipped. The alias's domain must exist (ErrNotFound).
func (s *Store) AddAlias(ctx context.Context, address string, targets []string) error {
	address = key(address)
	domain, err := splitAddress(address)
	if err != nil {
		return fmt.Errorf("add alias: %w", err)
	}
	var ts []string
	for _, t := range targets {
		if t = strings.TrimSpace(t); t != "" {
			ts = append(ts, t)
		}
	}
	if len(ts) == 0 {
		return fmt.Errorf("add alias %s: no targets", address)
	}
	return s.directoryTx(ctx, "add alias "+address, func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT 1 FROM domains WHERE name = ?`, domain)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("domain %s: %w", domain, ErrNotFound)
		}
		for _, t := range ts {
			// ON CONFLICT DO NOTHING: same syntax in SQLite and PostgreSQL.
			if _, err := tx.ExecContext(ctx, `INSERT INTO aliases (address, target, domain) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, address, t, domain); err != nil {
				return err
			}
		}
		return nil
	})
}

// RemoveAlias removes an alias with all its targets; ErrNotFound if absent.
func (s *Store) RemoveAlias(ctx context.Context, address string) error {
	address = key(address)
	return s.directoryTx(ctx, "remove alias "+address, func(tx *sql.Tx) error {
		return mustAffect(tx.ExecContext(ctx, `DELETE FROM aliases WHERE address = ?`, address))
	})
}

// GetAlias returns the targets of an alias (sorted) or ErrNotFound.
func (s *Store) getAliasDB(ctx context.Context, address string) ([]string, error) {
	address = key(address)
	m, err := s.aliases(ctx, `SELECT address, target FROM aliases WHERE address = ? ORDER BY target`, address)
	if err != nil {
		return nil, fmt.Errorf("alias %s: %w", address, err)
	}
	ts, ok := m[address]
	if !ok {
		return nil, fmt.Errorf("alias %s: %w", address, ErrNotFound)
	}
	return ts, nil
}

// ListAliases returns the aliases of a domain ("" for all) with their
// targets, sorted.
func (s *Store) ListAliases(ctx context.Context, domain string) (map[string][]string, error) {
	var m map[string][]string
	var err error
	if domain == "" {
		m, err = s.aliases(ctx, `SELECT address, target FROM aliases ORDER BY address, target`)
	} else {
		m, err = s.aliases(ctx, `SELECT address, target FROM aliases WHERE domain = ? ORDER BY address, target`, key(domain))
	}
	if err != nil {
		return nil, fmt.Errorf("list aliases: %w", err)
	}
	return m, nil
}

func (s *Store) aliases(ctx context.Context, q string, args ...any) (map[string][]string, error) {
	rows, err := s.rdb(ctx).QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := map[string][]string{}
	for rows.Next() {
		var a, t string
		if err := rows.Scan(&a, &t); err != nil {
			return nil, err
		}
		m[a] = append(m[a], t)
	}
	return m, rows.Err()
}
