package store

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestDomains(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	s := newTestStore(t, Options{Now: func() time.Time { return now }})

	if err := s.AddDomain(ctx, "Example.ORG"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddDomain(ctx, "example.org"); !errors.Is(err, ErrExists) {
		t.Errorf("second AddDomain: %v, want ErrExists", err)
	}
	if err := s.AddDomain(ctx, "b.example"); err != nil {
		t.Fatal(err)
	}
	ds, err := s.ListDomains(ctx)
	want := []Domain{{Name: "b.example", Created: now}, {Name: "example.org", Created: now}}
	if err != nil || !reflect.DeepEqual(ds, want) {
		t.Errorf("ListDomains = %+v, %v; want %+v", ds, err, want)
	}
	if err := s.SetCatchAll(ctx, "example.org", "postmaster@example.org"); err != nil {
		t.Fatal(err)
	}
	if d, err := s.GetDomain(ctx, "EXAMPLE.org"); err != nil || d.CatchAll != "postmaster@example.org" {
		t.Errorf("GetDomain = %+v, %v", d, err)
	}
	if err := s.SetCatchAll(ctx, "example.org", ""); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.GetDomain(ctx, "example.org"); d.CatchAll != "" {
		t.Errorf("catch-all not cleared: %+v", d)
	}
	if err := s.SetCatchAll(ctx, "nosuch.example", "x@y"); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetCatchAll of unknown domain: %v", err)
	}
	if _, err := s.GetDomain(ctx, "nosuch.example"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetDomain of unknown domain: %v", err)
	}

	// RemoveDomain refuses while accounts or aliases remain.
	if _, err := s.AddAccount(ctx, "ana@example.org", "h"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAlias(ctx, "info@b.example", []string{"ana@example.org"}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"example.org", "b.example"} {
		if err := s.RemoveDomain(ctx, d); !errors.Is(err, ErrNotEmpty) {
			t.Errorf("RemoveDomain(%s) with users: %v, want ErrNotEmpty", d, err)
		}
	}
	if err := s.RemoveAccount(ctx, "ana@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveAlias(ctx, "info@b.example"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"example.org", "b.example"} {
		if err := s.RemoveDomain(ctx, d); err != nil {
			t.Errorf("RemoveDomain(%s): %v", d, err)
		}
	}
	if err := s.RemoveDomain(ctx, "example.org"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RemoveDomain of removed domain: %v", err)
	}
	if ds, _ := s.ListDomains(ctx); len(ds) != 0 {
		t.Errorf("domains left: %+v", ds)
	}
}

func TestAccounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})

	if _, err := s.AddAccount(ctx, "ana@example.org", "h"); !errors.Is(err, ErrNotFound) {
		t.Errorf("AddAccount without domain: %v, want ErrNotFound", err)
	}
	if _, err := s.AddAccount(ctx, "no-at-sign", "h"); err == nil {
		t.Error("AddAccount of a bad address succeeded")
	}
	s.AddDomain(ctx, "example.org")
	s.AddDomain(ctx, "other.example")
	a, err := s.AddAccount(ctx, "Ana@Example.org", "hash1")
	if err != nil {
		t.Fatal(err)
	}
	if a.ID <= 0 || a.Address != "ana@example.org" || a.PasswordHash != "hash1" || a.Disabled {
		t.Errorf("AddAccount = %+v", a)
	}
	if _, err := s.AddAccount(ctx, "ana@example.org", "h"); !errors.Is(err, ErrExists) {
		t.Errorf("second AddAccount: %v, want ErrExists", err)
	}
	b, _ := s.AddAccount(ctx, "bob@other.example", "h")

	mbs, err := s.ListMailboxes(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	type mb struct{ name, use string }
	var got []mb
	for _, m := range mbs {
		got = append(got, mb{m.Name, m.SpecialUse})
		if m.AccountID != a.ID || m.UIDNext != 1 || m.HighestModSeq != 1 || !m.Subscribed || m.UIDValidity == 0 || m.Messages != 0 {
			t.Errorf("mailbox %+v", m)
		}
	}
	want := []mb{{"INBOX", ""}, {"Archive", `\Archive`}, {"Drafts", `\Drafts`}, {"Junk", `\Junk`}, {"Sent", `\Sent`}, {"Trash", `\Trash`}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mailboxes %v, want %v", got, want)
	}

	if err := s.SetPassword(ctx, "ana@example.org", "hash2"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDisabled(ctx, "ana@example.org", true); err != nil {
		t.Fatal(err)
	}
	if g, err := s.GetAccount(ctx, "ANA@example.org"); err != nil || g.PasswordHash != "hash2" || !g.Disabled || g.ID != a.ID {
		t.Errorf("GetAccount = %+v, %v", g, err)
	}
	if err := s.SetPassword(ctx, "nobody@example.org", "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetPassword of unknown account: %v", err)
	}
	if _, err := s.GetAccount(ctx, "nobody@example.org"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetAccount of unknown account: %v", err)
	}

	all, _ := s.ListAccounts(ctx, "")
	if len(all) != 2 || all[0].Address != "ana@example.org" || all[1].ID != b.ID {
		t.Errorf("ListAccounts(\"\") = %+v", all)
	}
	if some, _ := s.ListAccounts(ctx, "other.example"); len(some) != 1 || some[0].ID != b.ID {
		t.Errorf("ListAccounts(other.example) = %+v", some)
	}

	// Removing an account removes its mailboxes; adding it again gives new
	// ids and a new UIDVALIDITY even within the same second.
	oldValidity := mbs[0].UIDValidity
	if err := s.RemoveAccount(ctx, "ana@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveAccount(ctx, "ana@example.org"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second RemoveAccount: %v", err)
	}
	if mbs, _ := s.ListMailboxes(ctx, a.ID); len(mbs) != 0 {
		t.Errorf("mailboxes of removed account: %+v", mbs)
	}
	a2, err := s.AddAccount(ctx, "ana@example.org", "h")
	if err != nil {
		t.Fatal(err)
	}
	mbs2, _ := s.ListMailboxes(ctx, a2.ID)
	if a2.ID == a.ID || mbs2[0].UIDValidity <= oldValidity {
		t.Errorf("re-added account: id %d (was %d), UIDVALIDITY %d (was %d)", a2.ID, a.ID, mbs2[0].UIDValidity, oldValidity)
	}
}

