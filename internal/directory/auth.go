package directory

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

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
	if !ok && !acc.Disabled {
		ok, err = d.appPassword(ctx, acc, password)
		if err != nil {
			return Account{}, err
		}
	}
	if !ok || acc.Disabled {
		return Account{}, ErrBadCredentials
	}
	return acc, nil
}

// AppPasswordBackend is an optional Backend extension: the hashes of an account's app
// passwords (one per device, revocable alone), tried after the account's own password.
type AppPasswordBackend interface {
	AppPasswordHashes(ctx context.Context, accountID int64) ([]string, error)
}

func (d *Directory) appPassword(ctx context.Context, acc Account, password string) (bool, error) {
	ab, ok := d.Backend.(AppPasswordBackend)
	if !ok {
		return false, nil
	}
	hashes, err := ab.AppPasswordHashes(ctx, acc.ID)
	if err != nil {
		return false, fmt.Errorf("authenticate: app passwords of %s: %w", acc.Address, err)
	}
	for _, h := range hashes {
		if ok, err := VerifyPassword(h, password); err == nil && ok {
			return true, nil
		}
	}
	return false, nil
}

// Login is Authenticate behind the brute-force Guard (when d.Guard is set), for every
// protocol: a locked-out address or account gets ErrLockedOut without a password check, and
// a failure is answered only after the Guard's delay (or when ctx ends).
func (d *Directory) Login(ctx context.Context, ip, user, password string) (Account, error) {
	key := strings.ToLower(user)
	if a, err := address.Parse(user, address.Options{AllowUTF8: true}); err == nil {
		key = a.Key()
	}
	var delay time.Duration
	if d.Guard != nil {
		var err error
		if delay, err = d.Guard.Check(ip, key); err != nil {
			return Account{}, err
		}
	}
	acc, err := d.Authenticate(ctx, user, password)
	if d.Guard == nil {
		return acc, err
	}
	if errors.Is(err, ErrBadCredentials) {
		d.Guard.Failure(ip, key)
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		return Account{}, err
	}
	if err == nil {
		d.Guard.Success(ip, key)
	}
	return acc, err
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
