// Package app wires yubin together: it opens the data directory, builds the directory,
// intake and protocol servers from the configuration, and runs them until shutdown. It is the
// only package that sees all the others.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"yubin/internal/config"
	"yubin/internal/directory"
	"yubin/internal/imapserver"
	"yubin/internal/intake"
	"yubin/internal/netutil"
	"yubin/internal/outbound"
	"yubin/internal/pop3server"
	"yubin/internal/queue"
	"yubin/internal/smtpserver"
	"yubin/internal/store"
	"yubin/internal/tlsutil"
)

// App is one running yubin.
type App struct {
	cfg    config.Config
	log    *slog.Logger
	Store  *store.Store
	Dir    *directory.Directory
	Intake *intake.Intake
	tlsCfg *tls.Config

	indexer   *imapserver.Indexer
	outbound  *outbound.Client
	queue     *queue.Scheduler
	queueStop context.CancelFunc
	queueDone chan error
	services  []*service
	listeners []listener
	wg        sync.WaitGroup
	serveErr  chan error
}

type listener struct {
	svc *service
	l   net.Listener
}

// New opens the data directory and builds the servers. Nothing listens yet.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, cfg.DataDir, store.Options{Logger: log, QueueLifetime: cfg.Relay.Lifetime.D(), Journal: true})
	if err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, log: log, Store: st, serveErr: make(chan error, 8)}
	if n, err := st.CleanupOrphans(ctx, time.Hour); err != nil {
		log.Warn("cleanup of orphaned files failed", "err", err)
	} else if n > 0 {
		log.Info("removed orphaned files left by an interrupted commit", "count", n)
	}
	a.Dir = &directory.Directory{Backend: DirectoryBackend{st}, DetailSep: cfg.SMTP.SubaddressSeparator}
	a.Intake = &intake.Intake{Store: st, Directory: a.Dir, Logger: log, DKIM: st}
	a.outbound, a.queue = newRelay(cfg, st, a.Intake, a.Dir, log)
	a.Intake.Queued = a.queue.Wake
	a.Intake.Relay = a.queue
	// New mail is parsed for IMAP in the background, after its 250, so that a client's first
	// FETCH of the mailbox finds the envelopes cached.
	a.indexer = imapserver.NewIndexer(st, log.With("component", "imap-indexer"))
	a.Intake.Delivered = a.indexer.Queue
	certFile, keyFile := cfg.TLS.CertFile, cfg.TLS.KeyFile
	if certFile == "" {
		certFile, keyFile, err = tlsutil.EnsureSelfSigned(filepath.Join(cfg.DataDir, "tls"), cfg.Hostname)
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("self-signed certificate: %w", err)
		}
	}
	rl, err := tlsutil.NewReloader(certFile, keyFile)
	if err != nil {
		st.Close()
		return nil, err
	}
	// tlsutil.ServerConfig turns session tickets off (Outlook interop, golang/go#70232).
	// The MX listener takes any TLS version a peer offers: opportunistic TLS (RFC 7435)
	// beats clear text. Submission requires TLS 1.2 (RFC 8996).
	mxTLS := tlsutil.ServerConfig(rl.GetCertificate, tls.VersionTLS10)
	subTLS := tlsutil.ServerConfig(rl.GetCertificate, tls.VersionTLS12)
	a.tlsCfg = subTLS
	a.Dir.Guard = directory.NewGuard(directory.GuardConfig{
		SlowAfter:    cfg.Auth.SlowAfter,
		IPLimit:      cfg.Auth.IPLimit,
		AccountLimit: cfg.Auth.AccountLimit,
		Window:       cfg.Auth.Window.D(),
		Cooldown:     cfg.Auth.Cooldown.D(),
	}, nil)
	limits := smtpserver.Limits{
		MaxMessageSize:      int64(cfg.SMTP.MaxMessageSize),
		MaxRecipients:       cfg.SMTP.MaxRecipients,
		MaxConnections:      cfg.SMTP.MaxConnections,
		MaxConnectionsPerIP: cfg.SMTP.MaxConnectionsPerIP,
		MaxErrors:           cfg.SMTP.MaxErrors,
		CommandTimeout:      cfg.SMTP.CommandTimeout.D(),
		DataTimeout:         cfg.SMTP.DataTimeout.D(),
		MaxReceivedHeaders:  cfg.SMTP.MaxReceivedHeaders,
	}
	policy := smtpserver.SubmissionPolicy{
		DomainSenders:        lowerKeys(cfg.Submission.DomainSenders),
		MaxMessagesPerHour:   cfg.Submission.MaxMessagesPerHour,
		MaxRecipientsPerHour: cfg.Submission.MaxRecipientsPerHour,
		ReceivedAuthUser:     cfg.Submission.ReceivedAuthUser,
	}
	smtpServer := func(name string, tlsCfg *tls.Config, mod func(*smtpserver.Server)) *smtpserver.Server {
		s := &smtpserver.Server{
			Hostname:  cfg.Hostname,
			Backend:   a.Intake,
			TLSConfig: tlsCfg,
			Logger:    log.With("listener", name),
			Limits:    limits,
			Auth:      a.Dir,
			Policy:    policy,
		}
		if mod != nil {
			mod(s)
		}
		return s
	}
	a.services = []*service{
		{name: "smtp", network: "tcp", addrs: cfg.SMTP.Listen, srv: smtpServer("smtp", mxTLS, nil)},
		{name: "submission", network: "tcp", addrs: cfg.Submission.Listen,
			srv: smtpServer("submission", subTLS, func(s *smtpserver.Server) { s.Submission = true })},
		{name: "submissions", network: "tcp", addrs: cfg.Submission.ListenTLS,
			srv: smtpServer("submissions", subTLS, func(s *smtpserver.Server) { s.Submission, s.ImplicitTLS = true, true })},
	}
	if p := cfg.SocketPath(); p != "" {
		a.services = append(a.services, &service{name: "local", network: "unix", addrs: []string{p},
			srv: smtpServer("local", nil, func(s *smtpserver.Server) { s.Local = true })})
	}
	// IMAP and POP3: one server each for its STARTTLS and its implicit-TLS listeners.
	imapSrv := &imapserver.Server{
		Store: st, Directory: a.Dir, TLSConfig: subTLS, Logger: log.With("listener", "imap"),
		Limits: imapserver.Limits{
			MaxConnections:      cfg.IMAP.MaxConnections,
			MaxConnectionsPerIP: cfg.IMAP.MaxConnectionsPerIP,
			IdleTimeout:         cfg.IMAP.IdleTimeout.D(),
			MaxAppendSize:       int64(cfg.IMAP.MaxAppendSize),
		},
	}
	pop3Srv := &pop3server.Server{
		Store: st, Directory: a.Dir, TLSConfig: subTLS, Logger: log.With("listener", "pop3"),
		Limits: pop3server.Limits{
			MaxConnections:      cfg.POP3.MaxConnections,
			MaxConnectionsPerIP: cfg.POP3.MaxConnectionsPerIP,
			IdleTimeout:         cfg.POP3.IdleTimeout.D(),
		},
	}
	a.services = append(a.services,
		&service{name: "imap", network: "tcp", addrs: cfg.IMAP.Listen, srv: imapSrv},
		&service{name: "imaps", network: "tcp", addrs: cfg.IMAP.ListenTLS, srv: imapSrv, implicitTLS: subTLS},
		&service{name: "pop3", network: "tcp", addrs: cfg.POP3.Listen, srv: pop3Srv},
		&service{name: "pop3s", network: "tcp", addrs: cfg.POP3.ListenTLS, srv: pop3Srv, implicitTLS: subTLS},
	)
	return a, nil
}

