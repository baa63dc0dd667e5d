package queue

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"yubin/internal/lazylog"
	"yubin/internal/smtp"
	"yubin/internal/store"
)

// smallContent is the size up to which a message is held in memory during its delivery.
const smallContent = 256 << 10

// writeTimeout bounds the bookkeeping after a delivery. It runs on a context detached from
// Run's, so that a shutdown still records what the delivery in flight achieved.
const writeTimeout = 30 * time.Second

// attempt delivers one group and records the outcome for each recipient. It calls free once,
// as soon as the delivery is over and before the results are written: the slot (the
// connection) serves the next delivery while the results wait for the store's writer. The
// entries stay claimed until their results are written, so nobody takes them meanwhile.
func (s *Scheduler) attempt(ctx context.Context, r *runner, g *group, free func()) {
	freed := false
	freeSlot := func() {
		if !freed {
			freed = true
			free()
		}
	}
	defer freeSlot()
	first := g.entries[0]
	log := lazylog.With(r.log, "msgid", first.MessageID, "domain", g.key.domain)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()

	// An operator may have removed or bounced an entry while it waited for a slot. An entry
	// dispatched by the pass that claimed it has not waited: it was claimed a moment ago,
	// and checking it again (a read per message) would only narrow a race that its delivery
	// has anyway; its results are written only if it is still claimed (UpdateQueue).
	entries := g.entries
	if !g.fresh {
		ids := make([]int64, len(entries))
		for i, e := range entries {
			ids[i] = e.ID
		}
		still, err := s.Store.QueueIDsInState(ctx, store.QueueActive, ids)
		if err != nil {
			log.Error("check queue entries before delivery", "err", err)
			r.release(wctx, log, entries)
			return
		}
		entries = entries[:0:0]
		for _, e := range g.entries {
			if still[e.ID] {
				entries = append(entries, e)
			}
		}
		if len(entries) == 0 {
			return
		}
	}

	d := &Delivery{
		MessageID: first.MessageID,
		From:      first.From,
		Domain:    g.key.domain,
		SMTPUTF8:  first.SMTPUTF8,
		EightBit:  first.EightBit,
		Ret:       first.Ret,
		EnvID:     decodeParam(first.EnvID, false),
	}
	for _, e := range entries {
		d.Recipients = append(d.Recipients, Recipient{Address: e.Rcpt, Notify: e.Notify, ORCPT: decodeParam(e.ORCPT, true)})
	}
	var res Result
	c, size, err := openContent(ctx, s.Store, first.MessageID)
	if err != nil {
		log.Error("cannot read queued message", "err", err)
		res = localResult(d, smtp.NewReply(451, "4.3.0", "local error: the queued message cannot be read"))
	} else {
		d.Size = size
		if c.mem != nil {
			// The store holds the message in memory (see store.OpenMessage): no copy.
			b := c.mem
			c.Close()
			d.Open = func() (io.ReadCloser, error) { return newMemContent(b), nil }
		} else if size <= smallContent {
			// The client reads the content more than once (a check, then each attempt):
			// a small message is read once into memory instead of queried each time.
			// The size is known: one allocation, where io.ReadAll would grow its buffer
			// from 512 bytes (a dozen copies for 100 KiB).
			b := make([]byte, size)
			_, err := io.ReadFull(c, b)
			c.Close()
			if err != nil {
				log.Error("cannot read queued message", "err", err)
				res = localResult(d, smtp.NewReply(451, "4.3.0", "local error: the queued message cannot be read"))
				r.record(wctx, log, entries, res, ctx.Err() != nil)
				return
			}
			d.Open = func() (io.ReadCloser, error) { return newMemContent(b), nil }
		} else {
			c.Close()
			d.Open = func() (io.ReadCloser, error) {
				c, _, err := openContent(ctx, s.Store, first.MessageID)
				if err != nil {
					return nil, err
				}
				return c, nil
			}
		}
		res = s.Deliverer.Deliver(ctx, d)
	}
	freeSlot()
	r.record(wctx, log, entries, res, ctx.Err() != nil)
}

// localResult gives every recipient of d the same reply made up by yubin.
func localResult(d *Delivery, reply *smtp.Reply) Result {
	var res Result
	for _, rc := range d.Recipients {
		res.Rcpts = append(res.Rcpts, RcptResult{Address: rc.Address, Reply: reply})
	}
	return res
}

// release returns claimed entries to the queue unchanged, as if they had not been claimed.
func (r *runner) release(ctx context.Context, log *slog.Logger, es []store.QueueEntry) {
	ups := make([]store.QueueUpdate, len(es))
	for i, e := range es {
		ups[i] = store.QueueUpdate{ID: e.ID, Claim: store.QueueActive, State: store.QueueQueued, NextAttempt: e.NextAttempt}
	}
	if err := r.update(ctx, ups); err != nil {
		log.Error("release queue entries", "err", err)
	}
}

