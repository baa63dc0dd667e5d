package store

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
)

// fillMailbox adds n entries to an account's INBOX straight through SQL (a benchmark's setup,
// not a delivery), every third one \Seen, each with a cached parse.
func fillMailbox(b *testing.B, s *Store, acct int64, n int) Mailbox {
	ctx := context.Background()
	inbox, err := s.GetMailbox(ctx, acct, "INBOX")
	if err != nil {
		b.Fatal(err)
	}
	err = s.writeTx(ctx, func(tx *sql.Tx) error {
		for i := 1; i <= n; i++ {
			id := fmt.Sprintf("bench%08d", i)
			flags := ""
			if i%3 != 0 {
				flags = `\Seen`
			}
			if _, err := tx.Exec(`INSERT INTO messages (id, blob_path, size, received_at, env_from, data) VALUES (?, '', 100, 0, '', x'00')`, id); err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO mailbox_messages (mailbox_id, uid, message_id, flags, modseq, internal_date) VALUES (?, ?, ?, ?, 1, 0)`, inbox.ID, i, id, flags); err != nil {
				return err
			}
			search := fmt.Sprintf("sender %d <sender%d@example.net>\nbenchmark message %d about lorem\n<bench%d@example.net>\n", i%50, i%50, i, i)
			if _, err := tx.Exec(`INSERT INTO message_meta (message_id, size, header, structure, envelope, search) VALUES (?, 100, ?, x'7b7d', ?, ?)`, id, make([]byte, 400), make([]byte, 150), search); err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO mailbox_search (mailbox_id, uid, search) VALUES (?, ?, ?)`, inbox.ID, i, search); err != nil {
				return err
			}
		}
		_, err := tx.Exec(`UPDATE mailboxes SET uidnext = ? WHERE id = ?`, n+1, inbox.ID)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return inbox
}

func benchStore(b *testing.B) (*Store, Account, Mailbox) {
	s := newTestStore(b, Options{})
	a := mustAccount(b, s, "ana@example.org")
	return s, a, fillMailbox(b, s, a.ID, 10000)
}

func BenchmarkSnapshotMailbox(b *testing.B) {
	s, a, _ := benchStore(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := s.SnapshotMailbox(ctx, a.ID, "INBOX"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMessagesWithEnvelope(b *testing.B) {
	s, _, inbox := benchStore(b)
	ctx := context.Background()
	uids := make([]uint32, 256)
	for b.Loop() {
		for first := uint32(1); first <= 10000; first += 256 {
			uids = uids[:0]
			for u := first; u < first+256 && u <= 10000; u++ {
				uids = append(uids, u)
			}
			if _, err := s.MessagesWithMeta(ctx, inbox.ID, uids, MetaEnvelope); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkSearchCandidates(b *testing.B) {
	s, _, inbox := benchStore(b)
	ctx := context.Background()
	for b.Loop() {
		c, err := s.SearchCandidates(ctx, inbox.ID, [][]byte{[]byte("<bench6666@example.net>")})
		if err != nil || len(c) != 1 {
			b.Fatal(c, err)
		}
	}
}

// BenchmarkPutMessageMeta writes parses into the cache: a first FETCH's batch (2048) and the
// IMAP indexer's batch of new mail (32, imapserver's indexWrite).
func BenchmarkPutMessageMeta(b *testing.B) {
	s, _, inbox := benchStore(b)
	ctx := context.Background()
	var ids []string
	rows, _ := s.r.QueryContext(ctx, `SELECT message_id FROM mailbox_messages WHERE mailbox_id = ? ORDER BY uid LIMIT 2048`, inbox.ID)
	for rows.Next() {
		var id string
		rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()
	for _, n := range []int{2048, 32} {
		metas := map[string]MessageMeta{}
		for _, id := range ids[:n] {
			metas[id] = MessageMeta{Header: make([]byte, 400), Structure: make([]byte, 150), Envelope: make([]byte, 200), Search: make([]byte, 200)}
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				if _, err := s.w.Exec(`DELETE FROM message_meta; DELETE FROM mailbox_search`); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := s.PutMessageMeta(ctx, metas); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMessagesWithEnvelopeUncached(b *testing.B) {
	s, _, inbox := benchStore(b)
	ctx := context.Background()
	if _, err := s.w.Exec(`DELETE FROM message_meta`); err != nil {
		b.Fatal(err)
	}
	uids := make([]uint32, 256)
	for b.Loop() {
		for first := uint32(1); first <= 10000; first += 256 {
			uids = uids[:0]
			for u := first; u < first+256 && u <= 10000; u++ {
				uids = append(uids, u)
			}
			if _, err := s.MessagesWithMeta(ctx, inbox.ID, uids, MetaEnvelope); err != nil {
				b.Fatal(err)
			}
		}
	}
}
