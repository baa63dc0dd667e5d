package dns

import (
	"context"
	"net"
)

// Mock is a Resolver for unit tests: maps of records by name (any case,
// with or without the trailing dot) and the names whose lookups fail
// temporarily. A name that appears in none of the maps does not exist
// (NXDOMAIN); a name that appears in another map, or with an empty list,
// exists without records of the asked type (NODATA). The maps are only
// read, so one Mock may serve concurrent lookups.
type Mock struct {
	MX   map[string][]*net.MX
	IP   map[string][]net.IP
	TXT  map[string][]string
	Fail map[string]bool // temporary failure (SERVFAIL) for every type
}

var _ Resolver = (*Mock)(nil)

// LookupMX implements Resolver; it returns copies of the records.
func (m *Mock) LookupMX(ctx context.Context, domain string) ([]*net.MX, error) {
	mxs, err := mockLookup(ctx, m, "MX", domain, m.MX)
	var out []*net.MX
	for _, mx := range mxs {
		// A copy: callers sort and shuffle what they get.
		out = append(out, &net.MX{Host: normHost(mx.Host), Pref: mx.Pref})
	}
	return out, err
}

// LookupIP implements Resolver.
func (m *Mock) LookupIP(ctx context.Context, host string) ([]net.IP, error) {
	ips, err := mockLookup(ctx, m, "A/AAAA", host, m.IP)
	return append([]net.IP(nil), ips...), err
}

// LookupTXT implements Resolver.
func (m *Mock) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txts, err := mockLookup(ctx, m, "TXT", name, m.TXT)
	return append([]string(nil), txts...), err
}

func mockLookup[T any](ctx context.Context, m *Mock, typ, name string, records map[string][]T) ([]T, error) {
	if err := ctx.Err(); err != nil {
		return nil, &Error{Type: typ, Name: name, Reason: err.Error(), kind: kindTemporary, Err: err}
	}
	key := normName(name)
	if _, ok := find(m.Fail, key); ok {
		return nil, &Error{Type: typ, Name: name, Server: "mock", Reason: "SERVFAIL", kind: kindTemporary}
	}
	if rs, ok := find(records, key); ok && len(rs) > 0 {
		return rs, nil
	}
	if m.exists(key) {
		return nil, &Error{Type: typ, Name: name, Server: "mock", Reason: "no " + typ + " records (NODATA)", kind: kindNoRecords}
	}
	return nil, &Error{Type: typ, Name: name, Server: "mock", Reason: "no such domain (NXDOMAIN)", kind: kindNotFound}
}

func (m *Mock) exists(key string) bool {
	_, mx := find(m.MX, key)
	_, ip := find(m.IP, key)
	_, txt := find(m.TXT, key)
	return mx || ip || txt
}

// find looks key up in a map whose keys a test wrote in any case.
func find[V any](records map[string]V, key string) (V, bool) {
	if v, ok := records[key]; ok {
		return v, true
	}
	for k, v := range records {
		if normName(k) == key {
			return v, true
		}
	}
	var zero V
	return zero, false
}
