package netutil

import (
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestConnLimit(t *testing.T) {
	l := &ConnLimit{Max: 3, MaxPerIP: 2}
	for i, want := range []bool{true, true, false} {
		if ok, _ := l.Acquire("192.0.2.1"); ok != want {
			t.Fatalf("acquire %d from one address: %v, want %v", i+1, ok, want)
		}
	}
	if ok, _ := l.Acquire("192.0.2.2"); !ok {
		t.Fatal("another address refused below the total")
	}
	if ok, reason := l.Acquire("192.0.2.3"); ok || reason != "too many connections" {
		t.Fatalf("over the total: %v %q", ok, reason)
	}
	l.Release("192.0.2.1")
	if ok, _ := l.Acquire("192.0.2.3"); !ok {
		t.Fatal("a released slot was not reusable")
	}
}

// flakyListener fails with EMFILE a few times, then ends.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if f.fails.Add(1) <= 3 {
		return nil, &net.OpError{Op: "accept", Err: syscall.EMFILE}
	}
	return nil, errors.New("done")
}

func TestAcceptLoopRetriesTemporaryErrors(t *testing.T) {
	f := &flakyListener{}
	retries := 0
	err := AcceptLoop(f, func() bool { return false }, nil, func(error, time.Duration) { retries++ }, func(net.Conn) {})
	if err == nil || err.Error() != "done" || retries != 3 {
		t.Fatalf("err %v after %d retries, want done after 3", err, retries)
	}
	closedErr := errors.New("closed")
	if err := AcceptLoop(f, func() bool { return true }, closedErr, nil, func(net.Conn) {}); err != closedErr {
		t.Fatalf("closed server: %v", err)
	}
}

func TestListenersCloseEndsServe(t *testing.T) {
	var ls Listeners
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedErr := errors.New("closed")
	got := make(chan error, 1)
	go func() { got <- ls.Serve(l, closedErr, nil, func(c net.Conn) { c.Close() }) }()
	for !ls.hasListener(l) {
		time.Sleep(time.Millisecond)
	}
	if !ls.Close() || ls.Close() {
		t.Fatal("Close must report true once, then false")
	}
	if err := <-got; err != closedErr {
		t.Fatalf("Serve returned %v, want the closed error", err)
	}
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := ls.Serve(l2, closedErr, nil, nil); err != closedErr {
		t.Fatalf("Serve after Close: %v", err)
	}
	if _, err := l2.Accept(); err == nil {
		t.Fatal("a listener given after Close was left open")
	}
}

func (ls *Listeners) hasListener(l net.Listener) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	_, ok := ls.m[l]
	return ok
}

func TestRefuseWritesTheLine(t *testing.T) {
	a, b := net.Pipe()
	Refuse(a, "421 busy\r\n")
	buf := make([]byte, 64)
	n, _ := b.Read(buf)
	if string(buf[:n]) != "421 busy\r\n" {
		t.Fatalf("read %q", buf[:n])
	}
	if _, err := b.Read(buf); err == nil {
		t.Fatal("connection not closed after the refusal")
	}
}
