package outbound

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"yubin/internal/dns"
	"yubin/internal/smtp"
)

// Limits on the work of one Deliver: a destination with more MX hosts or
// addresses is served by the first ones (Postfix has similar limits).
const (
	maxHosts        = 10
	maxAddrsPerHost = 4
)

// hop is one host to try.
type hop struct {
	name string   // MX host name, route host or domain literal: SNI and certificate name
	port string   // "25"
	ips  []net.IP // known addresses (IP routes and literals); nil means look name up
}

// plan is where and how one Delivery goes.
type plan struct {
	domain string
	hops   []hop
	route  *Route // nil for delivery through the MX records
	// policy is the domain's MTA-STS policy when it is "enforce" or
	// "testing", else nil.
	policy *Policy
	// verify: a certificate that does not verify makes the host unusable;
	// why says which rule demands it, for the reply.
	verify bool
	// requireTLS: STARTTLS (or implicit TLS) is mandatory.
	requireTLS bool
	why        string
}

func (p *plan) tlsMode() string {
	if p.route != nil && p.route.TLS != "" {
		return strings.ToLower(p.route.TLS)
	}
	return TLSOpportunistic
}

// plan finds the hosts for d and the TLS rules that apply. A reply is a
// final answer for every recipient: the domain has no mail server.
func (c *Client) plan(ctx context.Context, d *Delivery, m *message) (*plan, *smtp.Reply) {
	domain := strings.ToLower(strings.TrimSuffix(d.Domain, "."))
	p := &plan{domain: domain}
	port := strconv.Itoa(cmp.Or(c.Port, 25))

	if r, ok := c.route(domain); ok {
		p.route = &r
		mode := p.tlsMode()
		switch mode {
		case TLSStartTLS, TLSImplicit:
			p.requireTLS, p.verify = true, !r.InsecureSkipVerify
			p.why = "the route to " + r.Host + " requires TLS"
		case TLSOpportunistic, TLSNone:
		default:
			return nil, smtp.Replyf(451, "4.3.5", "outbound: route for %s has unknown TLS mode %q", domain, r.TLS)
		}
		if d.RequireTLS {
			// RFC 8689 4.2.1: TLS with a verified certificate all the way;
			// the route itself is authenticated by configuration.
			p.requireTLS, p.verify = true, true
			p.why = "the message requires TLS (REQUIRETLS)"
		}
		host, rport, err := net.SplitHostPort(r.Host)
		if err != nil {
			host, rport = r.Host, "25"
			if mode == TLSImplicit {
				rport = "465"
			}
		}
		h := hop{name: strings.TrimSuffix(strings.ToLower(host), "."), port: rport}
		if ip := net.ParseIP(host); ip != nil {
			h.ips = []net.IP{ip}
		}
		p.hops = []hop{h}
		return p, nil
	}

	if lit, ok := strings.CutPrefix(domain, "["); ok {
		// RFC 5321 4.1.3: an address literal names the host itself.
		lit = strings.TrimSuffix(lit, "]")
		if v6, ok := strings.CutPrefix(lit, "ipv6:"); ok {
			lit = v6
		}
		ip, err := netip.ParseAddr(lit)
		if err != nil {
			return nil, smtp.Replyf(550, "5.1.2", "invalid address literal %s", d.Domain)
		}
		p.hops = []hop{{name: d.Domain, port: port, ips: []net.IP{ip.AsSlice()}}}
		return p, nil
	}

	if c.Resolver == nil {
		return nil, smtp.NewReply(451, "4.3.5", "outbound: no DNS resolver configured")
	}
	mxs, err := c.Resolver.LookupMX(ctx, domain)
	switch {
	case err == nil:
	case errors.Is(err, dns.ErrNoRecords):
		// RFC 5321 5.1: no MX records, so the domain is its own, implicit
		// MX with preference 0.
		mxs = []*net.MX{{Host: domain, Pref: 0}}
	case errors.Is(err, dns.ErrNotFound):
		return nil, smtp.Replyf(550, "5.1.2", "the domain %s does not exist (DNS: no such domain)", domain)
	case dns.Temporary(err):
		return nil, smtp.Replyf(451, "4.4.3", "DNS lookup of the MX of %s failed, will retry: %v", domain, err)
	default:
		return nil, smtp.Replyf(550, "5.1.2", "cannot look up the MX of %s: %v", domain, err)
	}
	if isNullMX(mxs) {
		// RFC 7505 3: the domain accepts no mail; no retries.
		return nil, smtp.Replyf(556, "5.1.10", "the domain %s accepts no mail (null MX, RFC 7505)", domain)
	}
	p.hops = orderMX(mxs, port)

	if c.MTASTS != nil {
		pol, err := c.MTASTS.Policy(ctx, domain)
		if err != nil {
			// RFC 8461 5: without a policy (and none cached) deliver as
			// without MTA-STS.
			c.logger().Warn("outbound: MTA-STS policy unavailable", "domain", domain, "err", err)
		} else if pol != nil && (pol.Mode == ModeEnforce || pol.Mode == ModeTesting) {
			p.policy = pol
		}
	}
	if p.policy != nil && p.policy.Mode == ModeEnforce {
		p.requireTLS, p.verify = true, true
		p.why = "the MTA-STS policy of " + domain + " is enforce"
	}
	if d.RequireTLS {
		p.requireTLS, p.verify = true, true
		p.why = "the message requires TLS (REQUIRETLS)"
	}
	return p, nil
}

