package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"

	"yubin/internal/app"
	"yubin/internal/config"
	"yubin/internal/directory"
	"yubin/internal/store"
)

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", os.Getenv("YUBIN_CONFIG"), "configuration file (TOML)")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if *cfgPath == "" {
		return usagef("--config FILE is required (or try 'yubin quickstart')")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	if path := os.Getenv("YUBIN_CPUPROFILE"); path != "" {
		// For developers (bench/run.sh PROFILE=1): a CPU profile of the whole run, for go tool pprof.
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

func cmdConfig(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		return usagef("usage: yubin config check --config FILE")
	}
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	cfgPath := fs.String("config", os.Getenv("YUBIN_CONFIG"), "configuration file (TOML)")
	if err := fs.Parse(args[1:]); err != nil {
		return usagef("%v", err)
	}
	if *cfgPath == "" {
		return usagef("--config FILE is required")
	}
	if _, err := config.Load(*cfgPath); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: OK\n", *cfgPath)
	return nil
}

// Quickstart ports: loopback only, above 1024 so no privileges are needed.
const (
	quickstartSMTP        = "127.0.0.1:2525"
	quickstartSubmission  = "127.0.0.1:2587"
	quickstartSubmissions = "127.0.0.1:2465"
	quickstartIMAP        = "127.0.0.1:2143"
	quickstartIMAPS       = "127.0.0.1:2993"
	quickstartPOP3        = "127.0.0.1:2110"
	quickstartPOP3S       = "127.0.0.1:2995"
)

func cmdQuickstart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./yubin-data", "data directory")
	smtpAddr := fs.String("smtp", quickstartSMTP, "MX listener address")
	subAddr := fs.String("submission", quickstartSubmission, "submission (STARTTLS) listener address")
	subsAddr := fs.String("submissions", quickstartSubmissions, "submission (implicit TLS) listener address")
	imapAddr := fs.String("imap", quickstartIMAP, "IMAP (STARTTLS) listener address")
	imapsAddr := fs.String("imaps", quickstartIMAPS, "IMAP (implicit TLS) listener address")
	pop3Addr := fs.String("pop3", quickstartPOP3, "POP3 (STLS) listener address")
	pop3sAddr := fs.String("pop3s", quickstartPOP3S, "POP3 (implicit TLS) listener address")
	domain := fs.String("domain", "yubin.test", "demo domain")
	user := fs.String("user", "demo", "demo account's local part")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	cfg := config.Default()
	cfg.Hostname = "localhost"
	cfg.DataDir = *data
	cfg.SMTP.Listen = []string{*smtpAddr}
	cfg.Submission.Listen = []string{*subAddr}
	cfg.Submission.ListenTLS = []string{*subsAddr}
	cfg.IMAP.Listen, cfg.IMAP.ListenTLS = []string{*imapAddr}, []string{*imapsAddr}
	cfg.POP3.Listen, cfg.POP3.ListenTLS = []string{*pop3Addr}, []string{*pop3sAddr}
	log := newLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	addr := *user + "@" + *domain
	password, err := quickstartAccount(ctx, a.Store, *domain, addr)
	if err != nil {
		a.Store.Close()
		return err
	}
	if err := a.Start(); err != nil {
		a.Store.Close()
		return err
	}
	abs, _ := filepath.Abs(cfg.DataDir)
	addrs := a.Addrs()
	hp := func(service string) (string, string) {
		h, p, _ := net.SplitHostPort(addrs[service][0].String())
		return h, p
	}
	mxHost, mxPort := hp("smtp")
	subHost, subPort := hp("submission")
	_, subsPort := hp("submissions")
	_, imapPort := hp("imap")
	_, imapsPort := hp("imaps")
	_, pop3Port := hp("pop3")
	_, pop3sPort := hp("pop3s")
	fmt.Fprintf(stdout, `yubin quickstart is running. Stop it with Ctrl-C.

  data directory   %s
  SMTP (MX)        %s port %s, STARTTLS with a self-signed certificate
  domain           %s
  account          %s
  password         %s   (new at every quickstart; keep it with 'yubin account passwd')

Mail client settings (server %s, username %s, the password above, normal password):
  outgoing SMTP    port %-5s STARTTLS     or port %-5s SSL/TLS
  incoming IMAP    port %-5s STARTTLS     or port %-5s SSL/TLS
  incoming POP3    port %-5s STARTTLS     or port %-5s SSL/TLS
  The certificate is self-signed: your client will ask you to trust it.

Send a first message:
  swaks --server %s:%s --from you@example.org --to %s

Read it with your mail client (IMAP or POP3, settings above), or:
  go run ./cmd/yubin mail list %s --data %s
  go run ./cmd/yubin mail show %s 1 --data %s

`, abs, mxHost, mxPort, *domain, addr, password,
		subHost, addr, subPort, subsPort, imapPort, imapsPort, pop3Port, pop3sPort,
		mxHost, mxPort, addr, addr, cfg.DataDir, addr, cfg.DataDir)
	<-ctx.Done()
	return errors.Join(a.Shutdown(context.Background()))
}

// quickstartAccount creates the demo domain and account, or gives the existing account a
// new password: a clear-text password is never kept, so it cannot be shown again.
func quickstartAccount(ctx context.Context, st *store.Store, domain, addr string) (string, error) {
	if err := st.AddDomain(ctx, domain); err != nil && !errors.Is(err, store.ErrExists) {
		return "", err
	}
	password := newPassword()
	hash, err := directory.HashPassword(password, directory.DefaultHashParams())
	if err != nil {
		return "", err
	}
	if _, err := st.AddAccount(ctx, addr, hash); errors.Is(err, store.ErrExists) {
		err = st.SetPassword(ctx, addr, hash)
		if err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	return password, nil
}

// newPassword makes a 16-character password from an alphabet without look-alike characters.
func newPassword() string {
	const alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 16)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			panic(err) // crypto/rand never fails on Linux
		}
		b[i] = alphabet[n.Int64()]
	}
	return string(b)
}
