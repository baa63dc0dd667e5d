package directory

import (
	"errors"
	"sync"
	"time"
)

// ErrLockedOut is returned by Guard.Check while a client address, or an account attacked by
// it, is in its cooldown period. Protocol servers answer it with a temporary failure
// (SMTP "454 4.7.0", IMAP "NO [UNAVAILABLE]", POP3 "-ERR [IN-USE]"... see each server).
var ErrLockedOut = errors.New("too many failed logins, try again later")

// GuardConfig sets the brute-force limits. Zero fields take the defaults noted.
type GuardConfig struct {
	// SlowAfter failures from one address, each further failed attempt is answered later
	// (one second per failure past it, at most MaxDelay). Default 3.
	SlowAfter int
	// MaxDelay bounds the slow-down. Default 5s.
	MaxDelay time.Duration
	// IPLimit failures from one address within Window lock that address out. Default 10.
	IPLimit int
	// AccountLimit failures for one account (from any address) within Window lock the account
	// for every address that has not logged in to it successfully within the last KnownFor.
	// Default 20.
	AccountLimit int
	// Window is how long a failure counts. Default 15m.
	Window time.Duration
	// Cooldown is how long a lockout lasts. Default 15m.
	Cooldown time.Duration
	// KnownFor is how long a successful login makes its address trusted for that account,
	// so that an attack on an account does not lock out its owner. Default 7 days.
	KnownFor time.Duration
	// MaxEntries bounds memory: past it, the oldest entries are dropped. Default 100000.
	MaxEntries int
}

func (c GuardConfig) withDefaults() GuardConfig {
	if c.SlowAfter <= 0 {
		c.SlowAfter = 3
	}
	if c.MaxDelay <= 0 {
		c.MaxDelay = 5 * time.Second
	}
	if c.IPLimit <= 0 {
		c.IPLimit = 10
	}
	if c.AccountLimit <= 0 {
		c.AccountLimit = 20
	}
	if c.Window <= 0 {
		c.Window = 15 * time.Minute
	}
	if c.Cooldown <= 0 {
		c.Cooldown = 15 * time.Minute
	}
	if c.KnownFor <= 0 {
		c.KnownFor = 7 * 24 * time.Hour
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = 100000
	}
	return c
}

// Guard counts failed logins per client address and per account, shared by every protocol
// (SMTP AUTH, IMAP, POP3), so an attacker cannot spread guesses over protocols. It lives in
// memory: a restart forgets it, which costs an attacker nothing they would not get by waiting.
type Guard struct {
	cfg GuardConfig
	now func() time.Time

	mu       sync.Mutex
	ips      map[string]*counter
	accounts map[string]*counter
	known    map[string]time.Time // account + "\x00" + ip -> last successful login
}

type counter struct {
	failures    []time.Time // within Window, oldest first
	lockedUntil time.Time
}

// NewGuard makes a Guard; now is the clock (nil: time.Now).
func NewGuard(cfg GuardConfig, now func() time.Time) *Guard {
	if now == nil {
		now = time.Now
	}
	return &Guard{cfg: cfg.withDefaults(), now: now, ips: map[string]*counter{}, accounts: map[string]*counter{}, known: map[string]time.Time{}}
}

// Check is called before verifying a password. It returns ErrLockedOut while the address, or
// the account for this address, is locked, and otherwise the delay to wait before answering
// a failure (the caller sleeps only when the attempt fails, so a legitimate user is not slowed).
func (g *Guard) Check(ip, account string) (failDelay time.Duration, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if c := g.ips[ip]; c != nil && now.Before(c.lockedUntil) {
		return 0, ErrLockedOut
	}
	if c := g.accounts[account]; account != "" && c != nil && now.Before(c.lockedUntil) && !g.isKnown(account, ip, now) {
		return 0, ErrLockedOut
	}
	n := 0
	if c := g.ips[ip]; c != nil {
		n = len(c.prune(now, g.cfg.Window))
	}
	if n >= g.cfg.SlowAfter {
		return min(time.Duration(n-g.cfg.SlowAfter+1)*time.Second, g.cfg.MaxDelay), nil
	}
	return 0, nil
}

// Failure records a failed login of account (may be "" when unknown) from ip.
func (g *Guard) Failure(ip, account string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	g.record(g.ips, ip, g.cfg.IPLimit, now)
	if account != "" {
		g.record(g.accounts, account, g.cfg.AccountLimit, now)
	}
	g.bound()
}

// Success records a successful login: the address becomes known for the account and its
// failures are forgiven.
func (g *Guard) Success(ip, account string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.ips, ip)
	g.known[account+"\x00"+ip] = g.now()
	g.bound()
}

func (g *Guard) isKnown(account, ip string, now time.Time) bool {
	t, ok := g.known[account+"\x00"+ip]
	return ok && now.Sub(t) < g.cfg.KnownFor
}

func (g *Guard) record(m map[string]*counter, key string, limit int, now time.Time) {
	c := m[key]
	if c == nil {
		c = &counter{}
		m[key] = c
	}
	c.failures = append(c.prune(now, g.cfg.Window), now)
	if len(c.failures) >= limit {
		c.lockedUntil = now.Add(g.cfg.Cooldown)
		c.failures = nil
	}
}

// prune drops failures older than the window and returns the rest.
func (c *counter) prune(now time.Time, window time.Duration) []time.Time {
	i := 0
	for i < len(c.failures) && now.Sub(c.failures[i]) >= window {
		i++
	}
	c.failures = c.failures[i:]
	return c.failures
}

// bound keeps memory bounded under a distributed attack: entries with nothing left to
// remember go first, then everything when still too many (forgetting is the safe direction
// for availability, and the per-address limit rebuilds in seconds).
func (g *Guard) bound() {
	if len(g.ips)+len(g.accounts)+len(g.known) <= g.cfg.MaxEntries {
		return
	}
	now := g.now()
	for _, m := range []map[string]*counter{g.ips, g.accounts} {
		for k, c := range m {
			if len(c.prune(now, g.cfg.Window)) == 0 && !now.Before(c.lockedUntil) {
				delete(m, k)
			}
		}
	}
	for k, t := range g.known {
		if now.Sub(t) >= g.cfg.KnownFor {
			delete(g.known, k)
		}
	}
	if len(g.ips)+len(g.accounts)+len(g.known) > g.cfg.MaxEntries {
		clear(g.ips)
		clear(g.accounts)
	}
}
