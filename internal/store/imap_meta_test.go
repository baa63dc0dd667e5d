package store

import (
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// SELECT's snapshot: every UID from the uid-only read, and the first unseen message from a
// primary-key range read starting at the mailbox's unseen_low mark.
func TestSnapshotUIDsAndFirstUnseen(t *testing.T) {
	t.Parallel()
	ctx, s, a := anaWithMessages(t, 0)
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
	for _, q := range []string{firstUnseenQuery, unseenLowSQL} {
		var plan strings.Builder
		rows, err := s.w.QueryContext(ctx, `EXPLAIN QUERY PLAN `+q, inbox.ID, noLowerUID)
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
		if !strings.Contains(plan.String(), "SEARCH mailbox_messages USING PRIMARY KEY (mailbox_id=? AND uid>?)") {
			t.Errorf("the walk from unseen_low is not a key range:\n%s\n%s", q, plan.String())
		}
	}
}

// The unseen_low mark against a brute-force first unseen entry, through random flag
// changes, expunges, copies, moves, appends and deliveries: the first unseen entry is always
// right, and the mark always sits on it (or on uidnext when every entry is seen), so that a
// read steps over no seen entry.
func TestUnseenLowMark(t *testing.T) {
	t.Parallel()
	ctx, s, a := anaWithMessages(t, 0)
	inbox, _ := s.GetMailbox(ctx, a.ID, "INBOX")
	other, err := s.CreateMailbox(ctx, a.ID, "Other", "")
	if err != nil {
		t.Fatal(err)
	}
	deliverN(t, s, a.ID, 8)
	rng := rand.New(rand.NewPCG(6, 1))
	pick := func(mb int64) []uint32 {
		all, err := s.MessagesByUID(ctx, mb, nil)
		if err != nil {
			t.Fatal(err)
		}
		var out []uint32
		for _, m := range all {
			if rng.IntN(3) == 0 {
				out = append(out, m.UID)
			}
		}
		return out
	}
	ops := map[string]int{}
	for i := range 400 {
		mb, dst := inbox.ID, other.ID
		if rng.IntN(2) == 0 {
			mb, dst = dst, mb
		}
		var err error
		switch rng.IntN(9) {
		case 0, 1:
			_, _, err = s.StoreFlags(ctx, mb, pick(mb), FlagsAdd, []string{`\Seen`})
			ops["seen"]++
		case 2:
			_, _, err = s.StoreFlags(ctx, mb, pick(mb), FlagsRemove, []string{`\Seen`})
			ops["unseen"]++
		case 3:
			_, _, err = s.StoreFlags(ctx, mb, pick(mb), FlagsReplace, []string{`\Deleted`})
			if err == nil {
				_, _, err = s.Expunge(ctx, mb, nil)
			}
			ops["expunge"]++
		case 4:
			_, err = s.CopyMessages(ctx, mb, pick(mb), dst)
			ops["copy"]++
		case 5:
			_, err = s.MoveMessages(ctx, mb, pick(mb), dst)
			ops["move"]++
		case 6:
			var flags []string
			if rng.IntN(2) == 0 {
				flags = []string{`\Seen`}
			}
			_, err = s.AppendMessage(ctx, mb, newBlob(t, s, []byte("Subject: a\r\n\r\nx\r\n")), flags, time.Time{})
			ops["append"]++
		case 7:
			deliverN(t, s, a.ID, 1)
			ops["deliver"]++
		case 8:
			_, err = s.RemoveMessages(ctx, mb, pick(mb))
			ops["remove"]++
		}
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		for _, id := range []int64{inbox.ID, other.ID} {
			var want, low, uidnext int64
			rows, err := s.r.QueryContext(ctx, `SELECT uid, flags FROM mailbox_messages WHERE mailbox_id = ? ORDER BY uid`, id)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var uid int64
				var flags string
				rows.Scan(&uid, &flags)
				if want == 0 && !strings.Contains(flags, `\Seen`) {
					want = uid
				}
			}
			rows.Close()
			got, err := s.FirstUnseen(ctx, id)
			if err != nil || int64(got) != want {
				t.Fatalf("step %d, mailbox %d: first unseen %d, %v; want %d", i, id, got, err, want)
			}
			s.r.QueryRowContext(ctx, `SELECT unseen_low, uidnext FROM mailboxes WHERE id = ?`, id).Scan(&low, &uidnext)
			if want == 0 {
				want = uidnext
			}
			if low != want {
				t.Fatalf("step %d, mailbox %d: unseen_low %d, want %d", i, id, low, want)
			}
		}
	}
	for _, op := range []string{"seen", "unseen", "expunge", "copy", "move", "append", "deliver", "remove"} {
		if ops[op] == 0 {
			t.Errorf("no %s step ran", op)
		}
	}
}

