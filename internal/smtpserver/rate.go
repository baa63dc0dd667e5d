package smtpserver

import (
	"sync"
	"time"
)

// rateLimiter counts each account's accepted messages and recipients over the last hour,
// in memory (a restart forgives, which is the safe direction for a limit against abuse by
// a stolen password).
type rateLimiter struct {
	maxMsgs, maxRcpts int
	now               func() time.Time

	mu   sync.Mutex
	sent map[string][]sentRecord // account -> records within the last hour, oldest first
}

type sentRecord struct {
	at    time.Time
	rcpts int
}

func newRateLimiter(maxMsgs, maxRcpts int, now func() time.Time) *rateLimiter {
	return &rateLimiter{maxMsgs: maxMsgs, maxRcpts: maxRcpts, now: now, sent: map[string][]sentRecord{}}
}

func (r *rateLimiter) usage(account string) (msgs, rcpts int) {
	cutoff := r.now().Add(-time.Hour)
	recs := r.sent[account]
	i := 0
	for i < len(recs) && !recs[i].at.After(cutoff) {
		i++
	}
	recs = recs[i:]
	if len(recs) == 0 {
		delete(r.sent, account)
	} else {
		r.sent[account] = recs
	}
	for _, rec := range recs {
		rcpts += rec.rcpts
	}
	return len(recs), rcpts
}

// allowMessage tells whether account may start another message.
func (r *rateLimiter) allowMessage(account string) bool {
	if r.maxMsgs <= 0 {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m, _ := r.usage(account)
	return m < r.maxMsgs
}

// allowRecipients tells whether account may address n recipients in the current message.
func (r *rateLimiter) allowRecipients(account string, n int) bool {
	if r.maxRcpts <= 0 {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, used := r.usage(account)
	return used+n <= r.maxRcpts
}

// record counts an accepted message.
func (r *rateLimiter) record(account string, rcpts int) {
	if r.maxMsgs <= 0 && r.maxRcpts <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent[account] = append(r.sent[account], sentRecord{at: r.now(), rcpts: rcpts})
}
