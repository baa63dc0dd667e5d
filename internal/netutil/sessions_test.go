package netutil

import (
	"context"
	"net"
	"testing"
	"time"
)

// Sessions admits up to the limit, runs each session, refuses once closed, and Wait returns
// when the sessions have ended.
func TestSessions(t *testing.T) {
	ss := &Sessions[int]{Limit: ConnLimit{Max: 2, MaxPerIP: 2}}
	release := make(chan struct{})
	n := 0
	mk := func(string) int { n++; return n }
	run := func(int) { <-release }
	conn := func() net.Conn {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return a
	}
	for i := range 2 {
		if closed, reason := ss.Go(conn(), mk, run); closed || reason != "" {
			t.Fatalf("session %d refused: closed %v, %q", i, closed, reason)
		}
	}
	if closed, reason := ss.Go(conn(), mk, run); closed || reason != "too many connections" {
		t.Errorf("third session: closed %v, reason %q; want the limit", closed, reason)
	}
	var seen []int
	if ss.Close(func(s int) { seen = append(seen, s) }) {
		t.Error("Close reported the set already closed")
	}
	if len(seen) != 2 {
		t.Errorf("Close saw sessions %v, want 2", seen)
	}
	if closed, _ := ss.Go(conn(), mk, run); !closed {
		t.Error("a session was admitted after Close")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := ss.Wait(ctx); err == nil {
		t.Error("Wait returned while sessions were running")
	}
	close(release)
	if err := ss.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !ss.Close(func(int) {}) {
		t.Error("second Close did not report the set closed")
	}
}