// refuseHost returns why h must not be used, or nil.
func (p *plan) refuseHost(h hop, d *Delivery) *smtp.Reply {
	if p.route != nil {
		return nil
	}
	matched := p.policy != nil && p.policy.Match(h.name)
	if p.policy != nil && p.policy.Mode == ModeEnforce && !matched {
		// RFC 8461 4.1, 5: only MX hosts the policy names may be used.
		return smtp.Replyf(451, "4.7.5", "MX host %s is not allowed by the MTA-STS policy of %s", h.name, p.domain)
	}
	if d.RequireTLS && !matched {
		// RFC 8689 4.2.1: the MX must be authenticated, by DNSSEC (which
		// yubin does not validate) or by an MTA-STS policy.
		return smtp.Replyf(550, "5.7.30", "REQUIRETLS: MX host %s of %s is not authenticated by an MTA-STS policy", h.name, p.domain)
	}
	return nil
}

// isNullMX reports the null MX of RFC 7505: exactly one record, ".".
func isNullMX(mxs []*net.MX) bool {
	return len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == "")
}

// orderMX sorts MX records by preference, in random order among equal
// preferences (RFC 5321 5.1), and drops duplicates and null entries.
func orderMX(mxs []*net.MX, port string) []hop {
	rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
	slices.SortStableFunc(mxs, func(a, b *net.MX) int { return cmp.Compare(a.Pref, b.Pref) })
	var hops []hop
	seen := map[string]bool{}
	for _, mx := range mxs {
		name := strings.ToLower(strings.TrimSuffix(mx.Host, "."))
		if name == "" || seen[name] {
			continue
		}
		seen[name] = true
		hops = append(hops, hop{name: name, port: port})
		if len(hops) == maxHosts {
			break
		}
	}
	return hops
}

// addresses returns the addresses to try for h, IPv6 and IPv4 alternating
// (RFC 8305 4), or why there are none.
func (c *Client) addresses(ctx context.Context, h hop) ([]net.IP, *smtp.Reply) {
	ips := h.ips
	if ips == nil {
		if c.Resolver == nil {
			return nil, smtp.NewReply(451, "4.3.5", "outbound: no DNS resolver configured")
		}
		var err error
		ips, err = c.Resolver.LookupIP(ctx, h.name)
		switch {
		case err == nil:
		case dns.Temporary(err):
			return nil, smtp.Replyf(451, "4.4.3", "DNS lookup of %s failed, will retry: %v", h.name, err)
		default:
			return nil, smtp.Replyf(550, "5.4.4", "mail server %s has no address: %v", h.name, err)
		}
	}
	return interleave(ips, maxAddrsPerHost), nil
}

// interleave orders ips IPv6 first, then alternating families, at most n.
func interleave(ips []net.IP, n int) []net.IP {
	var v6, v4 []net.IP
	for _, ip := range ips {
		if ip.To4() != nil {
			v4 = append(v4, ip)
		} else if ip.To16() != nil {
			v6 = append(v6, ip)
		}
	}
	var out []net.IP
	for i := 0; len(out) < n && (i < len(v6) || i < len(v4)); i++ {
		if i < len(v6) {
			out = append(out, v6[i])
		}
		if i < len(v4) && len(out) < n {
			out = append(out, v4[i])
		}
	}
	return out
}

// hostPort formats h at ip for messages: "mx.example.org[192.0.2.1]:25".
func hostPort(name string, ip net.IP, port string) string {
	return fmt.Sprintf("%s[%s]:%s", name, ip, port)
}
