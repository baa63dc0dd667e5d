package outbound

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"yubin/internal/dns"
)

func TestParsePolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want *Policy // nil: an error
	}{
		{"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
			&Policy{Mode: ModeEnforce, MX: []string{"mail.example.com", "*.example.net", "backupmx.example.com"}, MaxAge: 604800 * time.Second}},
		// LF only, spaces around values, unknown fields, case, trailing dots.
		{"version:STSv1\nmode :  Testing \nfoo: bar\nmx: MX.Example.COM.\nmax_age:86400",
			&Policy{Mode: ModeTesting, MX: []string{"mx.example.com"}, MaxAge: 86400 * time.Second}},
		{"version: STSv1\nmode: none\nmax_age: 0\n", &Policy{Mode: ModeNone}},
		// max_age above the maximum is lowered to it; the first of a repeated field counts.
		{"version: STSv1\nmode: enforce\nmode: none\nmx: a.test\nmax_age: 9999999999\n",
			&Policy{Mode: ModeEnforce, MX: []string{"a.test"}, MaxAge: maxMaxAge}},
		{"", nil},
		{"version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n", nil},
		{"mode: enforce\nmx: a.test\nmax_age: 1\n", nil},
		{"version: STSv1\nmode: enforce\nmax_age: 1\n", nil},               // no mx
		{"version: STSv1\nmode: sometimes\nmx: a.test\nmax_age: 1\n", nil}, // bad mode
		{"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n", nil},
		{"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 12345678901\n", nil}, // 11 digits
		{"version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 1\n", nil},
		{"version: STSv1\nmode: enforce\nmx: *.*.test\nmax_age: 1\n", nil},
		{"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 1\ngarbage\n", nil},
	}
	for _, tt := range tests {
		got, err := ParsePolicy(tt.in)
		if tt.want == nil {
			if err == nil {
				t.Errorf("ParsePolicy(%q) = %+v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParsePolicy(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestPolicyMatch(t *testing.T) {
	t.Parallel()
	p := &Policy{Mode: ModeEnforce, MX: []string{"mail.example.com", "*.example.net"}}
	for host, want := range map[string]bool{
		"mail.example.com":  true,
		"MAIL.example.com.": true,
		"mx.example.com":    false,
		"mx1.example.net":   true,
		"example.net":       false, // the wildcard needs a label
		"a.b.example.net":   false, // and only one (RFC 8461 4.1)
		".example.net":      false,
	} {
		if got := p.Match(host); got != want {
			t.Errorf("Match(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestParseSTSRecord(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"v=STSv1; id=20160831085700Z;":           "20160831085700Z",
		"v=STSv1;id=abc":                         "abc",
		"v=STSv1; ext=1; id=x1 ; ":               "x1",
		"v=STSv2; id=abc":                        "",
		"id=abc; v=STSv1":                        "",
		"v=STSv1":                                "",
		"v=STSv1; id=has-dash":                   "",
		"v=STSv1; id=" + strings.Repeat("a", 33): "",
	} {
		id, err := parseSTSRecord(in)
		if id != want || (err == nil) != (want != "") {
			t.Errorf("parseSTSRecord(%q) = %q, %v; want %q", in, id, err, want)
		}
	}
}

// FuzzParsePolicy checks that what ParsePolicy accepts, String writes in a
// form ParsePolicy reads back to the same policy.
func FuzzParsePolicy(f *testing.F) {
	f.Add("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n")
	f.Add("version: STSv1\nmode: none\nmax_age: 0")
	f.Add("version:STSv1\nmode:testing\nmx:A.B.\nmax_age:99999999999\nx_y: z\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		p, err := ParsePolicy(in)
		if err != nil {
			return
		}
		text := p.String()
		q, err := ParsePolicy(text)
		if err != nil {
			t.Fatalf("ParsePolicy(%q) = %+v, but its String %q does not parse: %v", in, p, text, err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip: %+v -> %q -> %+v", p, text, q)
		}
		if p.MaxAge < 0 || p.MaxAge > maxMaxAge || p.MaxAge%time.Second != 0 {
			t.Fatalf("MaxAge %v", p.MaxAge)
		}
	})
}

func FuzzParseSTSRecord(f *testing.F) {
	f.Add("v=STSv1; id=20160831085700Z;")
	f.Add("v=STSv1;id=a;id=b")
	f.Fuzz(func(t *testing.T, in string) {
		id, err := parseSTSRecord(in)
		if err != nil {
			return
		}
		if len(id) < 1 || len(id) > 32 || !alnumOnly(id) || !strings.HasPrefix(strings.TrimLeft(in, " \t"), "v=STSv1") {
			t.Fatalf("parseSTSRecord(%q) = %q", in, id)
		}
	})
}

const testPolicy = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 3600\r\n"

// policyServer serves body at /.well-known/mta-sts.txt over HTTPS and
// counts the requests.
func policyServer(t *testing.T, body *atomic.Value, hits *atomic.Int32) *httptest.Server {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		switch b := body.Load().(string); b {
		case "redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "html":
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte(testPolicy))
		default:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write([]byte(b))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPFetcher(t *testing.T) {
	t.Parallel()
	var body atomic.Value
	body.Store(testPolicy)
	var hits atomic.Int32
	srv := policyServer(t, &body, &hits)
	r := &dns.Mock{TXT: map[string][]string{"_mta-sts.example.test": {"v=STSv1; id=one;", "unrelated text"}}}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := &HTTPFetcher{
		Resolver:   r,
		HTTPClient: srv.Client(),
		Cache:      NewPolicyCache(),
		URL:        func(domain string) string { return srv.URL + "/.well-known/mta-sts.txt" },
		Now:        func() time.Time { return now },
	}
	ctx := t.Context()
	want := &Policy{Mode: ModeEnforce, MX: []string{"mx.example.test"}, MaxAge: time.Hour}

	p, err := f.Policy(ctx, "Example.Test")
	if err != nil || !reflect.DeepEqual(p, want) {
		t.Fatalf("Policy = %+v, %v", p, err)
	}
	// Same id: the cache answers.
	if p, err := f.Policy(ctx, "example.test"); err != nil || !reflect.DeepEqual(p, want) || hits.Load() != 1 {
		t.Fatalf("cached: %+v, %v, %d fetches", p, err, hits.Load())
	}
	// A new id: fetched again.
	r.TXT["_mta-sts.example.test"] = []string{"v=STSv1; id=two"}
	body.Store(strings.Replace(testPolicy, "enforce", "testing", 1))
	if p, _ := f.Policy(ctx, "example.test"); p.Mode != ModeTesting || hits.Load() != 2 {
		t.Fatalf("new id: %+v, %d fetches", p, hits.Load())
	}
	// The TXT record gone, or failing: the cached policy holds until max_age.
	delete(r.TXT, "_mta-sts.example.test")
	if p, _ := f.Policy(ctx, "example.test"); p == nil || p.Mode != ModeTesting {
		t.Fatalf("no record, cached: %+v", p)
	}
	now = now.Add(time.Hour)
	if p, err := f.Policy(ctx, "example.test"); p != nil || err != nil {
		t.Fatalf("no record, expired: %+v, %v", p, err)
	}
	// A failing fetch without a cache is an error; with one, the cache.
	r.TXT["_mta-sts.example.test"] = []string{"v=STSv1; id=three"}
	body.Store("html")
	if p, err := f.Policy(ctx, "example.test"); p != nil || err == nil || !strings.Contains(err.Error(), "text/html") {
		t.Fatalf("wrong media type: %+v, %v", p, err)
	}
	body.Store("redirect")
	if _, err := f.Policy(ctx, "example.test"); err == nil || !strings.Contains(err.Error(), "302") {
		t.Fatalf("redirect: %v", err)
	}
	body.Store(testPolicy)
	if p, err := f.Policy(ctx, "example.test"); err != nil || p.Mode != ModeEnforce {
		t.Fatalf("fetch: %+v, %v", p, err)
	}
	r.TXT["_mta-sts.example.test"] = []string{"v=STSv1; id=four"}
	body.Store("version: STSv1\nbroken")
	if p, err := f.Policy(ctx, "example.test"); err != nil || p.Mode != ModeEnforce {
		t.Fatalf("bad policy with a cache: %+v, %v", p, err)
	}
	// Two records: no policy (RFC 8461 3.1).
	r.TXT["_mta-sts.other.test"] = []string{"v=STSv1; id=a", "v=STSv1; id=b"}
	if p, err := f.Policy(ctx, "other.test"); p != nil || err != nil {
		t.Fatalf("two records: %+v, %v", p, err)
	}
	// No record: no policy. DNS failure: an error.
	if p, err := f.Policy(ctx, "none.test"); p != nil || err != nil {
		t.Fatalf("no record: %+v, %v", p, err)
	}
	r.Fail = map[string]bool{"_mta-sts.broken.test": true}
	if _, err := f.Policy(ctx, "broken.test"); err == nil || !dns.Temporary(err) {
		t.Fatalf("DNS failure: %v", err)
	}
}

// Without an HTTPClient, the fetcher resolves the policy host through its
// Resolver, never the system's, and verifies against TLSRoots.
func TestHTTPFetcherDefaultClient(t *testing.T) {
	t.Parallel()
	var body atomic.Value
	body.Store(testPolicy)
	var hits atomic.Int32
	srv := policyServer(t, &body, &hits)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	roots := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	r := &dns.Mock{
		TXT: map[string][]string{"_mta-sts.example.test": {"v=STSv1; id=1"}},
		// httptest's certificate is for example.com (and 127.0.0.1).
		IP: map[string][]net.IP{"example.com": {net.IPv4(127, 0, 0, 1)}},
	}
	f := &HTTPFetcher{
		Resolver: r,
		TLSRoots: roots,
		URL:      func(string) string { return "https://example.com:" + port + "/.well-known/mta-sts.txt" },
	}
	p, err := f.Policy(t.Context(), "example.test")
	if err != nil || p.Mode != ModeEnforce {
		t.Fatalf("Policy = %+v, %v", p, err)
	}
	// A name the resolver does not know fails, even if the system knows it.
	f.URL = func(string) string { return "https://localhost:" + port + "/.well-known/mta-sts.txt" }
	if _, err := f.Policy(t.Context(), "example.test"); !errors.Is(err, dns.ErrNotFound) {
		t.Fatalf("unknown host: %v", err)
	}
}

var _ MTASTSFetcher = (*HTTPFetcher)(nil)

func TestPolicyCacheConcurrent(t *testing.T) {
	t.Parallel()
	c := NewPolicyCache()
	now := time.Now()
	done := make(chan struct{})
	for i := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := range 100 {
				c.put("d", cachedPolicy{id: string(rune('a' + i)), policy: &Policy{}, expires: now.Add(time.Duration(j) * time.Second)})
				c.get("d", now)
			}
		}()
	}
	for range 8 {
		<-done
	}
}
