package store

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"
)

// anaWithMessages is a new store with the account ana@example.org and n messages in its
// INBOX.
func anaWithMessages(t *testing.T, n int) (context.Context, *Store, Account) {
	t.Helper()
	s := newTestStore(t, Options{})
	a := mustAccount(t, s, "ana@example.org")
	deliverN(t, s, a.ID, n)
	return context.Background(), s, a
}

func deliverN(t *testing.T, s *Store, acct int64, n int) {
	t.Helper()
	for range n {
		b := newBlob(t, s, []byte("Subject: x\r\n\r\nbody\r\n"))
		if err := s.Deliver(context.Background(), &Commit{Blob: b, Recipients: []Recipient{local(acct)}}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCanonicalFlags(t *testing.T) {
	t.Parallel()
	got := normalizeFlags([]string{"$Forwarded", `\seen`, `\SEEN`, `\Deleted`, "$forwarded", `\Recent`, ""})
	want := []string{`\Seen`, `\Deleted`, "$Forwarded"}
	if !slices.Equal(got, want) {
		t.Errorf("normalizeFlags = %q, want %q", got, want)
	}
	if CanonicalFlag(`\flagged`) != `\Flagged` || CanonicalFlag("Junk") != "Junk" {
		t.Error("CanonicalFlag")
	}
}

func TestMailboxLifecycle(t *testing.T) {
	t.Parallel()
	ctx, s, a := anaWithMessages(t, 0)
	inbox, err := s.GetMailbox(ctx, a.ID, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.CreateMailbox(ctx, a.ID, "Work", "")
	if err != nil {
		t.Fatal(err)
	}
	if m.UIDValidity <= inbox.UIDValidity || m.UIDNext != 1 {
		t.Errorf("new mailbox %+v; INBOX %+v", m, inbox)
	}
	if _, err := s.CreateMailbox(ctx, a.ID, "Work", ""); !errors.Is(err, ErrExists) {
		t.Errorf("create twice: %v", err)
	}
	if _, err := s.CreateMailbox(ctx, a.ID, "Work/2026", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.RenameMailbox(ctx, a.ID, "Work", "Job", "/"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMailbox(ctx, a.ID, "Job/2026"); err != nil {
		t.Errorf("child not renamed: %v", err)
	}
	if j, _ := s.GetMailbox(ctx, a.ID, "Job"); j.UIDValidity != m.UIDValidity {
		t.Errorf("rename changed UIDVALIDITY: %d, want %d", j.UIDValidity, m.UIDValidity)
	}
	if err := s.RenameMailbox(ctx, a.ID, "Job", "Sent", "/"); !errors.Is(err, ErrExists) {
		t.Errorf("rename onto Sent: %v", err)
	}
	if err := s.RenameMailbox(ctx, a.ID, "Nope", "X", "/"); !errors.Is(err, ErrNotFound) {
		t.Errorf("rename missing: %v", err)
	}
	if err := s.SetSubscribed(ctx, a.ID, "Job", true); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMailbox(ctx, a.ID, "INBOX"); !errors.Is(err, ErrInvalid) {
		t.Errorf("delete INBOX: %v", err)
	}
	if err := s.DeleteMailbox(ctx, a.ID, "Job"); err != nil {
		t.Fatal(err)
	}
	// A mailbox created again under a deleted name gets a new UIDVALIDITY (RFC 9051 2.3.1.1).
	again, err := s.CreateMailbox(ctx, a.ID, "Job", "")
	if err != nil || again.UIDValidity <= m.UIDValidity {
		t.Errorf("recreated %+v, %v", again, err)
	}
}

func TestRenameInbox(t *testing.T) {
	t.Parallel()
	ctx, s, a := anaWithMessages(t, 3)
	if err := s.RenameMailbox(ctx, a.ID, "INBOX", "Old", "/"); err != nil {
		t.Fatal(err)
	}
	if got := uids(t, s, a.ID); len(got) != 0 {
		t.Errorf("INBOX after rename: %v", got)
	}
	old, err := s.ListMessages(ctx, a.ID, "Old")
	if err != nil || len(old) != 3 {
		t.Fatalf("Old: %v, %v", old, err)
	}
}

func TestFlagsModseqAndChanges(t *testing.T) {
	t.Parallel()
	ctx, s, a := anaWithMessages(t, 3)
	snap, err := s.SnapshotMailbox(ctx, a.ID, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(snap.UIDs, []uint32{1, 2, 3}) || snap.FirstUnseen != 1 {
		t.Fatalf("snapshot %+v", snap)
	}
	base := snap.HighestModSeq
	notes, cancel := s.Subscribe(a.ID)
	defer cancel()

	changed, modseq, err := s.StoreFlags(ctx, snap.ID, []uint32{1, 3}, FlagsAdd, []string{`\seen`, "$Label"})
	if err != nil || len(changed) != 2 || modseq != base+1 {
		t.Fatalf("StoreFlags: %+v %d %v (base %d)", changed, modseq, err, base)
	}
	if !slices.Equal(changed[0].Flags, []string{`\Seen`, "$Label"}) {
		t.Errorf("flags %q", changed[0].Flags)
	}
	select {
	case <-notes:
	case <-time.After(time.Second):
		t.Error("no notification after StoreFlags")
	}
	// Adding flags already there changes nothing and does not bump the modseq.
	if changed, modseq, err := s.StoreFlags(ctx, snap.ID, []uint32{1}, FlagsAdd, []string{`\Seen`}); err != nil || len(changed) != 0 || modseq != 0 {
		t.Errorf("no-op StoreFlags: %+v %d %v", changed, modseq, err)
	}
	if _, _, err := s.StoreFlags(ctx, snap.ID, []uint32{2, 3}, FlagsAdd, []string{`\Deleted`}); err != nil {
		t.Fatal(err)
	}
	gone, _, err := s.Expunge(ctx, snap.ID, []uint32{3})
	if err != nil || !slices.Equal(gone, []uint32{3}) {
		t.Fatalf("UID EXPUNGE 3: %v %v", gone, err)
	}
	ch, err := s.ChangesSince(ctx, snap.ID, base)
	if err != nil {
		t.Fatal(err)
	}
	if ch.HighestModSeq != base+3 || !slices.Equal(ch.Expunged, []uint32{3}) || len(ch.Changed) != 2 {
		t.Fatalf("changes %+v", ch)
	}
	if ch.Changed[0].UID != 1 || ch.Changed[1].UID != 2 || !slices.Equal(ch.Changed[1].Flags, []string{`\Deleted`}) {
		t.Errorf("changed %+v", ch.Changed)
	}
	if ch, _ := s.ChangesSince(ctx, snap.ID, ch.HighestModSeq); len(ch.Changed)+len(ch.Expunged) != 0 {
		t.Errorf("changes since the newest modseq: %+v", ch)
	}
	st, err := s.GetMailboxStatus(ctx, a.ID, "INBOX")
	if err != nil || st.Messages != 2 || st.Unseen != 1 || st.Deleted != 1 || st.Size == 0 {
		t.Errorf("status %+v %v", st, err)
	}
	gone, _, _ = s.Expunge(ctx, snap.ID, nil)
	if !slices.Equal(gone, []uint32{2}) {
		t.Errorf("EXPUNGE: %v", gone)
	}
}

func TestCopyMove(t *testing.T) {
	t.Parallel()
	ctx, s, a := anaWithMessages(t, 4)
	inbox, _ := s.GetMailbox(ctx, a.ID, "INBOX")
	trash, _ := s.GetMailbox(ctx, a.ID, "Trash")
	s.StoreFlags(ctx, inbox.ID, []uint32{2}, FlagsAdd, []string{`\Flagged`})

	res, err := s.CopyMessages(ctx, inbox.ID, []uint32{2, 3, 99}, trash.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.SourceUIDs, []uint32{2, 3}) || !slices.Equal(res.DestUIDs, []uint32{1, 2}) || res.UIDValidity != trash.UIDValidity {
		t.Fatalf("copy %+v", res)
	}
	ms, _ := s.ListMessages(ctx, a.ID, "Trash")
	if len(ms) != 2 || !slices.Equal(ms[0].Flags, []string{`\Flagged`}) {
		t.Errorf("Trash %+v", ms)
	}
	// Copying UIDs that no longer exist copies nothing and reports nothing.
	res, err = s.CopyMessages(ctx, inbox.ID, []uint32{50, 60}, trash.ID)
	if err != nil || len(res.SourceUIDs) != 0 || len(res.DestUIDs) != 0 {
		t.Errorf("copy of missing UIDs: %+v %v", res, err)
	}
	res, err = s.MoveMessages(ctx, inbox.ID, []uint32{1, 4}, trash.ID)
	if err != nil || !slices.Equal(res.DestUIDs, []uint32{3, 4}) {
		t.Fatalf("move %+v %v", res, err)
	}
	if got := uids(t, s, a.ID); !slices.Equal(got, []uint32{2, 3}) {
		t.Errorf("INBOX after move: %v", got)
	}
	ch, _ := s.ChangesSince(ctx, inbox.ID, 0)
	if !slices.Equal(ch.Expunged, []uint32{1, 4}) {
		t.Errorf("tombstones %v", ch.Expunged)
	}
	if _, err := s.MoveMessages(ctx, inbox.ID, []uint32{2}, inbox.ID); !errors.Is(err, ErrInvalid) {
		t.Errorf("move into itself: %v", err)
	}
}

func TestAppendMessage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := mustAccount(t, s, "ana@example.org")
	sent, _ := s.GetMailbox(ctx, a.ID, "Sent")
	date := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	body := []byte("Subject: sent\r\n\r\nhi\r\n")
	res, err := s.AppendMessage(ctx, sent.ID, newBlob(t, s, body), []string{`\seen`}, date)
	if err != nil {
		t.Fatal(err)
	}
	if res.UID != 1 || res.UIDValidity != sent.UIDValidity {
		t.Errorf("append %+v", res)
	}
	// Appending to a mailbox that does not exist stores nothing.
	b := newBlob(t, s, body)
	if _, err := s.AppendMessage(ctx, 9999, b, nil, time.Time{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("append to missing mailbox: %v", err)
	}
	assertNoFile(t, s, b.ID())
	s.Close()

	s, err = Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ms, err := s.ListMessages(ctx, a.ID, "Sent")
	if err != nil || len(ms) != 1 || !ms[0].InternalDate.Equal(date) || !slices.Equal(ms[0].Flags, []string{`\Seen`}) {
		t.Fatalf("after reopen %+v %v", ms, err)
	}
	r, size, err := s.OpenMessage(ctx, ms[0].MessageID)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if string(got) != string(body) || size != int64(len(body)) {
		t.Errorf("stored %q", got)
	}
	byUID, err := s.MessagesByUID(ctx, sent.ID, []uint32{1, 2})
	if err != nil || len(byUID) != 1 || byUID[0].Size != int64(len(body)) {
		t.Errorf("MessagesByUID %+v %v", byUID, err)
	}
}

func TestMessageMeta(t *testing.T) {
	t.Parallel()
	ctx, s, a := anaWithMessages(t, 1)
	ms, _ := s.ListMessages(ctx, a.ID, "INBOX")
	id := ms[0].MessageID
	if err := s.PutMessageMeta(ctx, map[string]MessageMeta{id: {Header: []byte("h"), Structure: []byte("s")}, "nosuchmessage": {Header: []byte("x"), Structure: []byte("y")}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetMessageMeta(ctx, []string{id, "nosuchmessage"})
	if err != nil || len(got) != 1 || string(got[id].Header) != "h" {
		t.Errorf("meta %+v %v", got, err)
	}
}
