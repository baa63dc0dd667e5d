package testenv

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

var (
	portMu     sync.Mutex
	portsGiven = map[int]bool{}
)

// FreePort returns a port of 127.0.0.1 for a server that a test starts itself (a Postfix, the
// yubin binary), which must know its port before it binds it. The port is free when returned,
// and it lies below the kernel's ephemeral range (ip_local_port_range): a port the kernel handed
// to a listener on port 0 and took back can go at once to a parallel test's outgoing connection
// or listener, and the server's bind then fails with "address already in use". A port outside
// that range is only ever taken by someone who asks for it by number.
func FreePort(t testing.TB) int {
	t.Helper()
	lo, hi := 10000, ephemeralLow()-1
	portMu.Lock()
	defer portMu.Unlock()
	for range 500 {
		p := lo + rand.IntN(hi-lo+1)
		if portsGiven[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[p] = true
		return p
	}
	t.Fatalf("no free loopback port in %d-%d", lo, hi)
	return 0
}

// FreeAddr is FreePort as "127.0.0.1:port".
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// ephemeralLow is the first port of the kernel's ephemeral range, 32768 when it cannot be read
// or leaves too little room below it.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 12000 {
		return 32768
	}
	return n
}
