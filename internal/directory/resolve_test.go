package directory

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"yubin/internal/address"
)

func newFake() *fakeBackend {
	f := &fakeBackend{
		domains: map[string]Domain{
			"hosted.test":     {Name: "hosted.test"},
			"catchall.test":   {Name: "catchall.test", CatchAll: "catch@catchall.test"},
			"catchalias.test": {Name: "catchalias.test", CatchAll: "team@hosted.test"},
			"dangling.test":   {Name: "dangling.test", CatchAll: "ghost@dangling.test"},
			"例子.test":         {Name: "例子.test"},
		},
		accounts: map[string]Account{},
		aliases: map[string][]string{
			"team@hosted.test":     {"alice@hosted.test", "bob@hosted.test"},
			"one@hosted.test":      {"alice@hosted.test"},
			"fwd@hosted.test":      {"Someone@Remote.example"},
			"mixed@hosted.test":    {"alice@hosted.test", "x@remote.example", "Alice@Hosted.test", "x@remote.example", "y@[192.0.2.1]"},
			"nested@hosted.test":   {"team@hosted.test", "carol@hosted.test"},
			"diamond@hosted.test":  {"team@hosted.test", "one@hosted.test", "nested@hosted.test"},
			"dup@hosted.test":      {"alice@hosted.test", "alice@hosted.test"},
			"loop1@hosted.test":    {"loop2@hosted.test"},
			"loop2@hosted.test":    {"alice@hosted.test", "loop1@hosted.test"},
			"self@hosted.test":     {"self@hosted.test"},
			"stale@hosted.test":    {"ghost@hosted.test", "dave@hosted.test", "alice@hosted.test", "not-an-address"},
			"allstale@hosted.test": {"ghost@hosted.test"},
			"empty@hosted.test":    {},
			"list@hosted.test":     {"team@hosted.test"},
			"pmalias@hosted.test":  {"alice@hosted.test", "bob@hosted.test"},
		},
	}
	for _, a := range []Account{
		{ID: 1, Address: "user@hosted.test"},
		{ID: 2, Address: "bob@hosted.test"},
		{ID: 3, Address: "bob+tag@hosted.test"},
		{ID: 4, Address: "alice@hosted.test"},
		{ID: 5, Address: "dave@hosted.test", Disabled: true},
		{ID: 6, Address: "carol@hosted.test"},
		{ID: 10, Address: "catch@catchall.test"},
		{ID: 11, Address: "postmaster@catchall.test"},
		{ID: 12, Address: "jörg@例子.test"},
	} {
		f.accounts[a.Address] = a
	}
	// chain0 -> chain1 -> ... -> chain10 -> alice: 11 levels of aliases.
	for i := 0; i < 11; i++ {
		f.aliases[fmt.Sprintf("chain%d@hosted.test", i)] = []string{fmt.Sprintf("chain%d@hosted.test", i+1)}
	}
	f.aliases["chain11@hosted.test"] = []string{"alice@hosted.test"}
	return f
}

func local(id int64, addr string) Target { return Target{AccountID: id, Address: addr} }
func remote(addr string) Target          { return Target{Address: addr, Remote: true} }

func hosted(ts ...Target) Resolution { return Resolution{Hosted: true, Targets: ts} }

var (
	alice = local(4, "alice@hosted.test")
	bob   = local(2, "bob@hosted.test")
	carol = local(6, "carol@hosted.test")
)