// record applies the per-recipient outcome of a delivery: 2xx removes the entry, 5xx or a 4xx
// past the expiry makes it bounce, another 4xx schedules the next attempt (and maybe a delay
// warning). interrupted means Run's context ended during the delivery: a temporary failure is
// then our doing, not the peer's, and counts for nothing.
func (r *runner) record(ctx context.Context, log *slog.Logger, entries []store.QueueEntry, res Result, interrupted bool) {
	now := r.now()
	byAddr := make(map[string]RcptResult, len(res.Rcpts))
	for _, rr := range res.Rcpts {
		byAddr[rr.Address] = rr
	}
	var ups []store.QueueUpdate
	var failed, warn []store.QueueEntry
	for _, e := range entries {
		rr, ok := byAddr[e.Rcpt]
		if !ok {
			rr, ok = findFold(res.Rcpts, e.Rcpt)
		}
		reply := rr.Reply
		if reply == nil {
			reply = smtp.NewReply(451, "4.4.0", "no result for this recipient from the delivery")
			rr.MX = ""
		}
		rlog := lazylog.With(log, "rcpt", e.Rcpt, "mx", rr.MX, "reply", reply)
		switch {
		case reply.Code/100 == 2:
			ups = append(ups, store.QueueUpdate{ID: e.ID, Delete: true, MessageID: e.MessageID, BlobPath: e.BlobPath})
			rlog.Info("delivered")
			continue
		case interrupted && reply.Code/100 != 5:
			ups = append(ups, store.QueueUpdate{ID: e.ID, Claim: store.QueueActive, State: store.QueueQueued, NextAttempt: e.NextAttempt})
			continue
		}
		e.LastError, e.LastMX, e.LastAttempt = reply.Error(), rr.MX, now
		up := store.QueueUpdate{
			ID: e.ID, Claim: store.QueueActive, CountAttempt: true,
			LastError: e.LastError, LastMX: e.LastMX, LastAttempt: now,
			Timeline: timeline(res.Attempts, rr, reply, now),
		}
		expiry := r.expiry(e)
		switch {
		case reply.Code/100 == 5:
			up.State, up.NextAttempt = store.QueueBouncing, now
			failed = append(failed, e)
			rlog.Info("failed", "attempts", e.Attempts+1)
		case !now.Before(expiry):
			up.State, up.NextAttempt = store.QueueBouncing, now
			failed = append(failed, e)
			rlog.Info("expired", "attempts", e.Attempts+1, "queued_since", e.Created)
		default:
			next := now.Add(r.retry.Backoff(e.Attempts + 1))
			if next.After(expiry) {
				next = expiry // one last attempt when the lifetime ends
			}
			up.State, up.NextAttempt = store.QueueQueued, next
			if r.owesWarning(e, now) {
				up.SetWarned = true
				warn = append(warn, e)
			}
			rlog.Info("deferred", "attempts", e.Attempts+1, "next_attempt", next)
		}
		ups = append(ups, up)
	}
	if err := r.update(ctx, ups); err != nil {
		// The entries stay claimed until the scheduler restarts: then they are tried again.
		log.Error("record delivery results", "err", err)
		return
	}
	if len(failed) > 0 {
		for i := range failed {
			failed[i].State = store.QueueBouncing
		}
		r.bounce(ctx, failed)
	}
	if len(warn) > 0 {
		r.warnDelayed(ctx, warn)
	}
}

func findFold(rs []RcptResult, addr string) (RcptResult, bool) {
	for _, rr := range rs {
		if strings.EqualFold(rr.Address, addr) {
			return rr, true
		}
	}
	return RcptResult{}, false
}

// timeline turns the connection attempts of a delivery into the timeline of one recipient.
// The last attempt to the host that answered for the recipient shows that recipient's own
// reply; with no attempt at all (a DNS failure, say) the timeline gets one line with the
// reply.
func timeline(as []Attempt, rr RcptResult, reply *smtp.Reply, now time.Time) []store.QueueAttempt {
	out := make([]store.QueueAttempt, len(as))
	last := -1
	for i, a := range as {
		out[i] = store.QueueAttempt{Time: a.Time, MX: a.MX, IP: a.IP, TLS: a.TLS, Reply: a.Reply}
		if a.MX == rr.MX {
			last = i
		}
	}
	if last < 0 && rr.MX == "" && len(out) > 0 {
		last = len(out) - 1
	}
	if last >= 0 {
		out[last].Reply = reply.Error()
		return out
	}
	return append(out, store.QueueAttempt{Time: now, MX: rr.MX, Reply: reply.Error()})
}

// expiry is when an entry bounces instead of being retried: its stored expiry, or earlier if
// the configured lifetime is shorter.
func (r *runner) expiry(e store.QueueEntry) time.Time {
	if t := e.Created.Add(r.retry.Lifetime); t.Before(e.Expires) {
		return t
	}
	return e.Expires
}

// owesWarning: RFC 3461 4.1, a delay report only if the sender asked for it; yubin treats an
// absent NOTIFY as FAILURE,DELAY (which RFC 3461 allows). Once per entry, never for the null
// sender.
func (r *runner) owesWarning(e store.QueueEntry, now time.Time) bool {
	return r.retry.DelayWarning > 0 && !e.Warned && e.From != "" && notifies(e.Notify, "DELAY") &&
		now.Sub(e.Created) >= r.retry.DelayWarning
}

// notifies reports whether an RFC 3461 NOTIFY value asks for what (FAILURE or DELAY).
// Absent means FAILURE,DELAY; NEVER means nothing.
func notifies(notify, what string) bool {
	if notify == "" {
		return what == "FAILURE" || what == "DELAY"
	}
	for _, v := range strings.Split(notify, ",") {
		if strings.EqualFold(strings.TrimSpace(v), what) {
			return true
		}
	}
	return false
}

// parseReply reads back a reply stored with Reply.Error(): "550 5.1.1 text". Lines joined
// with "; " stay one line.
func parseReply(s string) *smtp.Reply {
	if len(s) < 3 {
		return nil
	}
	code, err := strconv.Atoi(s[:3])
	if err != nil || code < 200 || code > 599 {
		return nil
	}
	text := strings.TrimPrefix(s[3:], " ")
	enh, rest, _ := strings.Cut(text, " ")
	if smtp.ValidEnhanced(code, enh) {
		return &smtp.Reply{Code: code, Enhanced: enh, Lines: []string{rest}}
	}
	return &smtp.Reply{Code: code, Lines: []string{text}}
}