// server is what every protocol front end offers (net/http-shaped).
type server interface {
	Serve(l net.Listener) error
	Shutdown(ctx context.Context) error
}

// service is one server and the addresses it listens on. Several services may share a
// server (IMAP on 143 and 993).
type service struct {
	name        string
	network     string
	addrs       []string
	srv         server
	implicitTLS *tls.Config // wrap the listeners in TLS (ports 993, 995)
}

// isClosed tells whether a Serve error only reports a shutdown.
func isClosed(err error) bool {
	return errors.Is(err, smtpserver.ErrServerClosed) || errors.Is(err, imapserver.ErrServerClosed) ||
		errors.Is(err, pop3server.ErrServerClosed) || errors.Is(err, net.ErrClosed)
}

func lowerKeys(m map[string][]string) map[string][]string {
	out := make(map[string][]string, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}

// Start opens every listener, or none: a wrong address never leaves half a server running.
func (a *App) Start() error {
	for _, svc := range a.services {
		for _, addr := range svc.addrs {
			l, err := listen(svc.network, addr)
			if err != nil {
				for _, o := range a.listeners {
					o.l.Close()
				}
				a.listeners = nil
				return fmt.Errorf("%s listen %s: %w", svc.name, addr, err)
			}
			if svc.implicitTLS != nil {
				l = tls.NewListener(l, svc.implicitTLS)
			}
			a.listeners = append(a.listeners, listener{svc, l})
		}
	}
	a.indexer.Start()
	qctx, cancel := context.WithCancel(context.Background())
	a.queueStop, a.queueDone = cancel, make(chan error, 1)
	go func() { a.queueDone <- a.queue.Run(qctx) }()
	for _, l := range a.listeners {
		a.log.Info("listening", "service", l.svc.name, "addr", l.l.Addr().String())
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := l.svc.srv.Serve(l.l); err != nil && !isClosed(err) {
				a.serveErr <- fmt.Errorf("%s on %s: %w", l.svc.name, l.l.Addr(), err)
			}
		}()
	}
	return nil
}