func TestResolve(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		addr     string
		sep      string // DetailSep
		fallback string // PostmasterFallback
		want     Resolution
		err      error
	}{
		{name: "not hosted", addr: "user@remote.example", want: Resolution{}},
		{name: "not hosted with routing chars", addr: "a%b@remote.example", want: Resolution{}},
		{name: "IPv4 literal", addr: "user@[192.0.2.1]", want: Resolution{}},
		{name: "IPv6 literal", addr: "user@[IPv6:2001:db8::1]", want: Resolution{}},
		{name: "percent hack", addr: "a%b@hosted.test", err: ErrRouting},
		{name: "bang path", addr: "b!a@hosted.test", err: ErrRouting},
		{name: "quoted at", addr: `"a@b"@hosted.test`, err: ErrRouting},
		{name: "account", addr: "user@hosted.test", want: hosted(local(1, "user@hosted.test"))},
		{name: "account case-insensitive", addr: "User@HOSTED.test", want: hosted(local(1, "user@hosted.test"))},
		{name: "UTF-8 account", addr: "JÖRG@例子.test", want: hosted(local(12, "jörg@例子.test"))},
		{name: "quoted plain local part", addr: `"user"@hosted.test`, want: hosted(local(1, "user@hosted.test"))},
		{name: "disabled account", addr: "dave@hosted.test", err: ErrNoSuchUser},
		{name: "unknown", addr: "nobody@hosted.test", err: ErrNoSuchUser},
		{name: "detail stripped", addr: "user+tag@hosted.test", sep: "+", want: hosted(local(1, "user@hosted.test"))},
		{name: "detail with several separators", addr: "user+a+b@hosted.test", sep: "+", want: hosted(local(1, "user@hosted.test"))},
		{name: "detail disabled", addr: "user+tag@hosted.test", err: ErrNoSuchUser},
		{name: "exact wins over detail", addr: "bob+tag@hosted.test", sep: "+", want: hosted(local(3, "bob+tag@hosted.test"))},
		{name: "other detail of bob", addr: "bob+other@hosted.test", sep: "+", want: hosted(bob)},
		{name: "leading separator not split", addr: "+user@hosted.test", sep: "+", err: ErrNoSuchUser},
		{name: "detail on alias", addr: "list+x@hosted.test", sep: "+", want: hosted(alice, bob)},
		{name: "detail on disabled account", addr: "dave+x@hosted.test", sep: "+", err: ErrNoSuchUser},
		{name: "alias to one", addr: "one@hosted.test", want: hosted(alice)},
		{name: "alias to several", addr: "team@hosted.test", want: hosted(alice, bob)},
		{name: "alias case-insensitive", addr: "TEAM@hosted.test", want: hosted(alice, bob)},
		{name: "alias to remote keeps case", addr: "fwd@hosted.test", want: hosted(remote("Someone@Remote.example"))},
		{name: "alias mixed and deduplicated", addr: "mixed@hosted.test", want: hosted(alice, remote("x@remote.example"), remote("y@[192.0.2.1]"))},
		{name: "nested alias", addr: "nested@hosted.test", want: hosted(alice, bob, carol)},
		{name: "diamond is not a loop", addr: "diamond@hosted.test", want: hosted(alice, bob, carol)},
		{name: "dedup", addr: "dup@hosted.test", want: hosted(alice)},
		{name: "alias loop", addr: "loop1@hosted.test", err: ErrAliasLoop},
		{name: "alias self loop", addr: "self@hosted.test", err: ErrAliasLoop},
		{name: "alias 10 levels", addr: "chain2@hosted.test", want: hosted(alice)},
		{name: "alias 11 levels", addr: "chain1@hosted.test", err: ErrAliasLoop},
		{name: "alias 12 levels", addr: "chain0@hosted.test", err: ErrAliasLoop},
		{name: "stale alias members skipped", addr: "stale@hosted.test", want: hosted(alice)},
		{name: "all alias members stale", addr: "allstale@hosted.test", err: ErrNoSuchUser},
		{name: "empty alias", addr: "empty@hosted.test", err: ErrNoSuchUser},
		{name: "postmaster placeholder", addr: "postmaster@hosted.test", want: hosted(Target{Address: "postmaster@hosted.test", Postmaster: true})},
		{name: "postmaster any case", addr: "PostMaster@hosted.test", want: hosted(Target{Address: "postmaster@hosted.test", Postmaster: true})},
		{name: "postmaster fallback account", addr: "postmaster@hosted.test", fallback: "alice@hosted.test", want: hosted(alice)},
		{name: "postmaster fallback alias", addr: "postmaster@hosted.test", fallback: "pmalias@hosted.test", want: hosted(alice, bob)},
		{name: "postmaster fallback dangling", addr: "postmaster@hosted.test", fallback: "ghost@hosted.test", want: hosted(Target{Address: "postmaster@hosted.test", Postmaster: true})},
		{name: "postmaster account wins", addr: "postmaster@catchall.test", fallback: "alice@hosted.test", want: hosted(local(11, "postmaster@catchall.test"))},
		{name: "catch-all", addr: "anything@catchall.test", want: hosted(local(10, "catch@catchall.test"))},
		{name: "catch-all after detail", addr: "anything+x@catchall.test", sep: "+", want: hosted(local(10, "catch@catchall.test"))},
		{name: "catch-all exact account wins", addr: "catch@catchall.test", want: hosted(local(10, "catch@catchall.test"))},
		{name: "catch-all to alias", addr: "anything@catchalias.test", want: hosted(alice, bob)},
		{name: "catch-all dangling", addr: "anything@dangling.test", err: ErrNoSuchUser},
		{name: "catch-all does not take routing", addr: "a%b@catchall.test", err: ErrRouting},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr, err := address.Parse(tt.addr, address.Options{AllowUTF8: true})
			if err != nil {
				t.Fatal(err)
			}
			d := &Directory{Backend: newFake(), DetailSep: tt.sep, PostmasterFallback: tt.fallback}
			got, err := d.Resolve(context.Background(), addr)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Resolve(%s) = %+v, %v; want error %v", tt.addr, got, err, tt.err)
				}
				if !reflect.DeepEqual(got, Resolution{}) {
					t.Errorf("Resolve(%s) returned %+v with error", tt.addr, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve(%s) error: %v", tt.addr, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Resolve(%s) = %+v, want %+v", tt.addr, got, tt.want)
			}
		})
	}
}

