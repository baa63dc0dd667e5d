package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"yubin/internal/address"
	"yubin/internal/config"
	"yubin/internal/directory"
	"yubin/internal/dns"
	"yubin/internal/dsn"
	"yubin/internal/intake"
	"yubin/internal/outbound"
	"yubin/internal/queue"
	"yubin/internal/store"
)

// newRelay builds the outbound SMTP client and the queue scheduler from the config.
func newRelay(cfg config.Config, st *store.Store, in *intake.Intake, dir *directory.Directory, log *slog.Logger) (*outbound.Client, *queue.Scheduler) {
	res := dns.NewResolver(cfg.Relay.DNSServers, 10*time.Second)
	client := &outbound.Client{
		Hostname:    cfg.Hostname,
		Resolver:    res,
		Routes:      map[string]outbound.Route{},
		Port:        cfg.Relay.Port,
		Logger:      log.With("component", "outbound"),
		IdleTimeout: cfg.Relay.ConnectionReuse.D(),
		MaxIdle:     cfg.Relay.PerDestination,
	}
	for dom, r := range cfg.Relay.Routes {
		client.Routes[dom] = outbound.Route{Host: r.Host, Username: r.Username, Password: r.Password, TLS: r.TLS, InsecureSkipVerify: r.InsecureSkipVerify}
	}
	if cfg.Relay.MTASTS {
		client.MTASTS = &outbound.HTTPFetcher{Resolver: res, Cache: outbound.NewPolicyCache()}
	}
	sched := &queue.Scheduler{
		Store:          st,
		Deliverer:      deliverer{client},
		Bounces:        &bounceCommitter{in: in, dir: dir},
		Logger:         log.With("component", "queue"),
		Hostname:       cfg.Hostname,
		Concurrency:    cfg.Relay.Concurrency,
		PerDestination: cfg.Relay.PerDestination,
		Retry: queue.RetryPolicy{
			First:        cfg.Relay.RetryFirst.D(),
			Max:          cfg.Relay.RetryMax.D(),
			Lifetime:     cfg.Relay.Lifetime.D(),
			DelayWarning: cfg.Relay.DelayWarning.D(),
		},
	}
	return client, sched
}

// deliverer adapts the outbound client to the queue's consumer interface: the same shapes,
// field by field.
type deliverer struct{ c *outbound.Client }

func (d deliverer) Deliver(ctx context.Context, q *queue.Delivery) queue.Result {
	od := &outbound.Delivery{
		MessageID: q.MessageID, From: q.From, Domain: q.Domain, Size: q.Size, Open: q.Open,
		SMTPUTF8: q.SMTPUTF8, EightBit: q.EightBit, Ret: q.Ret, EnvID: q.EnvID,
	}
	for _, r := range q.Recipients {
		od.Recipients = append(od.Recipients, outbound.Recipient{Address: r.Address, Notify: r.Notify, ORCPT: r.ORCPT})
	}
	or := d.c.Deliver(ctx, od)
	var res queue.Result
	for _, r := range or.Rcpts {
		res.Rcpts = append(res.Rcpts, queue.RcptResult{Address: r.Address, Reply: r.Reply, MX: r.MX})
	}
	for _, a := range or.Attempts {
		res.Attempts = append(res.Attempts, queue.Attempt{Time: a.Time, MX: a.MX, IP: a.IP, TLS: a.TLS, Reply: a.Reply})
	}
	return res
}

// bounceCommitter commits a report from the null sender through intake, like any message:
// into a local mailbox, or queued for relay.
type bounceCommitter struct {
	in  *intake.Intake
	dir *directory.Directory
}

// permanent marks an error no retry can fix (nobody can receive the report).
type permanent struct{ error }

func (permanent) Temporary() bool { return false }

func (b *bounceCommitter) CommitBounce(ctx context.Context, to string, m *dsn.Message) (string, error) {
	a, err := address.Parse(to, address.Options{AllowUTF8: true})
	if err != nil {
		return "", permanent{fmt.Errorf("bounce to %q: %w", to, err)}
	}
	res, err := b.dir.Resolve(ctx, a)
	switch {
	case errors.Is(err, directory.ErrNoSuchUser), errors.Is(err, directory.ErrRouting), errors.Is(err, directory.ErrAliasLoop):
		return "", permanent{fmt.Errorf("bounce to %s: %w", to, err)}
	case err != nil:
		return "", err
	}
	targets := res.Targets
	if !res.Hosted {
		targets = []directory.Target{{Address: a.String(), Remote: true}}
	}
	d, err := b.in.Begin(ctx, "")
	if err != nil {
		return "", err
	}
	if _, err := d.Write(m.Data); err != nil {
		d.Abort()
		return "", err
	}
	env := intake.Envelope{Recipients: []intake.Recipient{{Address: a.String(), Targets: targets}}, SMTPUTF8: m.SMTPUTF8, EightBit: m.EightBit}
	if err := d.Commit(ctx, env); err != nil {
		return "", err
	}
	return d.ID(), nil
}
