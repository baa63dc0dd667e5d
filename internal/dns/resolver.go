package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/net/idna"
)

// resolvConf is where NewResolver finds servers when it is given none.
const resolvConf = "/etc/resolv.conf"

// ednsSize is the UDP payload size we advertise (EDNS0, RFC 6891): the
// value of DNS Flag Day 2020, small enough to avoid IP fragmentation.
const ednsSize = 1232

// maxCNAME bounds how many CNAME links an answer may chain.
const maxCNAME = 8

// NewResolver returns a Resolver that sends recursive queries to servers
// ("127.0.0.1:53", "[::1]:53"; a missing port means 53), or to the
// nameservers of /etc/resolv.conf when servers is empty. Each query goes
// over UDP with EDNS0, and again over TCP when the answer is truncated
// (RFC 7766); a server that fails (timeout, SERVFAIL, REFUSED) makes the
// query move on to the next one. timeout bounds each exchange with one
// server (0 means 5s).
func NewResolver(servers []string, timeout time.Duration) Resolver {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	r := &resolver{timeout: timeout}
	if len(servers) == 0 {
		if cc, err := mdns.ClientConfigFromFile(resolvConf); err == nil {
			for _, s := range cc.Servers {
				servers = append(servers, net.JoinHostPort(s, cc.Port))
			}
		}
	}
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(strings.Trim(s, "[]"), "53")
		}
		r.servers = append(r.servers, s)
	}
	return r
}

type resolver struct {
	servers []string
	timeout time.Duration
}

func (r *resolver) LookupMX(ctx context.Context, domain string) ([]*net.MX, error) {
	rrs, err := r.lookup(ctx, "MX", domain, mdns.TypeMX)
	if err != nil {
		return nil, err
	}
	var mxs []*net.MX
	for _, rr := range rrs {
		mx := rr.(*mdns.MX)
		mxs = append(mxs, &net.MX{Host: normHost(mx.Mx), Pref: mx.Preference})
	}
	return mxs, nil
}

func (r *resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.lookup(ctx, "TXT", name, mdns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var txts []string
	for _, rr := range rrs {
		txts = append(txts, strings.Join(rr.(*mdns.TXT).Txt, ""))
	}
	return txts, nil
}

// LookupIP asks for A and AAAA at the same time. Addresses of one family
// are returned even when the query for the other failed: a host is
// reachable through either. When both fail, a temporary failure wins over
// NXDOMAIN, which wins over NODATA.
func (r *resolver) LookupIP(ctx context.Context, host string) ([]net.IP, error) {
	type result struct {
		rrs []mdns.RR
		err error
	}
	var res [2]result
	var wg sync.WaitGroup
	for i, t := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
		wg.Go(func() {
			res[i].rrs, res[i].err = r.lookup(ctx, "A/AAAA", host, t)
		})
	}
	wg.Wait()
	var ips []net.IP
	for _, x := range res {
		for _, rr := range x.rrs {
			switch rr := rr.(type) {
			case *mdns.A:
				ips = append(ips, rr.A)
			case *mdns.AAAA:
				ips = append(ips, rr.AAAA)
			}
		}
	}
	if len(ips) > 0 {
		return ips, nil
	}
	var worst *Error
	for _, x := range res {
		var e *Error
		if !errors.As(x.err, &e) {
			continue
		}
		if worst == nil || rank(e.kind) > rank(worst.kind) {
			worst = e
		}
	}
	if worst == nil {
		return nil, &Error{Type: "A/AAAA", Name: host, Reason: "no addresses", kind: kindNoRecords}
	}
	return nil, worst
}

// rank orders failure kinds for LookupIP.
func rank(k kind) int {
	switch k {
	case kindTemporary:
		return 3
	case kindNotFound:
		return 2
	case kindInvalid:
		return 1
	}
	return 0
}

