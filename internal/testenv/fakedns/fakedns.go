// Package fakedns is a fake authoritative DNS server on loopback for
// black-box tests: a test starts it, adds the records it needs and points
// yubin's resolver at Addr. It answers over UDP and TCP on the same port,
// with the distinctions a mail server depends on: NXDOMAIN for a name that
// does not exist, NODATA (NOERROR, no answer) for a name that exists with
// other records or only below it (an empty non-terminal), SERVFAIL on
// demand, and truncation of UDP answers larger than the client's EDNS0
// buffer (512 bytes without EDNS0), so that clients must retry over TCP.
//
// Names are case-insensitive; answers carry the name as the question
// spelled it. The server holds one flat set of names, not zones: every name
// is answered authoritatively.
package fakedns

import (
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	mdns "github.com/miekg/dns"
)

// ttl of every record; tests never wait for it.
const ttl = 300

// Server is a running fake DNS server. Its methods are safe for concurrent
// use, also while it serves.
type Server struct {
	t    testing.TB
	addr string
	udp  *mdns.Server
	tcp  *mdns.Server

	mu       sync.Mutex
	records  map[string][]mdns.RR // by lower-cased FQDN
	servfail map[string]bool
	queries  map[string]int // "name TYPE" -> count
	// unknownFails: names that do not exist answer SERVFAIL instead of NXDOMAIN.
	unknownFails bool
}

// SetUnknownServFail makes names without records answer SERVFAIL (a DNS outage) instead of
// NXDOMAIN, so that mail to domains a test did not set up waits in the queue instead of
// bouncing.
func (s *Server) SetUnknownServFail(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unknownFails = on
}

// Start runs a server on 127.0.0.1 (UDP and TCP, one port chosen by the
// kernel) until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		t:        t,
		records:  map[string][]mdns.RR{},
		servfail: map[string]bool{},
		queries:  map[string]int{},
	}
	pc, ln := listen(t)
	s.addr = pc.LocalAddr().String()
	s.udp = &mdns.Server{PacketConn: pc, Handler: s}
	s.tcp = &mdns.Server{Listener: ln, Handler: s}
	for _, srv := range []*mdns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
	}
	t.Cleanup(func() {
		s.udp.Shutdown()
		s.tcp.Shutdown()
	})
	return s
}

// listen binds UDP and TCP to one port of 127.0.0.1: a UDP port first, then
// TCP on the same number, retrying when that is taken.
func listen(t testing.TB) (net.PacketConn, net.Listener) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("fakedns: %v", err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			return pc, ln
		}
		pc.Close()
		lastErr = err
	}
	t.Fatalf("fakedns: no port free for both UDP and TCP: %v", lastErr)
	return nil, nil
}

// Addr returns "127.0.0.1:port", for UDP and TCP alike.
func (s *Server) Addr() string { return s.addr }

// AddMX adds an MX record for domain.
func (s *Server) AddMX(domain string, pref uint16, host string) {
	s.add(&mdns.MX{Hdr: s.hdr(domain, mdns.TypeMX), Preference: pref, Mx: mdns.Fqdn(host)})
}

// SetNullMX replaces the MX records of domain with the null MX of RFC 7505
// ("0 ."): the domain accepts no mail.
func (s *Server) SetNullMX(domain string) {
	s.mu.Lock()
	key := key(domain)
	kept := s.records[key][:0:0]
	for _, rr := range s.records[key] {
		if rr.Header().Rrtype != mdns.TypeMX {
			kept = append(kept, rr)
		}
	}
	s.records[key] = kept
	s.mu.Unlock()
	s.AddMX(domain, 0, ".")
}

// AddA adds an A record; ip must be an IPv4 address.
func (s *Server) AddA(host, ip string) {
	addr := net.ParseIP(ip)
	if addr == nil || addr.To4() == nil {
		s.t.Fatalf("fakedns: AddA(%q, %q): not an IPv4 address", host, ip)
	}
	s.add(&mdns.A{Hdr: s.hdr(host, mdns.TypeA), A: addr.To4()})
}

// AddAAAA adds an AAAA record; ip must be an IPv6 address.
func (s *Server) AddAAAA(host, ip string) {
	addr := net.ParseIP(ip)
	if addr == nil || addr.To4() != nil {
		s.t.Fatalf("fakedns: AddAAAA(%q, %q): not an IPv6 address", host, ip)
	}
	s.add(&mdns.AAAA{Hdr: s.hdr(host, mdns.TypeAAAA), AAAA: addr})
}

// AddTXT adds a TXT record whose text is split into strings of at most 255
// bytes, as DNS requires; resolvers join them again.
func (s *Server) AddTXT(name, text string) {
	var parts []string
	for len(text) > 255 {
		parts = append(parts, text[:255])
		text = text[255:]
	}
	parts = append(parts, text)
	s.add(&mdns.TXT{Hdr: s.hdr(name, mdns.TypeTXT), Txt: parts})
}

// SetServFail makes every query for name answer SERVFAIL.
func (s *Server) SetServFail(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.servfail[key(name)] = true
}

// Remove deletes every record of name and its SERVFAIL setting.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, key(name))
	delete(s.servfail, key(name))
}

// Queries returns how many questions for name of type typ ("MX", "TXT",
// ...) the server has received.
func (s *Server) Queries(name, typ string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[key(name)+" "+strings.ToUpper(typ)]
}

func (s *Server) hdr(name string, typ uint16) mdns.RR_Header {
	if _, ok := mdns.IsDomainName(name); !ok || name == "" {
		s.t.Fatalf("fakedns: bad name %q", name)
	}
	return mdns.RR_Header{Name: key(name), Rrtype: typ, Class: mdns.ClassINET, Ttl: ttl}
}

func (s *Server) add(rr mdns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := rr.Header().Name
	s.records[k] = append(s.records[k], rr)
}

func key(name string) string { return strings.ToLower(mdns.Fqdn(name)) }

// ServeDNS answers one query; it implements mdns.Handler.
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	m := new(mdns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	if len(req.Question) != 1 {
		m.Rcode = mdns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	k := key(q.Name)

	s.mu.Lock()
	s.queries[k+" "+mdns.TypeToString[q.Qtype]]++
	switch {
	case s.servfail[k]:
		m.Rcode = mdns.RcodeServerFailure
	case !s.existsLocked(k) && s.unknownFails:
		m.Rcode = mdns.RcodeServerFailure
	case !s.existsLocked(k):
		m.Rcode = mdns.RcodeNameError
	default:
		for _, rr := range s.records[k] {
			if rr.Header().Rrtype == q.Qtype || q.Qtype == mdns.TypeANY {
				rr = mdns.Copy(rr)
				rr.Header().Name = q.Name
				m.Answer = append(m.Answer, rr)
			}
		}
	}
	s.mu.Unlock()

	size := mdns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(int(opt.UDPSize()), mdns.MinMsgSize)
		m.SetEdns0(opt.UDPSize(), false)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// existsLocked reports whether k has records or is an empty non-terminal
// (a name with records below it): both answer NOERROR.
func (s *Server) existsLocked(k string) bool {
	if len(s.records[k]) > 0 || s.servfail[k] {
		return true
	}
	for name, rrs := range s.records {
		if len(rrs) > 0 && strings.HasSuffix(name, "."+k) {
			return true
		}
	}
	return false
}
