package directory

import (
	"errors"
	"testing"
	"time"
)

func TestGuard(t *testing.T) {
	now := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	g := NewGuard(GuardConfig{SlowAfter: 2, IPLimit: 5, AccountLimit: 8, Window: 10 * time.Minute, Cooldown: 15 * time.Minute}, func() time.Time { return now })
	check := func(ip, acct string) (time.Duration, error) {
		t.Helper()
		return g.Check(ip, acct)
	}
	// Slow-down: no delay for the first SlowAfter failures, then one second more each time.
	for i, want := range []time.Duration{0, 0, time.Second, 2 * time.Second, 3 * time.Second} {
		d, err := check("192.0.2.1", "alice@example.org")
		if err != nil || d != want {
			t.Fatalf("attempt %d: delay %v err %v, want %v", i+1, d, err, want)
		}
		g.Failure("192.0.2.1", "alice@example.org")
	}
	// Fifth failure reached IPLimit: the address is locked out, for any account.
	if _, err := check("192.0.2.1", "bob@example.org"); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("after IPLimit failures: %v, want ErrLockedOut", err)
	}
	// Another address is not affected (alice has 5 failures, below AccountLimit).
	if _, err := check("192.0.2.2", "alice@example.org"); err != nil {
		t.Fatalf("other address: %v", err)
	}
	// The lockout ends after the cooldown.
	now = now.Add(15 * time.Minute)
	if d, err := check("192.0.2.1", "alice@example.org"); err != nil || d != 0 {
		t.Fatalf("after cooldown: delay %v err %v", d, err)
	}

	// Account lockout: failures for carol from many addresses lock carol for unknown
	// addresses, but not for the address she logged in from before.
	g.Success("198.51.100.7", "carol@example.org")
	for i := range 8 {
		g.Failure("203.0.113."+string(rune('1'+i)), "carol@example.org")
	}
	if _, err := check("203.0.113.99", "carol@example.org"); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("account lockout for a new address: %v", err)
	}
	if _, err := check("198.51.100.7", "carol@example.org"); err != nil {
		t.Fatalf("carol's known address must not be locked out: %v", err)
	}
	if _, err := check("203.0.113.99", "dave@example.org"); err != nil {
		t.Fatalf("other accounts are not locked: %v", err)
	}
	// Failures older than the window are forgotten.
	now = now.Add(time.Hour)
	g.Failure("192.0.2.50", "")
	g.Failure("192.0.2.50", "")
	now = now.Add(11 * time.Minute)
	if d, err := check("192.0.2.50", ""); err != nil || d != 0 {
		t.Fatalf("old failures still counted: delay %v err %v", d, err)
	}
}

func TestGuardBoundsMemory(t *testing.T) {
	now := time.Now()
	g := NewGuard(GuardConfig{MaxEntries: 100}, func() time.Time { return now })
	for i := range 1000 {
		g.Failure("10.0.0."+string(rune(i)), "")
	}
	if n := len(g.ips) + len(g.accounts) + len(g.known); n > 100 {
		t.Fatalf("%d entries kept, limit 100", n)
	}
}
