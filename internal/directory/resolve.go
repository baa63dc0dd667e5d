package directory

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"yubin/internal/address"
)

// maxAliasDepth bounds alias nesting: an alias whose targets are aliases
// whose targets are aliases... at most this many levels.
const maxAliasDepth = 10

// Resolve decides where mail for addr goes. The rules, in order:
//
//  1. An address literal, or a domain the Backend does not know, is not
//     hosted: Resolution{Hosted: false} and no error.
//  2. A local part with routing characters ('%', '!', '@') on a hosted
//     domain is refused with ErrRouting; yubin never interprets them.
//  3. An account with the exact key (case-insensitive local part) gets the
//     mail; a disabled one gives ErrNoSuchUser.
//  4. An alias with the exact key is expanded (see below).
//  5. With DetailSep set, "base+detail" retries 3 and 4 with the base.
//  6. "postmaster" (any case) always exists (RFC 5321 4.5.1): if rules 3-4
//     found nothing, mail goes to PostmasterFallback, else to the catch-all,
//     else to the domain's first account (FirstAccounter), else to a
//     placeholder Target with Postmaster set, which names no mailbox.
//  7. The domain's catch-all, if set, is expanded like an alias target.
//  8. Otherwise ErrNoSuchUser.
//
// Alias targets are expanded without rules 5-7: a target on a domain we do
// not host becomes a Remote target; a hosted target names an account or
// another alias (expanded recursively, at most maxAliasDepth levels, a
// cycle gives ErrAliasLoop); a hosted target that names nothing, or a
// disabled account, is skipped so that one stale member does not bounce
// mail for the others. An alias that ends up with no targets gives
// ErrNoSuchUser. Targets are deduplicated in order of first appearance.
//
// Any other error is a Backend failure: the caller should answer with a
// temporary failure.
func (d *Directory) Resolve(ctx context.Context, addr address.Address) (Resolution, error) {
	if addr.IsZero() || addr.IsIPLiteral() {
		return Resolution{}, nil
	}
	r := &resolver{
		ctx:     ctx,
		d:       d,
		b:       d.Backend,
		domains: make(map[string]*Domain),
		done:    make(map[string]expansion),
		active:  make(map[string]bool),
	}
	if v, ok := d.Backend.(Viewer); ok {
		r.b = v.View()
	}
	domain := strings.ToLower(addr.Domain)
	dom, err := r.domain(domain)
	if err != nil {
		return Resolution{}, fmt.Errorf("resolve %s: %w", addr, err)
	}
	if dom == nil {
		return Resolution{}, nil
	}
	// RFC 5321 3.6.1 and appendix C: source routes are obsolete, and the
	// percent hack and bang paths would make us a relay for whatever the
	// next hop does with them.
	if addr.HasRoutingChars() {
		return Resolution{}, fmt.Errorf("resolve %s: %w", addr, ErrRouting)
	}
	targets, err := r.local(strings.ToLower(addr.Local), domain, dom.CatchAll)
	if err != nil {
		return Resolution{}, fmt.Errorf("resolve %s: %w", addr, err)
	}
	return Resolution{Hosted: true, Targets: targets}, nil
}

// resolver holds the state of one Resolve call: lookups are not cached
// between calls, only within one, so that a wide alias tree costs one
// lookup per distinct name.
type resolver struct {
	ctx     context.Context
	d       *Directory
	b       Backend              // d.Backend, or one view of it (Viewer)
	domains map[string]*Domain   // name -> hosted domain, nil if not ours
	done    map[string]expansion // alias key -> its expansion
	active  map[string]bool      // alias keys being expanded, for loops
}

type expansion struct {
	targets []Target
	height  int // alias levels in this expansion, 1 for an alias of accounts
}

// local applies rules 3 to 8 to a lower-cased local part of a hosted domain.
func (r *resolver) local(local, domain, catchAll string) ([]Target, error) {
	if ts, found, err := r.exact(local + "@" + domain); found || err != nil {
		return ts, err
	}
	// RFC 5233 sub-addressing: "user+detail" is user's; SplitDetail splits
	// at the first separator.
	if base, _, ok := address.SplitDetail(local, r.d.DetailSep); ok {
		if ts, found, err := r.exact(base + "@" + domain); found || err != nil {
			return ts, err
		}
	}
	if local == "postmaster" {
		return r.postmaster(domain, catchAll)
	}
	if catchAll != "" {
		ts, err := r.target(catchAll, 1)
		if err != nil {
			return nil, err
		}
		if len(ts) > 0 {
			return ts, nil
		}
	}
	return nil, ErrNoSuchUser
}

// exact looks key up as an account, then as an alias. found is false when
// it is neither.
func (r *resolver) exact(key string) (ts []Target, found bool, err error) {
	acc, ok, err := r.account(key)
	if err != nil {
		return nil, true, err
	}
	if ok {
		if acc.Disabled {
			return nil, true, ErrNoSuchUser
		}
		return []Target{accountTarget(acc)}, true, nil
	}
	targets, ok, err := r.alias(key)
	if err != nil {
		return nil, true, err
	}
	if !ok {
		return nil, false, nil
	}
	exp, err := r.expand(key, targets, 1)
	if err != nil {
		return nil, true, err
	}
	if len(exp.targets) == 0 {
		return nil, true, ErrNoSuchUser
	}
	return exp.targets, true, nil
}