// MessagesWithMeta returns the asked columns of cached entries and marks the others;
// SearchCandidates returns the entries whose search text has every needle, and the uncached.
func TestMessagesWithMetaAndCandidates(t *testing.T) {
	t.Parallel()
	ctx, s, a := anaWithMessages(t, 3)
	// The fourth is stored inside the database (a buffered blob), the others as files.
	b, err := s.NewBufferedBlob()
	if err != nil {
		t.Fatal(err)
	}
	b.Write([]byte("Subject: inline\r\n\r\nsmall\r\n"))
	if err := s.Deliver(ctx, &Commit{Blob: b, Recipients: []Recipient{local(a.ID)}}); err != nil {
		t.Fatal(err)
	}
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
	// Open reads the same bytes as OpenMessage, with or without MetaOpen, cached or not.
	for _, cols := range []MetaColumns{0, MetaOpen, MetaEnvelope, MetaEnvelope | MetaOpen} {
		es, err := s.MessagesWithMeta(ctx, inbox.ID, []uint32{1, 2, 3, 4}, cols)
		if err != nil || len(es) != 4 {
			t.Fatalf("cols %b: %+v %v", cols, es, err)
		}
		for i, e := range es {
			if e.Size != all[i].Size || e.MessageID != all[i].MessageID {
				t.Errorf("cols %b, entry %d: size %d id %s, want %d %s", cols, e.UID, e.Size, e.MessageID, all[i].Size, all[i].MessageID)
			}
			r, err := e.Open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(r)
			r.Close()
			r2, _, _ := s.OpenMessage(ctx, e.MessageID)
			want, _ := io.ReadAll(r2)
			r2.Close()
			if string(got) != string(want) || len(want) == 0 {
				t.Errorf("cols %b, entry %d: Open read %q, want %q", cols, e.UID, got, want)
			}
		}
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

	// The search rows follow the entries: COPY copies them, expunging and MOVE remove them,
	// and rows lost some other way are rebuilt from message_meta.
	work, _ := s.CreateMailbox(ctx, a.ID, "Work", "")
	if _, err := s.CopyMessages(ctx, inbox.ID, []uint32{1, 2, 4}, work.ID); err != nil {
		t.Fatal(err)
	}
	s.StoreFlags(ctx, inbox.ID, []uint32{2}, FlagsAdd, []string{`\Deleted`})
	s.Expunge(ctx, inbox.ID, nil)
	if _, err := s.MoveMessages(ctx, inbox.ID, []uint32{3}, work.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, `DELETE FROM mailbox_search WHERE mailbox_id = ? AND uid = 1`, work.ID); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mbox   int64
		needle string
		want   []uint32
	}{
		{inbox.ID, "beta", []uint32{1, 4}},
		{inbox.ID, "gamma", []uint32{4}},
		{work.ID, "beta", []uint32{1, 2, 3}},
		{work.ID, "gamma", []uint32{2, 3, 4}},
	} {
		got, err := s.SearchCandidates(ctx, c.mbox, [][]byte{[]byte(c.needle)})
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("mailbox %d: candidates %q = %v %v, want %v", c.mbox, c.needle, got, err, c.want)
		}
	}
	var rows int
	s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM mailbox_search`).Scan(&rows)
	if missing, _ := s.searchMissing(ctx, work.ID); missing != 1 || rows != 4 {
		t.Errorf("after search: %d missing in Work (want 1: the unparsed message), %d rows (want 4)", missing, rows)
	}
	if err := s.DeleteMailbox(ctx, a.ID, "Work"); err != nil {
		t.Fatal(err)
	}
	s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM mailbox_search`).Scan(&rows)
	if rows != 1 {
		t.Errorf("after deleting Work: %d search rows, want 1", rows)
	}
}

// An empty cached structure (the header was parsed alone) is filled in later; anything else
// cached stays as first written.
func TestMessageMetaStructureFill(t *testing.T) {
	t.Parallel()
	ctx, s, a := anaWithMessages(t, 1)
	ms, _ := s.ListMessages(ctx, a.ID, "INBOX")
	id := ms[0].MessageID
	for _, m := range []MessageMeta{
		{Header: []byte("h1"), Envelope: []byte("e1"), Search: []byte("s1")},
		{Header: []byte("h2"), Structure: []byte("st2"), Envelope: []byte("e2"), Search: []byte("s2")},
		{Header: []byte("h3"), Structure: []byte("st3"), Envelope: []byte("e3"), Search: []byte("s3")},
	} {
		if err := s.PutMessageMeta(ctx, map[string]MessageMeta{id: m}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.GetMessageMeta(ctx, []string{id})
	if m := got[id]; err != nil || string(m.Header) != "h1" || string(m.Structure) != "st2" || string(m.Envelope) != "e1" || string(m.Search) != "s1" {
		t.Errorf("meta %+v %v", got, err)
	}
}
