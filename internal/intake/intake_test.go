package intake

import (
	"context"
	"errors"
	"testing"

	"yubin/internal/directory"
	"yubin/internal/store"
)

// fakeRelay is a Handoff that takes up to room entries.
type fakeRelay struct {
	room     int
	reserved int
	released int
	taken    []store.QueueEntry
}

func (f *fakeRelay) Reserve(n int) bool {
	if n > f.room {
		return false
	}
	f.room -= n
	f.reserved += n
	return true
}

func (f *fakeRelay) Release(n int) { f.released += n; f.room += n }

func (f *fakeRelay) Take(es []store.QueueEntry) { f.taken = append(f.taken, es...) }

func remoteEnvelope(addrs ...string) Envelope {
	env := Envelope{From: "ana@example.org"}
	for _, a := range addrs {
		env.Recipients = append(env.Recipients, Recipient{Address: a,
			Targets: []directory.Target{{Address: a, Remote: true}}})
	}
	return env
}

// A commit with remote recipients hands them to the relay when it has room, already claimed;
// otherwise they are queued and Queued is called. A failed commit gives its reservation back.
func TestCommitHandsOverRemoteRecipients(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	relay := &fakeRelay{room: 2}
	queued := 0
	in := &Intake{Store: st, Relay: relay, Queued: func() { queued++ }}
	commit := func(env Envelope) error {
		t.Helper()
		d, err := in.Begin(ctx, env.From)
		if err != nil {
			t.Fatal(err)
		}
		d.Write([]byte("Subject: hi\r\n\r\nhi\r\n"))
		return d.Commit(ctx, env)
	}

	if err := commit(remoteEnvelope("x@remote.example", "y@remote.example")); err != nil {
		t.Fatal(err)
	}
	if len(relay.taken) != 2 || relay.taken[0].State != store.QueueActive || relay.taken[0].Rcpt != "x@remote.example" {
		t.Fatalf("taken %+v, want both recipients, claimed", relay.taken)
	}
	if queued != 0 {
		t.Errorf("Queued called %d times for a handed-over commit", queued)
	}

	// No room left: queued as before.
	if err := commit(remoteEnvelope("z@remote.example")); err != nil {
		t.Fatal(err)
	}
	if queued != 1 || len(relay.taken) != 2 {
		t.Errorf("queued %d, taken %d; want 1 and 2", queued, len(relay.taken))
	}
	q, err := st.ListQueue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]store.QueueState{}
	for _, e := range q {
		states[e.Rcpt] = e.State
	}
	if states["x@remote.example"] != store.QueueActive || states["z@remote.example"] != store.QueueQueued {
		t.Errorf("queue states %v", states)
	}

	// A commit that fails releases what it reserved.
	relay.room = 1
	d, err := in.Begin(ctx, "ana@example.org")
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if err := d.Commit(ctx, remoteEnvelope("w@remote.example")); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("commit on a closed store: %v", err)
	}
	if relay.released != 1 || relay.room != 1 {
		t.Errorf("released %d, room %d after a failed commit; want 1 and 1", relay.released, relay.room)
	}
}