// listen opens a TCP or Unix socket. A stale Unix socket left by a crash is replaced, but
// not one that a running server still answers on.
func listen(network, addr string) (net.Listener, error) {
	if network != "unix" {
		return netutil.ListenTCP(network, addr)
	}
	if c, err := net.Dial("unix", addr); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: another server is running on this socket", addr)
	}
	os.Remove(addr)
	l, err := net.Listen("unix", addr)
	if err != nil {
		return nil, err
	}
	// The socket is only reachable by who can enter the data directory (0700) unless
	// submission.socket puts it elsewhere.
	os.Chmod(addr, 0o666)
	return l, nil
}

// Addrs lists the listening addresses by service name.
func (a *App) Addrs() map[string][]net.Addr {
	m := map[string][]net.Addr{}
	for _, l := range a.listeners {
		m[l.svc.name] = append(m[l.svc.name], l.l.Addr())
	}
	return m
}

// Run starts the servers and blocks until ctx ends (SIGTERM) or a listener fails, then shuts
// down gracefully within the configured shutdown_timeout.
func (a *App) Run(ctx context.Context) error {
	if err := a.Start(); err != nil {
		a.Store.Close()
		return err
	}
	var runErr error
	select {
	case <-ctx.Done():
		a.log.Info("shutting down")
	case runErr = <-a.serveErr:
		a.log.Error("listener failed, shutting down", "err", runErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout.D())
	defer cancel()
	return errors.Join(runErr, a.Shutdown(sctx))
}

// Shutdown stops the servers (sessions in flight may finish until ctx ends) and closes the
// store after its pending commits.
func (a *App) Shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	var srvs []server
	for _, svc := range a.services {
		if !slices.Contains(srvs, svc.srv) {
			srvs = append(srvs, svc.srv)
		}
	}
	errs := make([]error, len(srvs))
	for i, srv := range srvs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(ctx); !isClosed(err) {
				errs[i] = err // a second Shutdown reports "closed": not an error here
			}
		}()
	}
	wg.Wait()
	a.wg.Wait()
	err := errors.Join(errs...)
	if errors.Is(err, context.DeadlineExceeded) {
		a.log.Warn("shutdown deadline reached, remaining sessions closed")
		err = nil
	}
	for _, l := range a.listeners {
		if l.svc.network == "unix" {
			os.Remove(l.svc.addrs[0])
		}
	}
	// The queue stops after the listeners: a delivery in flight finishes and records its
	// result (or is released for the next start) before the store closes.
	if a.queueStop != nil {
		a.queueStop()
		if qerr := <-a.queueDone; qerr != nil {
			err = errors.Join(err, qerr)
		}
		a.queueStop = nil
	}
	a.outbound.Close()
	a.indexer.Close()
	return errors.Join(err, a.Store.Close())
}

