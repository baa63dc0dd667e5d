package store

import (
	"context"
	"errors"
	"testing"
)

// TestDirectoryCacheSeesOtherProcesses: a lookup answered from the cache (even "not found")
// reflects a change made through another Store on the same directory (the CLI beside the
// server) at the very next lookup.
func TestDirectoryCacheSeesOtherProcesses(t *testing.T) {
	ctx := context.Background()
	server, cli := twoHandles(t)
	if _, err := server.GetDomain(ctx, "example.org"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetDomain before add: %v", err)
	}
	if err := cli.AddDomain(ctx, "example.org"); err != nil {
		t.Fatal(err)
	}
	if _, err := server.GetDomain(ctx, "example.org"); err != nil {
		t.Fatalf("GetDomain after another process added it: %v", err)
	}
	if _, err := server.GetAccount(ctx, "a@example.org"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetAccount before add: %v", err)
	}
	if _, err := cli.AddAccount(ctx, "a@example.org", "h1"); err != nil {
		t.Fatal(err)
	}
	a, err := server.GetAccount(ctx, "a@example.org")
	if err != nil || a.PasswordHash != "h1" {
		t.Fatalf("GetAccount after add: %+v %v", a, err)
	}
	// Two changes in quick succession are both seen.
	for _, h := range []string{"h2", "h3"} {
		if err := cli.SetPassword(ctx, "a@example.org", h); err != nil {
			t.Fatal(err)
		}
		if a, _ := server.GetAccount(ctx, "a@example.org"); a.PasswordHash != h {
			t.Fatalf("password hash %q after change, want %q", a.PasswordHash, h)
		}
	}
	if err := cli.AddAlias(ctx, "team@example.org", []string{"a@example.org"}); err != nil {
		t.Fatal(err)
	}
	if ts, err := server.GetAlias(ctx, "team@example.org"); err != nil || len(ts) != 1 {
		t.Fatalf("GetAlias after add: %v %v", ts, err)
	}
	if err := cli.RemoveAlias(ctx, "team@example.org"); err != nil {
		t.Fatal(err)
	}
	if _, err := server.GetAlias(ctx, "team@example.org"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetAlias after remove: %v", err)
	}
}

// TestDirViewLooksOnce: a view looks at directory.stamp once, at its first lookup, so its
// later lookups do not see what another process changed meanwhile; the next view does.
func TestDirViewLooksOnce(t *testing.T) {
	ctx := context.Background()
	server, cli := twoHandles(t)
	v := server.DirView()
	if _, err := v.GetDomain(ctx, "example.org"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetDomain before add: %v", err)
	}
	if err := cli.AddDomain(ctx, "example.org"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.GetDomain(ctx, "example.org"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the view looked at the stamp again: GetDomain = %v", err)
	}
	if _, err := server.DirView().GetDomain(ctx, "example.org"); err != nil {
		t.Fatalf("a new view after another process added the domain: %v", err)
	}
	// A view whose first lookup comes after the change sees it, whenever it was made.
	v = server.DirView()
	if _, err := cli.AddAccount(ctx, "a@example.org", "h1"); err != nil {
		t.Fatal(err)
	}
	if a, err := v.GetAccount(ctx, "a@example.org"); err != nil || a.PasswordHash != "h1" {
		t.Fatalf("GetAccount = %+v, %v", a, err)
	}
}

// BenchmarkGetDomainCached is a lookup answered from the cache: one stat of
// directory.stamp and a map read, as for every RCPT.
func BenchmarkGetDomainCached(b *testing.B) {
	ctx := context.Background()
	s := newTestStore(b, Options{})
	if err := s.AddDomain(ctx, "example.org"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.GetDomain(ctx, "example.org"); err != nil {
			b.Fatal(err)
		}
	}
}
