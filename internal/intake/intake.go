// Package intake commits accepted mail (DESIGN.md "the path of one message", step 3). A front
// end (the SMTP server now; IMAP APPEND and sendmail later) begins a Draft, streams the message
// into it, and commits it with the envelope; Commit returns only once the message is durable.
//
// Blob format: every stored message starts with a "Return-Path: <sender>" line written by
// Begin (RFC 5321 4.4: added at final delivery). Mailboxes show the blob as is; the relay path
// skips that first line (ReturnPathLen tells how long it is), so one file serves both.
package intake

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"yubin/internal/address"
	"yubin/internal/directory"
	"yubin/internal/store"
)

// Store is what intake needs from storage.
type Store interface {
	NewBufferedBlob() (*store.BlobWriter, error)
	Deliver(ctx context.Context, c *store.Commit) error
}

// Resolver decides where mail for an address goes.
type Resolver interface {
	Resolve(ctx context.Context, addr address.Address) (directory.Resolution, error)
}

// Intake is shared by every front end; it holds no per-message state.
type Intake struct {
	Store     Store
	Directory Resolver
	Logger    *slog.Logger
	Now       func() time.Time
	// DKIM gives the signing keys for submitted mail; nil disables signing.
	DKIM KeySource
	// Queued, when set, is called after a commit that queued remote recipients, so the
	// queue attempts them at once instead of at its next poll.
	Queued func()
	// Relay, when set, takes the remote recipients of a commit straight from it, already
	// claimed, when it has room (queue.Scheduler); otherwise they are queued and Queued is
	// called.
	Relay Handoff
	// Delivered, when set, is called with the message id after a commit that put the message
	// into local mailboxes (the IMAP indexer caches its envelope then). It must not block.
	Delivered func(messageID string)

	keys keyCache
}

// Handoff takes queue entries from a commit (see queue.Scheduler.Reserve): Reserve(n) before
// the commit says whether to store its n remote recipients claimed; after it, Take gets the
// entries stored, or Release(n) undoes the reservation of a commit that failed.
type Handoff interface {
	Reserve(n int) bool
	Release(n int)
	Take(es []store.QueueEntry)
}

// Recipient is one accepted envelope recipient and where it goes.
type Recipient struct {
	Address string // as accepted, e.g. "user+tag@example.org"
	Targets []directory.Target
	// RFC 3461 NOTIFY and ORCPT as received; they go with remote targets to the queue.
	Notify, ORCPT string
}

// Envelope is what the transaction said besides the content.
type Envelope struct {
	From       string // reverse path; "" is the null sender
	Recipients []Recipient
	// RFC 3461 RET and ENVID; SMTPUTF8 (RFC 6531) and BODY=8BITMIME (RFC 6152) as declared.
	Ret, EnvID         string
	SMTPUTF8, EightBit bool
}

// Resolve is the directory's answer for addr.
func (in *Intake) Resolve(ctx context.Context, addr address.Address) (directory.Resolution, error) {
	return in.Directory.Resolve(ctx, addr)
}

// Draft is a message being received. Write streams into its blob; nothing is visible until
// Commit succeeds. A Draft is used by one goroutine.
type Draft struct {
	in            *Intake
	bw            *store.BlobWriter
	returnPathLen int
	done          bool
}

// Begin starts a message from the envelope sender from.
func (in *Intake) Begin(ctx context.Context, from string) (*Draft, error) {
	bw, err := in.Store.NewBufferedBlob()
	if err != nil {
		return nil, fmt.Errorf("new blob: %w", err)
	}
	d := &Draft{in: in, bw: bw}
	n, err := fmt.Fprintf(bw, "Return-Path: <%s>\r\n", from)
	if err != nil {
		d.Abort()
		return nil, fmt.Errorf("write blob: %w", err)
	}
	d.returnPathLen = n
	return d, nil
}

// ID is the message id, known from the start so that trace headers can name it.
func (d *Draft) ID() string { return d.bw.ID() }

// Write appends message bytes.
func (d *Draft) Write(p []byte) (int, error) { return d.bw.Write(p) }

// Size is the number of bytes written so far, Return-Path included.
func (d *Draft) Size() int64 { return d.bw.Size() }

// ReturnPathLen is the length of the Return-Path line that starts the blob.
func (d *Draft) ReturnPathLen() int { return d.returnPathLen }

// Commit makes the message durable for every recipient in one commit: local targets get a
// mailbox entry, remote ones a queue entry. On error nothing is stored.
func (d *Draft) Commit(ctx context.Context, env Envelope) error {
	c := &store.Commit{Blob: d.bw, From: env.From, ReceivedAt: d.now(),
		Ret: env.Ret, EnvID: env.EnvID, SMTPUTF8: env.SMTPUTF8, EightBit: env.EightBit}
	seenLocal := map[int64]bool{}
	seenRemote := map[string]bool{}
	for _, r := range env.Recipients {
		for _, t := range r.Targets {
			switch {
			case t.Remote:
				if !seenRemote[t.Address] {
					seenRemote[t.Address] = true
					c.Recipients = append(c.Recipients, store.Recipient{Address: t.Address, Remote: true, Notify: r.Notify, ORCPT: r.ORCPT})
				}
			case t.AccountID > 0:
				if !seenLocal[t.AccountID] {
					seenLocal[t.AccountID] = true
					c.Recipients = append(c.Recipients, store.Recipient{Address: r.Address, AccountID: t.AccountID})
				}
			}
		}
	}
	if len(c.Recipients) == 0 {
		d.Abort()
		return fmt.Errorf("commit %s: no deliverable recipient", d.ID())
	}
	remotes := len(seenRemote)
	c.Claim = remotes > 0 && d.in.Relay != nil && d.in.Relay.Reserve(remotes)
	if err := d.in.Store.Deliver(ctx, c); err != nil {
		if c.Claim {
			d.in.Relay.Release(remotes)
		}
		d.Abort()
		return fmt.Errorf("commit %s: %w", d.ID(), err)
	}
	d.done = true
	switch {
	case c.Claim:
		if n := remotes - len(c.Claimed); n > 0 {
			d.in.Relay.Release(n)
		}
		d.in.Relay.Take(c.Claimed)
	case remotes > 0 && d.in.Queued != nil:
		d.in.Queued()
	}
	if len(seenLocal) > 0 && d.in.Delivered != nil {
		d.in.Delivered(d.ID())
	}
	return nil
}

// Abort drops the draft. It is safe after Commit and more than once.
func (d *Draft) Abort() {
	if d.done {
		return
	}
	d.done = true
	_ = d.bw.Abort()
}

func (d *Draft) now() time.Time {
	if d.in.Now != nil {
		return d.in.Now()
	}
	return time.Now()
}