// DirectoryBackend adapts the store to the directory's Backend interface.
type DirectoryBackend struct{ S *store.Store }

// GetDomain implements directory.Backend.
func (b DirectoryBackend) GetDomain(ctx context.Context, name string) (directory.Domain, error) {
	return dirLookups{b.S}.GetDomain(ctx, name)
}

// GetAccount implements directory.Backend.
func (b DirectoryBackend) GetAccount(ctx context.Context, addr string) (directory.Account, error) {
	return dirLookups{b.S}.GetAccount(ctx, addr)
}

// GetAlias implements directory.Backend.
func (b DirectoryBackend) GetAlias(ctx context.Context, addr string) ([]string, error) {
	return dirLookups{b.S}.GetAlias(ctx, addr)
}

// View implements directory.Viewer: one look at the store's directory stamp per Resolve.
func (b DirectoryBackend) View() directory.Backend { return dirLookups{b.S.DirView()} }

// dirLookups adapts the store's lookups (the store itself, or one view of it) to the
// directory's Backend interface.
type dirLookups struct {
	l interface {
		GetDomain(ctx context.Context, name string) (store.Domain, error)
		GetAccount(ctx context.Context, address string) (store.Account, error)
		GetAlias(ctx context.Context, address string) ([]string, error)
	}
}

func (d dirLookups) GetDomain(ctx context.Context, name string) (directory.Domain, error) {
	dom, err := d.l.GetDomain(ctx, name)
	if err != nil {
		return directory.Domain{}, notFound(err)
	}
	return directory.Domain{Name: dom.Name, CatchAll: dom.CatchAll}, nil
}

func (d dirLookups) GetAccount(ctx context.Context, addr string) (directory.Account, error) {
	ac, err := d.l.GetAccount(ctx, addr)
	if err != nil {
		return directory.Account{}, notFound(err)
	}
	return directory.Account{ID: ac.ID, Address: ac.Address, PasswordHash: ac.PasswordHash, Disabled: ac.Disabled}, nil
}

func (d dirLookups) GetAlias(ctx context.Context, addr string) ([]string, error) {
	t, err := d.l.GetAlias(ctx, addr)
	return t, notFound(err)
}

// AppPasswordHashes implements directory.AppPasswordBackend.
func (b DirectoryBackend) AppPasswordHashes(ctx context.Context, accountID int64) ([]string, error) {
	return b.S.AppPasswordHashes(ctx, accountID)
}

// FirstAccount implements directory.FirstAccounter: the domain's oldest account.
func (b DirectoryBackend) FirstAccount(ctx context.Context, domain string) (directory.Account, error) {
	as, err := b.S.ListAccounts(ctx, domain)
	if err != nil {
		return directory.Account{}, err
	}
	var first *store.Account
	for i := range as {
		if !as[i].Disabled && (first == nil || as[i].ID < first.ID) {
			first = &as[i]
		}
	}
	if first == nil {
		return directory.Account{}, fmt.Errorf("first account of %s: %w", domain, directory.ErrNotFound)
	}
	return directory.Account{ID: first.ID, Address: first.Address, PasswordHash: first.PasswordHash}, nil
}

// notFound translates the store's ErrNotFound into the directory's.
func notFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %w", directory.ErrNotFound, err)
	}
	return err
}