// postmaster applies rule 6: PostmasterFallback, else the domain's catch-all, else the
// domain's first account (its natural administrator) when the Backend can name it, else a
// placeholder target that names no mailbox.
func (r *resolver) postmaster(domain, catchAll string) ([]Target, error) {
	for _, fb := range []string{r.d.PostmasterFallback, catchAll} {
		if fb == "" {
			continue
		}
		ts, err := r.target(fb, 1)
		if err != nil {
			return nil, err
		}
		if len(ts) > 0 {
			return ts, nil
		}
	}
	if fa, ok := r.d.Backend.(FirstAccounter); ok {
		a, err := fa.FirstAccount(r.ctx, domain)
		switch {
		case err == nil && !a.Disabled:
			return []Target{{AccountID: a.ID, Address: a.Address}}, nil
		case err != nil && !errors.Is(err, ErrNotFound):
			return nil, err
		}
	}
	return []Target{{Address: "postmaster@" + domain, Postmaster: true}}, nil
}

// FirstAccounter is an optional Backend extension: the oldest account of a domain, which
// receives the domain's postmaster mail when nothing else is configured.
type FirstAccounter interface {
	FirstAccount(ctx context.Context, domain string) (Account, error)
}

// target resolves one alias target (or catch-all, or postmaster fallback)
// found at alias nesting level depth. It returns no targets, and no error,
// for a hosted name that has no account or alias.
func (r *resolver) target(t string, depth int) ([]Target, error) {
	key := strings.ToLower(t)
	at := strings.LastIndexByte(key, '@')
	if at <= 0 || at == len(key)-1 {
		// Not an address: the CLI should not have stored it. Skipping it
		// is the same as for any other dangling target.
		return nil, nil
	}
	domain := key[at+1:]
	var dom *Domain
	if !strings.HasPrefix(domain, "[") {
		var err error
		if dom, err = r.domain(domain); err != nil {
			return nil, err
		}
	}
	if dom == nil {
		// Keep the stored text: the remote host decides what case means.
		return []Target{{Address: t, Remote: true}}, nil
	}
	acc, ok, err := r.account(key)
	if err != nil {
		return nil, err
	}
	if ok {
		if acc.Disabled {
			return nil, nil
		}
		return []Target{accountTarget(acc)}, nil
	}
	if r.active[key] {
		return nil, fmt.Errorf("%w: %s is reached from itself", ErrAliasLoop, key)
	}
	if exp, ok := r.done[key]; ok {
		if depth+exp.height-1 > maxAliasDepth {
			return nil, fmt.Errorf("%w: aliases nested deeper than %d at %s", ErrAliasLoop, maxAliasDepth, key)
		}
		return exp.targets, nil
	}
	targets, ok, err := r.alias(key)
	if err != nil || !ok {
		return nil, err
	}
	exp, err := r.expand(key, targets, depth)
	return exp.targets, err
}

// expand expands the targets of alias key, which sits at nesting level
// depth, and remembers the result for the rest of this Resolve call.
func (r *resolver) expand(key string, targets []string, depth int) (expansion, error) {
	if depth > maxAliasDepth {
		return expansion{}, fmt.Errorf("%w: aliases nested deeper than %d at %s", ErrAliasLoop, maxAliasDepth, key)
	}
	r.active[key] = true
	defer delete(r.active, key)
	exp := expansion{height: 1}
	for _, t := range targets {
		ts, err := r.target(t, depth+1)
		if err != nil {
			return expansion{}, err
		}
		exp.targets = append(exp.targets, ts...)
		if child, ok := r.done[strings.ToLower(t)]; ok && child.height+1 > exp.height {
			exp.height = child.height + 1
		}
	}
	exp.targets = dedup(exp.targets)
	r.done[key] = exp
	return exp, nil
}

// domain returns the hosted domain called name, or nil when we do not host
// it.
func (r *resolver) domain(name string) (*Domain, error) {
	if dom, ok := r.domains[name]; ok {
		return dom, nil
	}
	dom, err := r.b.GetDomain(r.ctx, name)
	switch {
	case err == nil:
		r.domains[name] = &dom
	case errors.Is(err, ErrNotFound):
		r.domains[name] = nil
	default:
		return nil, fmt.Errorf("get domain %s: %w", name, err)
	}
	return r.domains[name], nil
}

func (r *resolver) account(key string) (Account, bool, error) {
	acc, err := r.b.GetAccount(r.ctx, key)
	switch {
	case err == nil:
		return acc, true, nil
	case errors.Is(err, ErrNotFound):
		return Account{}, false, nil
	default:
		return Account{}, false, fmt.Errorf("get account %s: %w", key, err)
	}
}

func (r *resolver) alias(key string) ([]string, bool, error) {
	targets, err := r.b.GetAlias(r.ctx, key)
	switch {
	case err == nil:
		return targets, true, nil
	case errors.Is(err, ErrNotFound):
		return nil, false, nil
	default:
		return nil, false, fmt.Errorf("get alias %s: %w", key, err)
	}
}

func accountTarget(acc Account) Target {
	return Target{AccountID: acc.ID, Address: acc.Address}
}

// dedup removes repeated targets, keeping the first: a local account by its
// ID, anything else by its address.
func dedup(ts []Target) []Target {
	seen := make(map[string]bool, len(ts))
	out := ts[:0:0]
	for _, t := range ts {
		k := "@" + t.Address
		if t.AccountID > 0 {
			k = strconv.FormatInt(t.AccountID, 10)
		}
		if !seen[k] {
			seen[k] = true
			out = append(out, t)
		}
	}
	return out
}
