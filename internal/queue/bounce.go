package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"yubin/internal/dsn"
	"yubin/internal/lazylog"
	"yubin/internal/store"
)

// bounceGiveUp is how long after its expiry an entry whose bounce cannot be committed (the
// disk is full, say) keeps trying before it is dropped with a logged error.
const bounceGiveUp = 24 * time.Hour

// bounce reports failed entries (claimed: state bouncing) to their senders, one report per
// message, and then deletes them. RFC 3461 4.1 and RFC 5321 4.5.5: no report to the null
// sender, so a bounce is never bounced, nor when NOTIFY excludes FAILURE.
func (r *runner) bounce(ctx context.Context, entries []store.QueueEntry) {
	for _, es := range byMessage(entries) {
		first := es[0]
		log := lazylog.With(r.log, "msgid", first.MessageID)
		var owed []store.QueueEntry
		for _, e := range es {
			if first.From != "" && notifies(e.Notify, "FAILURE") {
				owed = append(owed, e)
			}
		}
		ups := make([]store.QueueUpdate, 0, len(es))
		if len(owed) == 0 {
			for _, e := range es {
				ups = append(ups, store.QueueUpdate{ID: e.ID, Delete: true, MessageID: e.MessageID, BlobPath: e.BlobPath})
			}
			log.Info("failed, no bounce owed", "from", first.From, "rcpts", rcpts(es))
		} else if id, err := r.commitReport(ctx, owed, dsn.Failed); err != nil {
			now := r.now()
			var tmp interface{ Temporary() bool }
			permanent := errors.As(err, &tmp) && !tmp.Temporary()
			for _, e := range es {
				if permanent || now.After(r.expiry(e).Add(bounceGiveUp)) {
					log.Error("bounce could not be committed; giving up", "rcpt", e.Rcpt, "to", first.From, "err", err)
					ups = append(ups, store.QueueUpdate{ID: e.ID, Delete: true, MessageID: e.MessageID, BlobPath: e.BlobPath})
					continue
				}
				ups = append(ups, store.QueueUpdate{ID: e.ID, Claim: store.QueueBouncing, State: store.QueueFailed,
					NextAttempt: now.Add(r.retry.First)})
			}
			log.Error("bounce could not be committed; will retry", "to", first.From, "err", err)
		} else {
			for _, e := range es {
				ups = append(ups, store.QueueUpdate{ID: e.ID, Delete: true, MessageID: e.MessageID, BlobPath: e.BlobPath})
			}
			log.Info("bounced", "to", first.From, "rcpts", rcpts(owed), "bounce_msgid", id)
		}
		if err := r.update(ctx, ups); err != nil {
			// A committed bounce whose rows stay is committed again after a restart: a
			// duplicate, never a loss.
			log.Error("record bounce", "err", err)
		}
	}
}

// warnDelayed sends one "delayed" report per message for entries already marked warned.
func (r *runner) warnDelayed(ctx context.Context, entries []store.QueueEntry) {
	for _, es := range byMessage(entries) {
		log := lazylog.With(r.log, "msgid", es[0].MessageID)
		id, err := r.commitReport(ctx, es, dsn.Delayed)
		if err != nil {
			log.Error("delay warning could not be committed", "to", es[0].From, "err", err)
			continue
		}
		log.Info("delay warning sent", "to", es[0].From, "rcpts", rcpts(es), "warning_msgid", id)
	}
}

// commitReport builds the report on entries of one message and commits it to its sender.
func (r *runner) commitReport(ctx context.Context, es []store.QueueEntry, action dsn.Action) (string, error) {
	first := es[0]
	rep := &dsn.Report{
		Hostname:    r.s.Hostname,
		To:          first.From,
		Date:        r.now(),
		EnvID:       first.EnvID,
		ArrivalDate: first.ReceivedAt,
		Ret:         first.Ret,
		MaxFull:     r.s.MaxReturned,
	}
	for _, e := range es {
		reply := parseReply(e.LastError)
		rc := dsn.Recipient{
			Address: e.Rcpt, ORCPT: e.ORCPT, Action: action,
			Reply: reply, RemoteMTA: e.LastMX, LastAttempt: e.LastAttempt,
		}
		if action == dsn.Delayed {
			rc.WillRetryUntil = r.expiry(e)
		} else {
			// Failed with a temporary reply: the lifetime ran out.
			rc.Expired = reply != nil && reply.Temporary()
		}
		rep.Recipients = append(rep.Recipients, rc)
	}
	c, size, err := openContent(ctx, r.s.Store, first.MessageID)
	if err != nil {
		// Better a report without the original than none.
		r.log.Warn("report without the original message", "msgid", first.MessageID, "err", err)
	} else {
		defer c.Close()
		rep.Original, rep.OriginalSize = c, size
	}
	m, err := rep.Build()
	if err != nil {
		return "", fmt.Errorf("build report: %w", err)
	}
	return r.s.Bounces.CommitBounce(ctx, first.From, m)
}

// byMessage splits entries by message, keeping their order.
func byMessage(es []store.QueueEntry) [][]store.QueueEntry {
	idx := map[string]int{}
	var out [][]store.QueueEntry
	for _, e := range es {
		i, ok := idx[e.MessageID]
		if !ok {
			i = len(out)
			idx[e.MessageID] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], e)
	}
	return out
}

func rcpts(es []store.QueueEntry) string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Rcpt
	}
	return strings.Join(s, ",")
}