func TestAliases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	if err := s.AddAlias(ctx, "info@example.org", []string{"a@example.org"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("AddAlias without domain: %v, want ErrNotFound", err)
	}
	s.AddDomain(ctx, "example.org")
	s.AddDomain(ctx, "b.example")
	if err := s.AddAlias(ctx, "Info@example.org", []string{"b@example.org", "a@example.org"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAlias(ctx, "info@example.org", []string{"a@example.org", "c@remote.example", " "}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAlias(ctx, "x@b.example", []string{"a@example.org"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAlias(ctx, "y@b.example", nil); err == nil {
		t.Error("AddAlias without targets succeeded")
	}
	ts, err := s.GetAlias(ctx, "info@example.org")
	if want := []string{"a@example.org", "b@example.org", "c@remote.example"}; err != nil || !reflect.DeepEqual(ts, want) {
		t.Errorf("GetAlias = %v, %v; want %v", ts, err, want)
	}
	if _, err := s.GetAlias(ctx, "nope@example.org"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetAlias of unknown alias: %v", err)
	}
	m, _ := s.ListAliases(ctx, "b.example")
	if want := map[string][]string{"x@b.example": {"a@example.org"}}; !reflect.DeepEqual(m, want) {
		t.Errorf("ListAliases(b.example) = %v", m)
	}
	if m, _ := s.ListAliases(ctx, ""); len(m) != 2 {
		t.Errorf("ListAliases(\"\") = %v", m)
	}
	if err := s.RemoveAlias(ctx, "info@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveAlias(ctx, "info@example.org"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second RemoveAlias: %v", err)
	}
}
