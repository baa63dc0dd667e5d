package gopool

import (
	"testing"
	"time"
)

func waitIdle(t *testing.T, p *Pool, want int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		idle, _ := p.state()
		if idle == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle goroutines, want %d", idle, want)
		}
	}
}

// A goroutine whose function returned runs the next one; functions at once get goroutines
// of their own; idle ones beyond MaxIdle end, and all end at Close.
func TestPool(t *testing.T) {
	p := &Pool{MaxIdle: 2}
	ran := make(chan int, 10)
	for i := range 5 {
		p.Go(func() { ran <- i })
		if got := <-ran; got != i {
			t.Fatalf("function %d ran as %d", i, got)
		}
		waitIdle(t, p, 1)
	}
	if _, started := p.state(); started != 1 {
		t.Errorf("%d goroutines started for 5 functions one after another, want 1", started)
	}
	release := make(chan struct{})
	for range 3 {
		p.Go(func() { <-release })
	}
	if _, started := p.state(); started != 3 {
		t.Errorf("%d goroutines started for 3 functions at once (one idle), want 3", started)
	}
	close(release)
	waitIdle(t, p, 2) // the third ends: MaxIdle
	p.Close()
	waitIdle(t, p, 0)
	done := make(chan struct{})
	p.Go(func() { close(done) }) // after Close: a goroutine of its own
	<-done
	waitIdle(t, p, 0)
	if _, started := p.state(); started != 4 {
		t.Errorf("%d goroutines started in all, want 4", started)
	}
}
