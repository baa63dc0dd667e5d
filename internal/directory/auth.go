package directory

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"

	"yubin/internal/address"
)

// Authenticate checks a login name ("user@domain", case-insensitive) and
// password. An unknown user, a wrong password and a disabled account all
// give ErrBadCredentials, and an unknown user costs a dummy hash, so that
// neither the answer nor its timing reveals which accounts exist. A
// malformed stored hash gives an error that wraps ErrBadCredentials and
// says why, for the operator's log. Any other error is a backend failure.
func (d *Directory) Authenticate(ctx context.Context, user, password string) (Account, error) {
	a, err := address.Parse(user, address.Options{AllowUTF8: true})
	if err != nil || a.IsIPLiteral() {
		d.dummyHash(password)
		return Account{}, ErrBadCredentials
	}
	key := a.Key()
	acc, err := d.Backend.GetAccount(ctx, key)
	if errors.Is(err, ErrNotFound) {
		d.dummyHash(password)
		return Account{}, ErrBadCredentials
	}
	if err != nil {
		return Account{}, fmt.Errorf("authenticate: get account %s: %w", key, err)
	}
	// Verify even for a disabled account, so it takes the same time.
	ok, err := VerifyPassword(acc.PasswordHash, password)
	if err != nil {
		return Account{}, fmt.Errorf("%w: account %s: %v", ErrBadCredentials, key, err)
	}
	if !ok || acc.Disabled {
		return Account{}, ErrBadCredentials
	}
	return acc, nil
}

// dummyHash spends the time of one password check.
func (d *Directory) dummyHash(password string) {
	p := d.HashParams
	if p == (HashParams{}) {
		p = DefaultHashParams()
	}
	if p.validate() != nil {
		p = DefaultHashParams()
	}
	var salt [saltLen]byte
	argon2.IDKey([]byte(password), salt[:], p.Time, p.Memory, p.Threads, keyLen)
}
