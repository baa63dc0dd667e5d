package outbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"yubin/internal/dns"
)

// MTASTSFetcher finds the MTA-STS policy of a domain. A nil policy and a
// nil error mean the domain has none.
type MTASTSFetcher interface {
	Policy(ctx context.Context, domain string) (*Policy, error)
}

// maxPolicySize bounds the policy body (RFC 8461 3.3 suggests 64 KiB).
const maxPolicySize = 64 * 1024

// fetchTimeout bounds one policy fetch when HTTPFetcher builds its own
// client (RFC 8461 3.3 suggests a minute at most).
const fetchTimeout = time.Minute

// HTTPFetcher is the MTASTSFetcher of RFC 8461 3: it looks up the TXT
// record at _mta-sts.<domain>, fetches the policy over HTTPS when the
// record's id is not the cached one, and caches policies for their
// max_age. When the record or the fetch fails, a cached policy that has not
// expired is used (RFC 8461 5.1); without one, the domain is treated as
// having no policy.
type HTTPFetcher struct {
	Resolver dns.Resolver
	// HTTPClient fetches the policy; nil means a client with a one-minute
	// timeout that resolves names through Resolver and verifies against
	// TLSRoots. Redirects are never followed (RFC 8461 3.3), whatever the
	// client says.
	HTTPClient *http.Client
	TLSRoots   *x509.CertPool // for the default client; nil = system roots
	Cache      *PolicyCache   // nil = no caching
	// URL returns where the policy of domain is; nil means
	// "https://mta-sts.<domain>/.well-known/mta-sts.txt". Tests point it
	// at a loopback server.
	URL func(domain string) string
	Now func() time.Time // nil = time.Now
}

// PolicyCache keeps fetched policies in memory by domain. It is safe for
// concurrent use.
type PolicyCache struct {
	mu sync.Mutex
	m  map[string]cachedPolicy
}

type cachedPolicy struct {
	id      string
	policy  *Policy
	expires time.Time
}

// NewPolicyCache returns an empty cache.
func NewPolicyCache() *PolicyCache {
	return &PolicyCache{m: map[string]cachedPolicy{}}
}

func (c *PolicyCache) get(domain string, now time.Time) (cachedPolicy, bool) {
	if c == nil {
		return cachedPolicy{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[domain]
	if ok && !now.Before(e.expires) {
		delete(c.m, domain)
		return cachedPolicy{}, false
	}
	return e, ok
}

func (c *PolicyCache) put(domain string, e cachedPolicy) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[domain] = e
}

func (f *HTTPFetcher) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

// Policy returns the policy of domain; see HTTPFetcher.
func (f *HTTPFetcher) Policy(ctx context.Context, domain string) (*Policy, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	now := f.now()
	cached, haveCached := f.Cache.get(domain, now)
	orCached := func(err error) (*Policy, error) {
		if haveCached {
			return cached.policy, nil
		}
		return nil, err
	}

	txts, err := f.Resolver.LookupTXT(ctx, "_mta-sts."+domain)
	if err != nil {
		if errors.Is(err, dns.ErrNotFound) {
			return orCached(nil)
		}
		return orCached(fmt.Errorf("mta-sts: %w", err))
	}
	var ids []string
	for _, t := range txts {
		if !strings.HasPrefix(t, "v=STSv1") {
			continue // RFC 8461 3.1: records of other kinds are ignored
		}
		id, err := parseSTSRecord(t)
		if err != nil {
			return orCached(err)
		}
		ids = append(ids, id)
	}
	if len(ids) != 1 {
		// None, or several: RFC 8461 3.1 treats several as none.
		return orCached(nil)
	}
	if haveCached && cached.id == ids[0] {
		return cached.policy, nil
	}
	p, err := f.fetch(ctx, domain)
	if err != nil {
		return orCached(err)
	}
	f.Cache.put(domain, cachedPolicy{id: ids[0], policy: p, expires: now.Add(p.MaxAge)})
	return p, nil
}

// fetch gets and parses the policy of domain over HTTPS (RFC 8461 3.3).
func (f *HTTPFetcher) fetch(ctx context.Context, domain string) (*Policy, error) {
	url := "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
	if f.URL != nil {
		url = f.URL(domain)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("mta-sts: %w", err)
	}
	resp, err := f.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("mta-sts: fetch policy of %s: %w", domain, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("mta-sts: fetch policy of %s: HTTP status %s", domain, resp.Status)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return nil, fmt.Errorf("mta-sts: policy of %s has media type %q, not text/plain", domain, resp.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("mta-sts: read policy of %s: %w", domain, err)
	}
	if len(body) > maxPolicySize {
		return nil, fmt.Errorf("mta-sts: policy of %s is larger than %d bytes", domain, maxPolicySize)
	}
	return ParsePolicy(string(body))
}

// client returns the HTTP client to use, never following redirects.
func (f *HTTPFetcher) client() *http.Client {
	var cl http.Client
	if f.HTTPClient != nil {
		cl = *f.HTTPClient
	} else {
		cl = http.Client{
			Timeout: fetchTimeout,
			Transport: &http.Transport{
				DialContext:     f.dial,
				TLSClientConfig: &tls.Config{RootCAs: f.TLSRoots, MinVersion: tls.VersionTLS12},
				Proxy:           nil, // a policy comes from the domain, not from a proxy's view of it
			},
		}
	}
	cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cl
}

// dial connects to addr resolving its host through f.Resolver (STYLE.md 6:
// no DNS outside the injected resolver), trying each address in turn.
func (f *HTTPFetcher) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	if net.ParseIP(host) != nil {
		return d.DialContext(ctx, network, addr)
	}
	ips, err := f.Resolver.LookupIP(ctx, host)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for _, ip := range interleave(ips, maxAddrsPerHost) {
		c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return nil, lastErr
}