func TestResolveBackendError(t *testing.T) {
	t.Parallel()
	boom := errors.New("disk on fire")
	for _, name := range []string{"hosted.test", "user@hosted.test", "team@hosted.test", "alice@hosted.test"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFake()
			f.fail = map[string]error{name: boom}
			d := &Directory{Backend: f}
			addr := address.Address{Local: "team", Domain: "hosted.test"}
			if name == "user@hosted.test" {
				addr.Local = "user"
			}
			_, err := d.Resolve(context.Background(), addr)
			if !errors.Is(err, boom) {
				t.Fatalf("Resolve(%s) error %v, want %v", addr, err, boom)
			}
			for _, e := range []error{ErrNoSuchUser, ErrRouting, ErrAliasLoop, ErrNotFound} {
				if errors.Is(err, e) {
					t.Errorf("backend failure reported as %v", e)
				}
			}
		})
	}
}

// TestResolveNoCache checks that a change in the backend is seen by the next
// call: the CLI writes to the store while the server runs.
func TestResolveNoCache(t *testing.T) {
	t.Parallel()
	f := newFake()
	d := &Directory{Backend: f}
	addr := address.Address{Local: "new", Domain: "hosted.test"}
	if _, err := d.Resolve(context.Background(), addr); !errors.Is(err, ErrNoSuchUser) {
		t.Fatalf("before: %v, want ErrNoSuchUser", err)
	}
	f.addAccount(Account{ID: 99, Address: "new@hosted.test"})
	got, err := d.Resolve(context.Background(), addr)
	if err != nil || !reflect.DeepEqual(got, hosted(local(99, "new@hosted.test"))) {
		t.Fatalf("after: %+v, %v", got, err)
	}
}

func TestResolveZeroAddress(t *testing.T) {
	t.Parallel()
	d := &Directory{Backend: newFake()}
	got, err := d.Resolve(context.Background(), address.Address{})
	if err != nil || got.Hosted {
		t.Fatalf("Resolve(zero) = %+v, %v", got, err)
	}
}

// viewBackend is a Viewer over a fakeBackend: every lookup through it must come from a
// view, and it counts the views.
type viewBackend struct {
	*fakeBackend
	views   int
	direct  int // lookups on the backend itself
	perView []int
}

func (v *viewBackend) GetDomain(ctx context.Context, name string) (Domain, error) {
	v.direct++
	return v.fakeBackend.GetDomain(ctx, name)
}

func (v *viewBackend) View() Backend {
	v.views++
	v.perView = append(v.perView, 0)
	return &countingView{v: v, i: len(v.perView) - 1}
}

type countingView struct {
	v *viewBackend
	i int
}

func (c *countingView) GetDomain(ctx context.Context, name string) (Domain, error) {
	c.v.perView[c.i]++
	return c.v.fakeBackend.GetDomain(ctx, name)
}

func (c *countingView) GetAccount(ctx context.Context, address string) (Account, error) {
	c.v.perView[c.i]++
	return c.v.fakeBackend.GetAccount(ctx, address)
}

func (c *countingView) GetAlias(ctx context.Context, address string) ([]string, error) {
	c.v.perView[c.i]++
	return c.v.fakeBackend.GetAlias(ctx, address)
}

// TestResolveUsesOneView: a Backend that offers views (the store: one look at its change
// stamp per view) answers all the lookups of one Resolve from one view, and each Resolve
// takes a new one, so that a change between two recipients is seen by the second.
func TestResolveUsesOneView(t *testing.T) {
	f := newFake()
	f.addAccount(Account{ID: 1, Address: "alice@hosted.test"})
	v := &viewBackend{fakeBackend: f}
	d := &Directory{Backend: v, DetailSep: "+"}
	ctx := context.Background()
	parse := func(s string) address.Address {
		a, err := address.Parse(s, address.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	// An alias with a local and a remote target: domain, account, alias, account, and the
	// remote target's domain, all from one view.
	res, err := d.Resolve(ctx, parse("mixed@hosted.test"))
	if err != nil || len(res.Targets) != 3 {
		t.Fatalf("Resolve = %+v, %v", res, err)
	}
	if v.views != 1 || v.direct != 0 || v.perView[0] < 4 {
		t.Fatalf("views %d, lookups per view %v, direct lookups %d; want 1 view with every lookup", v.views, v.perView, v.direct)
	}
	f.addAccount(Account{ID: 2, Address: "bob@hosted.test"})
	res, err = d.Resolve(ctx, parse("bob@hosted.test"))
	if err != nil || len(res.Targets) != 1 || res.Targets[0].AccountID != 2 {
		t.Fatalf("Resolve after a change = %+v, %v", res, err)
	}
	if v.views != 2 {
		t.Errorf("views %d after two Resolve calls, want 2", v.views)
	}
}
