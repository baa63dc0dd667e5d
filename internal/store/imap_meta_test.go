package store

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// SELECT's snapshot: every UID from the uid-only read, and the first unseen message from the
// partial index, which the query plan must use.
func TestSnapshotUIDsAndFirstUnseen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	a := mustAccount(t, s, "ana@example.org")
	snap, err := s.SnapshotMailbox(ctx, a.ID, "INBOX")
	if err != nil || len(snap.UIDs) != 0 || snap.FirstUnseen != 0 || snap.Messages != 0 {
		t.Fatalf("empty: %+v %v", snap, err)
	}
	deliverN(t, s, a.ID, 12)
	inbox, _ := s.GetMailbox(ctx, a.ID, "INBOX")
	s.StoreFlags(ctx, inbox.ID, []uint32{2, 3}, FlagsAdd, []string{`\Deleted`})
	s.Expunge(ctx, inbox.ID, nil)
	s.StoreFlags(ctx, inbox.ID, []uint32{1, 4, 5, 6}, FlagsAdd, []string{`\Seen`, "$Label"})
	snap, err = s.SnapshotMailbox(ctx, a.ID, "INBOX")
	want := []uint32{1, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	if err != nil || !slices.Equal(snap.UIDs, want) || snap.FirstUnseen != 5 || snap.Messages != 10 {
		t.Fatalf("snapshot %+v %v; want UIDs %v, first unseen 5", snap, err, want)
	}
	s.StoreFlags(ctx, inbox.ID, want, FlagsAdd, []string{`\seen`})
	if snap, _ = s.SnapshotMailbox(ctx, a.ID, "INBOX"); snap.FirstUnseen != 0 {
		t.Errorf("all seen: first unseen %d", snap.FirstUnseen)
	}
	s.StoreFlags(ctx, inbox.ID, []uint32{12}, FlagsRemove, []string{`\Seen`})
	if snap, _ = s.SnapshotMailbox(ctx, a.ID, "INBOX"); snap.FirstUnseen != 10 {
		t.Errorf("last unseen: first unseen %d", snap.FirstUnseen)
	}
	var plan strings.Builder
	rows, err := s.r.QueryContext(ctx, `EXPLAIN QUERY PLAN SELECT uid FROM mailbox_messages WHERE mailbox_id = ? AND `+unseenCond+` ORDER BY uid LIMIT 1`, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, parent, notused int
		var detail string
		rows.Scan(&id, &parent, &notused, &detail)
		plan.WriteString(detail + "\n")
	}
	rows.Close()
	if !strings.Contains(plan.String(), "mailbox_messages_unseen") {
		t.Errorf("first unseen does not use the partial index:\n%s", plan.String())
	}
}

// MessagesWithMeta returns the asked columns of cached entries and marks the others;
// SearchCandidates returns the entries whose search text has every needle, and the uncached.
func TestMessagesWithMetaAndCandidates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, Options{})
	a := mustAccount(t, s, "ana@example.org")
	deliverN(t, s, a.ID, 4)
	inbox, _ := s.GetMailbox(ctx, a.ID, "INBOX")
	all, _ := s.MessagesByUID(ctx, inbox.ID, []uint32{1, 2, 3, 4})
	s.StoreFlags(ctx, inbox.ID, []uint32{2}, FlagsAdd, []string{`\Flagged`})
	metas := map[string]MessageMeta{}
	for i, text := range []string{"alpha beta\n", "beta gamma\n", "gamma\n"} {
		metas[all[i].MessageID] = MessageMeta{Header: []byte("h"), Structure: []byte("s"), Envelope: []byte{byte(i)}, Search: []byte(text)}
	}
	if err := s.PutMessageMeta(ctx, metas); err != nil {
		t.Fatal(err)
	}
	es, err := s.MessagesWithMeta(ctx, inbox.ID, []uint32{2, 4}, MetaEnvelope)
	if err != nil || len(es) != 2 {
		t.Fatalf("%+v %v", es, err)
	}
	if !es[0].Cached || es[0].UID != 2 || es[0].Meta.Header != nil || string(es[0].Meta.Envelope) != "\x01" || !slices.Equal(es[0].Flags, []string{`\Flagged`}) || es[0].Size != all[1].Size {
		t.Errorf("entry 2: %+v", es[0])
	}
	if es[1].Cached || es[1].UID != 4 || es[1].Meta.Envelope != nil {
		t.Errorf("entry 4: %+v", es[1])
	}
	for _, c := range []struct {
		needles []string
		want    []uint32
	}{
		{[]string{"beta"}, []uint32{1, 2, 4}},
		{[]string{"gamma"}, []uint32{2, 3, 4}},
		{[]string{"beta", "gamma"}, []uint32{2, 4}},
		{[]string{"delta"}, []uint32{4}},
		{[]string{"a\nb"}, []uint32{4}},
	} {
		var ns [][]byte
		for _, n := range c.needles {
			ns = append(ns, []byte(n))
		}
		got, err := s.SearchCandidates(ctx, inbox.ID, ns)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("candidates %q = %v %v, want %v", c.needles, got, err, c.want)
		}
	}
}
