package directory

import (
	"context"
	"fmt"
	"sync"
)

// fakeBackend is an in-memory Backend. fail makes every method fail for
// the given name, to test backend errors.
type fakeBackend struct {
	mu       sync.Mutex
	domains  map[string]Domain
	accounts map[string]Account
	aliases  map[string][]string
	fail     map[string]error
}

func (f *fakeBackend) GetDomain(_ context.Context, name string) (Domain, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[name]; err != nil {
		return Domain{}, err
	}
	d, ok := f.domains[name]
	if !ok {
		return Domain{}, fmt.Errorf("domain %s: %w", name, ErrNotFound)
	}
	return d, nil
}

func (f *fakeBackend) GetAccount(_ context.Context, address string) (Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[address]; err != nil {
		return Account{}, err
	}
	a, ok := f.accounts[address]
	if !ok {
		return Account{}, fmt.Errorf("account %s: %w", address, ErrNotFound)
	}
	return a, nil
}

func (f *fakeBackend) GetAlias(_ context.Context, address string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[address]; err != nil {
		return nil, err
	}
	t, ok := f.aliases[address]
	if !ok {
		return nil, fmt.Errorf("alias %s: %w", address, ErrNotFound)
	}
	return append([]string(nil), t...), nil
}

func (f *fakeBackend) addAccount(a Account) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accounts[a.Address] = a
}
