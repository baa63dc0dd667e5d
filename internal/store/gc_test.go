package store

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestAbort(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, Options{})
	b := newBlob(t, s, []byte("x"))
	if got := dirEntries(t, s, "tmp"); !reflect.DeepEqual(got, []string{b.ID()}) {
		t.Fatalf("tmp holds %v", got)
	}
	if err := b.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := b.Abort(); err != nil {
		t.Fatalf("second Abort: %v", err)
	}
	if got := dirEntries(t, s, "tmp"); len(got) != 0 {
		t.Errorf("tmp holds %v after Abort", got)
	}
	if _, err := b.Write([]byte("y")); err == nil {
		t.Error("Write after Abort succeeded")
	}
}

func TestDeleteUnreferenced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	ana := mustAccount(t, s, "ana@example.org")
	bob := mustAccount(t, s, "bob@example.org")
	deliver := func(rcpts ...Recipient) string {
		b := newBlob(t, s, []byte("x"))
		if err := s.Deliver(ctx, &Commit{Blob: b, Recipients: rcpts}); err != nil {
			t.Fatal(err)
		}
		return b.ID()
	}
	onlyAna := deliver(local(ana.ID))
	shared := deliver(local(ana.ID), local(bob.ID))
	queued := deliver(local(ana.ID), Recipient{Address: "x@remote.example", Remote: true})

	if n, err := s.DeleteUnreferenced(ctx); err != nil || n != 0 {
		t.Fatalf("DeleteUnreferenced = %d, %v; want 0", n, err)
	}
	if err := s.RemoveAccount(ctx, "ana@example.org"); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteUnreferenced(ctx)
	if err != nil || n != 1 {
		t.Fatalf("DeleteUnreferenced = %d, %v; want 1", n, err)
	}
	if got := dirEntries(t, s, "blobs"); len(got) != 2 {
		t.Errorf("blobs %v, want those of %s and %s", got, shared, queued)
	}
	for id, want := range map[string]bool{onlyAna: false, shared: true, queued: true} {
		f, _, err := s.OpenMessage(ctx, id)
		if (err == nil) != want {
			t.Errorf("message %s: open error %v, want present=%v", id, err, want)
		}
		if f != nil {
			f.Close()
		}
	}
}

func TestCleanupOrphans(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	a := mustAccount(t, s, "ana@example.org")
	kept := newBlob(t, s, []byte("x"))
	if err := s.Deliver(ctx, &Commit{Blob: kept, Recipients: []Recipient{local(a.ID)}}); err != nil {
		t.Fatal(err)
	}
	writing := newBlob(t, s, []byte("still receiving")) // live in this process
	defer writing.Abort()

	// What a crash leaves: a temp file and a renamed blob without a row.
	old := time.Now().Add(-2 * time.Hour)
	strayTmp := filepath.Join(s.dir, "tmp", "0000000000000001")
	strayBlob := filepath.Join(s.dir, "blobs", "20200101", "0000000000000002")
	freshBlob := filepath.Join(s.dir, "blobs", "20200101", "0000000000000003")
	os.MkdirAll(filepath.Dir(strayBlob), 0o700)
	for _, p := range []string{strayTmp, strayBlob, freshBlob} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{strayTmp, strayBlob} {
		os.Chtimes(p, old, old)
	}
	// Age everything of the store's own too: only liveness protects it.
	os.Chtimes(filepath.Join(s.dir, "tmp", writing.ID()), old, old)

	n, err := s.CleanupOrphans(ctx, time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("CleanupOrphans = %d, %v; want 2", n, err)
	}
	for _, p := range []string{strayTmp, strayBlob} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there", p)
		}
	}
	if _, err := os.Stat(freshBlob); err != nil {
		t.Errorf("recent orphan removed before its age: %v", err)
	}
	if got := dirEntries(t, s, "tmp"); !reflect.DeepEqual(got, []string{writing.ID()}) {
		t.Errorf("tmp holds %v, want the blob being written", got)
	}
	if f, _, err := s.OpenMessage(ctx, kept.ID()); err != nil {
		t.Errorf("delivered message: %v", err)
	} else {
		f.Close()
	}
	if n, err := s.CleanupOrphans(ctx, 0); err != nil || n != 1 {
		t.Errorf("CleanupOrphans(0) = %d, %v; want 1 (the fresh orphan)", n, err)
	}
}
