package imapserver

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"yubin/internal/mailbox/mailtest"
	"yubin/internal/store"
)

// The cached UID list, brought up to date through ChangesSince, always equals a fresh read:
// random deliveries, flag changes, expunges, copies and moves between snapshots.
func TestUIDCacheFollowsChanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ts := startServer(t)
	st := ts.Store
	acct := ts.Account.ID
	work, err := st.CreateMailbox(ctx, acct, "Work", "")
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	n := 0
	for round := range 60 {
		for _, name := range []string{"INBOX", "Work"} {
			got, err := ts.Srv.snapshot(ctx, acct, name)
			if err != nil {
				t.Fatal(err)
			}
			want, err := st.SnapshotMailbox(ctx, acct, name)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.UIDs, want.UIDs) || got.FirstUnseen != want.FirstUnseen || got.Messages != want.Messages ||
				got.HighestModSeq != want.HighestModSeq || got.UIDNext != want.UIDNext || got.UIDValidity != want.UIDValidity {
				t.Fatalf("round %d, %s: cached %+v, fresh %+v", round, name, got, want)
			}
			if len(got.UIDs) > 0 {
				got.UIDs[0] = 0 // the caller owns its copy
			}
		}
		inbox, _ := st.GetMailbox(ctx, acct, "INBOX")
		snap, _ := st.SnapshotMailbox(ctx, acct, "INBOX")
		pick := func() []uint32 {
			var u []uint32
			for _, x := range snap.UIDs {
				if r.IntN(3) == 0 {
					u = append(u, x)
				}
			}
			return u
		}
		for range r.IntN(4) {
			n++
			ts.Deliver(acct, mailtest.Message(n, "m"))
		}
		switch r.IntN(5) {
		case 0:
			st.StoreFlags(ctx, inbox.ID, pick(), store.FlagsAdd, []string{`\Seen`})
		case 1:
			st.StoreFlags(ctx, inbox.ID, pick(), store.FlagsRemove, []string{`\Seen`})
		case 2:
			st.StoreFlags(ctx, inbox.ID, pick(), store.FlagsAdd, []string{`\Deleted`})
			st.Expunge(ctx, inbox.ID, nil)
		case 3:
			if u := pick(); len(u) > 0 {
				st.MoveMessages(ctx, inbox.ID, u, work.ID)
			}
		case 4:
			if u := pick(); len(u) > 0 {
				st.CopyMessages(ctx, inbox.ID, u, work.ID)
			}
		}
	}
}
