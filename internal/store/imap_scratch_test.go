package store

import (
	"context"
	"testing"
	"time"
)

func BenchmarkScratch(b *testing.B) {
	s, _, inbox := benchStore(b)
	ctx := context.Background()
	for _, q := range []string{
		`SELECT count(*) FROM mailbox_messages mm WHERE mm.mailbox_id = ?`,
		`SELECT count(*) FROM mailbox_messages mm WHERE mm.mailbox_id = ? AND instr(mm.flags, 'x') = 0`,
		`SELECT count(*) FROM mailbox_messages mm JOIN message_meta mt ON mt.message_id = mm.message_id WHERE mm.mailbox_id = ?`,
		`SELECT count(*) FROM mailbox_messages mm JOIN message_meta mt ON mt.message_id = mm.message_id WHERE mm.mailbox_id = ? AND instr(mt.search, '<bench6666@example.net>') > 0`,
		`SELECT count(*) FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id WHERE mm.mailbox_id = ?`,
		`SELECT count(*) FROM message_meta mt WHERE instr(mt.search, '<bench6666@example.net>') > 0`,
		`SELECT count(*) FROM message_meta mt WHERE mt.search LIKE '%<bench6666@example.net>%'`,
		`SELECT group_concat(uid) FROM mailbox_messages mm WHERE mm.mailbox_id = ?`,
	} {
		start := time.Now()
		for range 10 {
			var n any
			if err := s.r.QueryRowContext(ctx, q, inbox.ID).Scan(&n); err != nil {
				b.Log(err)
			}
		}
		b.Logf("%6.2f ms  %s", float64(time.Since(start).Microseconds())/10000, q)
	}
}
