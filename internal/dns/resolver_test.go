package dns

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"yubin/internal/testenv/fakedns"
)

func newTestResolver(t *testing.T) (*fakedns.Server, Resolver) {
	t.Helper()
	srv := fakedns.Start(t)
	return srv, NewResolver([]string{srv.Addr()}, 2*time.Second)
}

func TestLookupMX(t *testing.T) {
	t.Parallel()
	srv, r := newTestResolver(t)
	srv.AddMX("example.test", 10, "MX1.example.test")
	srv.AddMX("example.test", 20, "mx2.example.test.")
	mxs, err := r.LookupMX(t.Context(), "EXAMPLE.test.")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mx := range mxs {
		got = append(got, mx.Host+" "+string(rune('0'+mx.Pref/10)))
	}
	slices.Sort(got)
	if want := []string{"mx1.example.test 1", "mx2.example.test 2"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestLookupErrors(t *testing.T) {
	t.Parallel()
	srv, r := newTestResolver(t)
	srv.AddA("a-only.test", "192.0.2.1")
	srv.AddTXT("_mta-sts.parent.test", "v=STSv1; id=1")
	srv.SetServFail("broken.test")
	srv.SetNullMX("null.test")

	tests := []struct {
		name                     string
		notFound, noRecords, tmp bool
	}{
		{"nowhere.test", true, false, false},
		{"a-only.test", true, true, false},
		{"parent.test", true, true, false}, // empty non-terminal: NODATA, not NXDOMAIN
		{"broken.test", false, false, true},
	}
	for _, tt := range tests {
		_, err := r.LookupMX(t.Context(), tt.name)
		if err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		if got := errors.Is(err, ErrNotFound); got != tt.notFound {
			t.Errorf("%s: Is(ErrNotFound) = %v (%v)", tt.name, got, err)
		}
		if got := errors.Is(err, ErrNoRecords); got != tt.noRecords {
			t.Errorf("%s: Is(ErrNoRecords) = %v (%v)", tt.name, got, err)
		}
		if got := Temporary(err); got != tt.tmp {
			t.Errorf("%s: Temporary = %v (%v)", tt.name, got, err)
		}
	}

	mxs, err := r.LookupMX(t.Context(), "null.test")
	if err != nil || len(mxs) != 1 || mxs[0].Host != "." || mxs[0].Pref != 0 {
		t.Errorf("null MX: %v %v", mxs, err)
	}
}

func TestLookupIP(t *testing.T) {
	t.Parallel()
	srv, r := newTestResolver(t)
	srv.AddA("mx.test", "192.0.2.1")
	srv.AddAAAA("mx.test", "2001:db8::1")
	srv.AddAAAA("v6only.test", "2001:db8::2")
	ips, err := r.LookupIP(t.Context(), "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ip := range ips {
		got = append(got, ip.String())
	}
	slices.Sort(got)
	if want := []string{"192.0.2.1", "2001:db8::1"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if ips, err := r.LookupIP(t.Context(), "v6only.test"); err != nil || len(ips) != 1 {
		t.Errorf("v6only: %v %v", ips, err)
	}
	if _, err := r.LookupIP(t.Context(), "missing.test"); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoRecords) {
		t.Errorf("missing: %v", err)
	}
}

// A TXT answer bigger than the EDNS0 buffer is truncated over UDP; the
// resolver must ask again over TCP and get all of it.
func TestLookupTXTTruncatedFallsBackToTCP(t *testing.T) {
	t.Parallel()
	srv, r := newTestResolver(t)
	var want []string
	for i := range 6 {
		s := strings.Repeat(string(rune('a'+i)), 600)
		srv.AddTXT("big.test", s)
		want = append(want, s)
	}
	got, err := r.LookupTXT(t.Context(), "big.test")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("got %d records, want %d (joined strings)", len(got), len(want))
	}
}

func TestLookupUnicodeName(t *testing.T) {
	t.Parallel()
	srv, r := newTestResolver(t)
	srv.AddMX("xn--r8jz45g.jp", 10, "mx.xn--r8jz45g.jp") // 例え.jp
	mxs, err := r.LookupMX(t.Context(), "例え.jp")
	if err != nil || len(mxs) != 1 || mxs[0].Host != "mx.xn--r8jz45g.jp" {
		t.Errorf("got %v %v", mxs, err)
	}
}

// A server that never answers is skipped after the timeout, and the next
// server answers; when none answers the failure is temporary.
func TestLookupServerFailover(t *testing.T) {
	t.Parallel()
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	srv := fakedns.Start(t)
	srv.AddMX("example.test", 10, "mx.example.test")

	r := NewResolver([]string{dead.LocalAddr().String(), srv.Addr()}, 200*time.Millisecond)
	if mxs, err := r.LookupMX(t.Context(), "example.test"); err != nil || len(mxs) != 1 {
		t.Fatalf("failover: %v %v", mxs, err)
	}
	r = NewResolver([]string{dead.LocalAddr().String()}, 200*time.Millisecond)
	_, err = r.LookupMX(t.Context(), "example.test")
	if !Temporary(err) || errors.Is(err, ErrNotFound) {
		t.Errorf("dead server: %v, want temporary", err)
	}
}

func TestLookupCancelled(t *testing.T) {
	t.Parallel()
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	r := NewResolver([]string{dead.LocalAddr().String()}, time.Minute)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err = r.LookupTXT(ctx, "example.test")
	if !Temporary(err) {
		t.Errorf("err = %v, want temporary", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cancel took %v", d)
	}
}

func TestNewResolverAddsPort(t *testing.T) {
	t.Parallel()
	r := NewResolver([]string{"192.0.2.53", "2001:db8::53", "[2001:db8::54]:5353"}, 0).(*resolver)
	want := []string{"192.0.2.53:53", "[2001:db8::53]:53", "[2001:db8::54]:5353"}
	if !slices.Equal(r.servers, want) {
		t.Errorf("servers = %v, want %v", r.servers, want)
	}
}