// lookup asks each server in turn for the records of type qtype at name
// and returns those that answer the question, following CNAMEs.
func (r *resolver) lookup(ctx context.Context, typ, name string, qtype uint16) ([]mdns.RR, error) {
	fail := func(k kind, server, reason string, err error) error {
		return &Error{Type: typ, Name: name, Server: server, Reason: reason, kind: k, Err: err}
	}
	qname, err := toASCII(name)
	if err != nil {
		return nil, fail(kindInvalid, "", "invalid name", err)
	}
	if len(r.servers) == 0 {
		return nil, fail(kindTemporary, "", "no DNS servers configured", nil)
	}
	m := new(mdns.Msg)
	m.SetQuestion(qname, qtype)
	m.RecursionDesired = true
	m.SetEdns0(ednsSize, false)

	var last error = fail(kindTemporary, "", "no answer", nil)
	for _, server := range r.servers {
		if err := ctx.Err(); err != nil {
			return nil, fail(kindTemporary, "", err.Error(), err)
		}
		resp, err := r.exchange(ctx, m, server)
		if err != nil {
			last = fail(kindTemporary, server, errText(err), err)
			continue
		}
		if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, qname) || resp.Question[0].Qtype != qtype {
			last = fail(kindTemporary, server, "answer to a different question", nil)
			continue
		}
		switch resp.Rcode {
		case mdns.RcodeSuccess:
			if rrs := answers(resp, qname, qtype); len(rrs) > 0 {
				return rrs, nil
			}
			return nil, fail(kindNoRecords, server, "no "+mdns.TypeToString[qtype]+" records (NODATA)", nil)
		case mdns.RcodeNameError:
			return nil, fail(kindNotFound, server, "no such domain (NXDOMAIN)", nil)
		default:
			last = fail(kindTemporary, server, mdns.RcodeToString[resp.Rcode], nil)
		}
	}
	return nil, last
}

// exchange sends m to server over UDP, and over TCP when the answer is
// truncated. The context's cancellation interrupts it, not just its
// deadline.
func (r *resolver) exchange(ctx context.Context, m *mdns.Msg, server string) (*mdns.Msg, error) {
	resp, err := r.exchangeNet(ctx, m, server, "udp")
	if err == nil && resp.Truncated {
		resp, err = r.exchangeNet(ctx, m, server, "tcp")
	}
	return resp, err
}

func (r *resolver) exchangeNet(ctx context.Context, m *mdns.Msg, server, network string) (*mdns.Msg, error) {
	c := &mdns.Client{Net: network, Timeout: r.timeout, UDPSize: ednsSize}
	co, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer co.Close()
	stop := context.AfterFunc(ctx, func() { co.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, m, co)
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return resp, err
}

// answers returns the records of type qtype in the answer section that
// belong to qname or to the end of its CNAME chain.
func answers(resp *mdns.Msg, qname string, qtype uint16) []mdns.RR {
	owners := map[string]bool{strings.ToLower(qname): true}
	cur := strings.ToLower(qname)
	for range maxCNAME {
		next := ""
		for _, rr := range resp.Answer {
			if c, ok := rr.(*mdns.CNAME); ok && strings.EqualFold(c.Hdr.Name, cur) {
				next = strings.ToLower(c.Target)
			}
		}
		if next == "" || owners[next] {
			break
		}
		owners[next] = true
		cur = next
	}
	var rrs []mdns.RR
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype == qtype && owners[strings.ToLower(rr.Header().Name)] {
			rrs = append(rrs, rr)
		}
	}
	return rrs
}

// toASCII returns the fully qualified A-label form of name. Labels are
// converted one by one, so that a name that is not a host name, such as
// "_mta-sts.例え.jp", keeps its ASCII labels as they are.
func toASCII(name string) (string, error) {
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return "", errors.New("empty name")
	}
	labels := strings.Split(name, ".")
	for i, l := range labels {
		if isASCII(l) {
			continue
		}
		a, err := idna.Lookup.ToASCII(l)
		if err != nil {
			return "", err
		}
		labels[i] = a
	}
	ascii := strings.Join(labels, ".")
	if _, ok := mdns.IsDomainName(ascii); !ok {
		return "", fmt.Errorf("bad domain name %q", name)
	}
	return mdns.Fqdn(ascii), nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// errText shortens network errors for Error.Reason.
func errText(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "i/o timeout"
	}
	return err.Error()
}
