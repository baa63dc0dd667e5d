package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// Directory lookups (domain, account, alias) happen for every RCPT and login, but the
// directory changes rarely. They are cached in memory. Any process that changes the
// directory (the server, or the CLI beside it) rewrites the file directory.stamp after its
// commit; a lookup compares the file's modification time and size with what the cache was
// built from (one stat, no query), so a change made by "yubin account add" is seen by the
// very next lookup. The lookups of one recipient share that stat (DirView): the change is
// then seen from the next recipient on.
const stampName = "directory.stamp"

// maxCached bounds the cache; past it, it starts over.
const maxCached = 50000

type dirCache struct {
	mu       sync.Mutex
	stamp    dirStamp
	domains  map[string]cached[Domain]
	accounts map[string]cached[Account]
	aliases  map[string]cached[[]string]
}

type cached[T any] struct {
	v        T
	notFound bool
}

// dirStamp is what a lookup compares of directory.stamp: the zero value when the file does
// not exist yet.
type dirStamp struct {
	exists    bool
	mod, size int64
}

func (c *dirCache) resetLocked(stamp dirStamp) {
	c.stamp = stamp
	c.domains = map[string]cached[Domain]{}
	c.accounts = map[string]cached[Account]{}
	c.aliases = map[string]cached[[]string]{}
}

// currentStamp describes directory.stamp.
func (s *Store) currentStamp() dirStamp {
	fi, err := os.Stat(s.stampPath)
	if err != nil {
		return dirStamp{}
	}
	return dirStamp{exists: true, mod: fi.ModTime().UnixNano(), size: fi.Size()}
}

// directoryChanged records a directory change: this process's cache starts over, and the
// stamp tells other processes.
func (s *Store) directoryChanged() {
	s.dc.mu.Lock()
	s.dc.resetLocked(dirStamp{})
	s.dc.mu.Unlock()
	// The content changes too (a counter of nanoseconds), so that two changes within the
	// file system's timestamp resolution still differ in size or time.
	data := []byte(strconv.FormatInt(time.Now().UnixNano(), 10) + "\n")
	if err := os.WriteFile(s.stampPath, data, 0o600); err != nil {
		s.log.Warn("write directory stamp", "err", err)
	}
}

// lookup returns a cached value or loads it, keeping "not found" answers too. stamp is
// directory.stamp as the caller found it (currentStamp).
func lookup[T any](s *Store, stamp dirStamp, m func(*dirCache) map[string]cached[T], key string, load func() (T, error)) (T, error) {
	s.dc.mu.Lock()
	if s.dc.stamp != stamp || s.dc.domains == nil || len(s.dc.domains)+len(s.dc.accounts)+len(s.dc.aliases) > maxCached {
		s.dc.resetLocked(stamp)
	}
	if c, ok := m(&s.dc)[key]; ok {
		s.dc.mu.Unlock()
		if c.notFound {
			var zero T
			return zero, fmt.Errorf("%s: %w", key, ErrNotFound)
		}
		return c.v, nil
	}
	s.dc.mu.Unlock()
	v, err := load()
	if err != nil && !errors.Is(err, ErrNotFound) {
		return v, err
	}
	s.dc.mu.Lock()
	if s.dc.stamp == stamp { // not reset meanwhile
		m(&s.dc)[key] = cached[T]{v: v, notFound: err != nil}
	}
	s.dc.mu.Unlock()
	return v, err
}

// GetDomain returns a hosted domain, or ErrNotFound.
func (s *Store) GetDomain(ctx context.Context, name string) (Domain, error) {
	return s.DirView().GetDomain(ctx, name)
}

// GetAccount returns an account by its address key, or ErrNotFound.
func (s *Store) GetAccount(ctx context.Context, address string) (Account, error) {
	return s.DirView().GetAccount(ctx, address)
}

// GetAlias returns an alias's targets, or ErrNotFound.
func (s *Store) GetAlias(ctx context.Context, address string) ([]string, error) {
	return s.DirView().GetAlias(ctx, address)
}

// DirView answers the lookups of one question (the routing of one recipient: its domain,
// account, aliases and their targets' domains) after one look at directory.stamp, made by
// its first lookup, instead of one look each. A change another process commits meanwhile
// is seen by the next view. A DirView is used by one goroutine; it is cheap: make one per
// question.
type DirView struct {
	s       *Store
	stamp   dirStamp
	checked bool
}

// DirView returns a new view of the directory.
func (s *Store) DirView() *DirView { return &DirView{s: s} }

func (v *DirView) currentStamp() dirStamp {
	if !v.checked {
		v.stamp, v.checked = v.s.currentStamp(), true
	}
	return v.stamp
}

// GetDomain is Store.GetDomain.
func (v *DirView) GetDomain(ctx context.Context, name string) (Domain, error) {
	return lookup(v.s, v.currentStamp(), func(c *dirCache) map[string]cached[Domain] { return c.domains }, key(name),
		func() (Domain, error) { return v.s.getDomainDB(ctx, name) })
}

// GetAccount is Store.GetAccount.
func (v *DirView) GetAccount(ctx context.Context, address string) (Account, error) {
	return lookup(v.s, v.currentStamp(), func(c *dirCache) map[string]cached[Account] { return c.accounts }, key(address),
		func() (Account, error) { return v.s.getAccountDB(ctx, address) })
}

// GetAlias is Store.GetAlias.
func (v *DirView) GetAlias(ctx context.Context, address string) ([]string, error) {
	return lookup(v.s, v.currentStamp(), func(c *dirCache) map[string]cached[[]string] { return c.aliases }, key(address),
		func() ([]string, error) { return v.s.getAliasDB(ctx, address) })
}
