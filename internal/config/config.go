// Package config is yubin's typed configuration: one TOML file, every key documented with its
// default on the struct field, and Validate reporting every error at once with the key's name.
// A missing file is not an error for quickstart, which builds its Config in code.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration. The zero value is not useful: start from Default().
type Config struct {
	// Hostname is the name yubin gives itself in the SMTP greeting, EHLO and Received headers.
	// Default: the machine's host name.
	Hostname string `toml:"hostname"`
	// DataDir holds the database, the message files and generated certificates. Default "./yubin-data".
	DataDir string `toml:"data_dir"`
	// ShutdownTimeout bounds how long SIGTERM waits for sessions in flight. Default "30s".
	ShutdownTimeout Duration `toml:"shutdown_timeout"`

	Log        Log        `toml:"log"`
	TLS        TLS        `toml:"tls"`
	SMTP       SMTP       `toml:"smtp"`
	Submission Submission `toml:"submission"`
	Auth       Auth       `toml:"auth"`
	Relay      Relay      `toml:"relay"`
	IMAP       IMAP       `toml:"imap"`
	POP3       POP3       `toml:"pop3"`
}

// IMAP configures the IMAP listeners mail clients read mail with.
type IMAP struct {
	// Listen: STARTTLS listeners (port 143); LOGIN only after TLS. [] disables. Default [":143"].
	Listen []string `toml:"listen"`
	// ListenTLS: implicit-TLS listeners (port 993). [] disables. Default [":993"].
	ListenTLS []string `toml:"listen_tls"`
	// MaxConnections in total and per client address. Defaults 1000 and 20.
	MaxConnections      int `toml:"max_connections"`
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`
	// IdleTimeout between commands and in IDLE (RFC 9051 5.4: at least 30 minutes). Default "30m".
	IdleTimeout Duration `toml:"idle_timeout"`
	// MaxAppendSize is the largest APPEND (advertised as APPENDLIMIT). Default "64MiB".
	MaxAppendSize Size `toml:"max_append_size"`
}

// POP3 configures the POP3 listeners.
type POP3 struct {
	// Listen: STLS listeners (port 110); USER/PASS only after TLS. [] disables. Default [":110"].
	Listen []string `toml:"listen"`
	// ListenTLS: implicit-TLS listeners (port 995). [] disables. Default [":995"].
	ListenTLS []string `toml:"listen_tls"`
	// MaxConnections in total and per client address. Defaults 500 and 10.
	MaxConnections      int `toml:"max_connections"`
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`
	// IdleTimeout (RFC 1939 3: at least 10 minutes). Default "10m".
	IdleTimeout Duration `toml:"idle_timeout"`
}

// Relay configures delivery to other mail servers: the queue and the SMTP client.
type Relay struct {
	// DNSServers for MX, A/AAAA, TXT (MTA-STS) lookups, "host:port". Default [] (the
	// system's /etc/resolv.conf).
	DNSServers []string `toml:"dns_servers"`
	// Port of the MX hosts. Default 25; tests point it elsewhere.
	Port int `toml:"port"`
	// Concurrency is how many deliveries run at once. Default 100 (Postfix's process limit).
	Concurrency int `toml:"concurrency"`
	// PerDestination is how many deliveries run at once to one domain, and how many idle
	// connections to one host are kept for reuse. Default 20 (Postfix's
	// default_destination_concurrency_limit).
	PerDestination int `toml:"per_destination"`
	// RetryFirst is the wait after the first temporary failure; it doubles up to RetryMax.
	// Defaults "5m" and "1h".
	RetryFirst Duration `toml:"retry_first"`
	RetryMax   Duration `toml:"retry_max"`
	// Lifetime: after this long in the queue a message bounces. Default "120h" (5 days).
	Lifetime Duration `toml:"lifetime"`
	// DelayWarning: the sender is told once when a message has waited this long; "0s" turns
	// it off. Default "4h".
	DelayWarning Duration `toml:"delay_warning"`
	// MTASTS fetches and obeys MTA-STS policies (RFC 8461). Default true.
	MTASTS bool `toml:"mta_sts"`
	// ConnectionReuse keeps idle connections open this long for the next messages to the
	// same host. Default "5s"; "0s" closes them at once.
	ConnectionReuse Duration `toml:"connection_reuse"`
	// Routes sends a domain, or "*" for every domain, to a fixed host instead of its MX
	// (a smarthost), for example:
	//   [relay.routes."*"]
	//   host = "smtp.provider.example:587"
	//   username = "me@provider.example"
	//   password = "..."
	//   tls = "starttls"            # starttls (required), implicit, opportunistic, none
	Routes map[string]Route `toml:"routes"`
}

// Route is one static route.
type Route struct {
	Host               string `toml:"host"`
	Username           string `toml:"username"`
	Password           string `toml:"password"`
	TLS                string `toml:"tls"`
	InsecureSkipVerify bool   `toml:"insecure_skip_verify"`
}

// Submission configures the listeners mail clients send through (RFC 6409, RFC 8314) and
// the local socket of "yubin sendmail". Message limits are those of [smtp].
type Submission struct {
	// Listen: STARTTLS submission listeners (port 587); AUTH only after TLS. [] disables.
	// Default [":587"].
	Listen []string `toml:"listen"`
	// ListenTLS: implicit-TLS submission listeners (port 465). [] disables.
	// Default [":465"].
	ListenTLS []string `toml:"listen_tls"`
	// Socket is the Unix socket "yubin sendmail" hands messages to; local programs that can
	// open it may send as anyone, as with Postfix's sendmail. "" (the default) means
	// data_dir/submit.sock; "none" disables it.
	Socket string `toml:"socket"`
	// MaxMessagesPerHour and MaxRecipientsPerHour limit each account (450 4.7.1 past them);
	// 0 disables. Defaults 500 and 2000.
	MaxMessagesPerHour   int `toml:"max_messages_per_hour"`
	MaxRecipientsPerHour int `toml:"max_recipients_per_hour"`
	// ReceivedAuthUser puts the client's address and the authenticated user into the
	// Received header. Default false (privacy).
	ReceivedAuthUser bool `toml:"received_auth_user"`
	// DomainSenders lets an account send as any address of some domains:
	// { "admin@example.org" = ["example.org"] }. Default none.
	DomainSenders map[string][]string `toml:"domain_senders"`
}

// Auth sets the brute-force limits shared by SMTP AUTH, IMAP and POP3 logins.
type Auth struct {
	// SlowAfter failures from one address, failed attempts are answered a second later per
	// further failure (at most 5s). Default 3.
	SlowAfter int `toml:"slow_after"`
	// IPLimit failures from one address within Window lock it out for Cooldown. Default 10.
	IPLimit int `toml:"ip_limit"`
	// AccountLimit failures for one account lock it for addresses that have not logged in to
	// it successfully before. Default 20.
	AccountLimit int `toml:"account_limit"`
	// Window during which failures count. Default "15m".
	Window Duration `toml:"window"`
	// Cooldown: how long a lockout lasts. Default "15m".
	Cooldown Duration `toml:"cooldown"`
}

// Log configures the structured log written to standard error.
type Log struct {
	// Level is one of debug, info, warn, error. Default "info".
	Level string `toml:"level"`
	// Format is "text" or "json". Default "text".
	Format string `toml:"format"`
}

// TLS names the certificate used by every listener.
type TLS struct {
	// CertFile and KeyFile are PEM files. Both empty (the default): a self-signed certificate for
	// Hostname is generated once into DataDir/tls/. The files are re-read when they change.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// SMTP configures the MX listener (mail from the internet for the hosted domains).
type SMTP struct {
	// Listen is the list of addresses for the MX listener. Default [":25"] (all addresses, IPv4 and IPv6).
	Listen []string `toml:"listen"`
	// MaxMessageSize is the SIZE limit in bytes (a number, or a string like "50MiB"). Default 50MiB.
	MaxMessageSize Size `toml:"max_message_size"`
	// MaxRecipients per message; past it RCPT gets 452 4.5.3. Default 100 (RFC 5321 4.5.3.1.8).
	MaxRecipients int `toml:"max_recipients"`
	// MaxConnections in total; past it new connections get 421 4.7.0. Default 1000.
	MaxConnections int `toml:"max_connections"`
	// MaxConnectionsPerIP from one client address. Default 20.
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`
	// MaxErrors in one session before 421 4.7.0 and close. Default 20.
	MaxErrors int `toml:"max_errors"`
	// CommandTimeout waits for the next command (RFC 5321 4.5.3.2.7: at least 5 minutes). Default "5m".
	CommandTimeout Duration `toml:"command_timeout"`
	// DataTimeout waits for each block of message data (RFC 5321 4.5.3.2.6: 3 minutes). Default "5m".
	DataTimeout Duration `toml:"data_timeout"`
	// MaxReceivedHeaders above which a message is a mail loop: 554 5.4.6. Default 100.
	MaxReceivedHeaders int `toml:"max_received_headers"`
	// SubaddressSeparator splits "user+tag": mail for it goes to "user". "" disables. Default "+".
	SubaddressSeparator string `toml:"subaddress_separator"`
}

// Default returns the configuration used when a key is absent.
func Default() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return Config{
		Hostname:        host,
		DataDir:         "./yubin-data",
		ShutdownTimeout: Duration(30 * time.Second),
		Log:             Log{Level: "info", Format: "text"},
		SMTP: SMTP{
			Listen:              []string{":25"},
			MaxMessageSize:      50 << 20,
			MaxRecipients:       100,
			MaxConnections:      1000,
			MaxConnectionsPerIP: 20,
			MaxErrors:           20,
			CommandTimeout:      Duration(5 * time.Minute),
			DataTimeout:         Duration(5 * time.Minute),
			MaxReceivedHeaders:  100,
			SubaddressSeparator: "+",
		},
		Submission: Submission{
			Listen:               []string{":587"},
			ListenTLS:            []string{":465"},
			MaxMessagesPerHour:   500,
			MaxRecipientsPerHour: 2000,
		},
		IMAP: IMAP{
			Listen:              []string{":143"},
			ListenTLS:           []string{":993"},
			MaxConnections:      1000,
			MaxConnectionsPerIP: 20,
			IdleTimeout:         Duration(30 * time.Minute),
			MaxAppendSize:       64 << 20,
		},
		POP3: POP3{
			Listen:              []string{":110"},
			ListenTLS:           []string{":995"},
			MaxConnections:      500,
			MaxConnectionsPerIP: 10,
			IdleTimeout:         Duration(10 * time.Minute),
		},
		Relay: Relay{
			Port:            25,
			Concurrency:     100,
			PerDestination:  20,
			RetryFirst:      Duration(5 * time.Minute),
			RetryMax:        Duration(time.Hour),
			Lifetime:        Duration(5 * 24 * time.Hour),
			DelayWarning:    Duration(4 * time.Hour),
			MTASTS:          true,
			ConnectionReuse: Duration(5 * time.Second),
		},
		Auth: Auth{
			SlowAfter:    3,
			IPLimit:      10,
			AccountLimit: 20,
			Window:       Duration(15 * time.Minute),
			Cooldown:     Duration(15 * time.Minute),
		},
	}
}

// SocketPath is where the local submission socket lives, "" when disabled.
func (c *Config) SocketPath() string {
	switch c.Submission.Socket {
	case "none":
		return ""
	case "":
		return filepath.Join(c.DataDir, "submit.sock")
	}
	return c.Submission.Socket
}

// Load reads a TOML file over Default(). Unknown keys are errors (a typo must not be ignored);
// the returned error lists every problem, including Validate's.
func Load(path string) (Config, error) {
	c := Default()
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	var errs []error
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, 0, len(und))
		for _, k := range und {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		for _, k := range keys {
			errs = append(errs, fmt.Errorf("%s: unknown key", k))
		}
	}
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("%s: %w", path, errors.Join(errs...))
	}
	// Relative paths in a config file are relative to the file, not to the working directory.
	if !filepath.IsAbs(c.DataDir) {
		c.DataDir = filepath.Join(filepath.Dir(path), c.DataDir)
	}
	return c, nil
}

// Validate returns every problem at once, each prefixed with its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Hostname == "" {
		bad("hostname", "must not be empty")
	} else if strings.ContainsAny(c.Hostname, " \t\r\n<>[]@") {
		bad("hostname", "%q is not a host name", c.Hostname)
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	if c.ShutdownTimeout < 0 {
		bad("shutdown_timeout", "must not be negative")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "cert_file and key_file must be set together")
	}
	for _, f := range []struct{ key, path string }{{"tls.cert_file", c.TLS.CertFile}, {"tls.key_file", c.TLS.KeyFile}} {
		if f.path != "" {
			if _, err := os.Stat(f.path); err != nil {
				bad(f.key, "%v", err)
			}
		}
	}
	s := &c.SMTP
	if len(s.Listen) == 0 {
		bad("smtp.listen", "needs at least one address")
	}
	for i, a := range s.Listen {
		if err := checkListen(a); err != nil {
			bad(fmt.Sprintf("smtp.listen[%d]", i), "%v", err)
		}
	}
	if s.MaxMessageSize < 1024 {
		bad("smtp.max_message_size", "must be at least 1024 bytes")
	}
	positive := []struct {
		key string
		v   int
	}{
		{"smtp.max_recipients", s.MaxRecipients},
		{"smtp.max_connections", s.MaxConnections},
		{"smtp.max_connections_per_ip", s.MaxConnectionsPerIP},
		{"smtp.max_errors", s.MaxErrors},
		{"smtp.max_received_headers", s.MaxReceivedHeaders},
	}
	for _, p := range positive {
		if p.v < 1 {
			bad(p.key, "must be at least 1")
		}
	}
	if s.MaxRecipients >= 1 && s.MaxRecipients < 100 {
		// RFC 5321 4.5.3.1.8: a server MUST accept at least 100 recipients.
		bad("smtp.max_recipients", "must be at least 100 (RFC 5321 4.5.3.1.8)")
	}
	if s.CommandTimeout < Duration(time.Second) {
		bad("smtp.command_timeout", "must be at least 1s")
	}
	if s.DataTimeout < Duration(time.Second) {
		bad("smtp.data_timeout", "must be at least 1s")
	}
	sub := &c.Submission
	for i, a := range sub.Listen {
		if err := checkListen(a); err != nil {
			bad(fmt.Sprintf("submission.listen[%d]", i), "%v", err)
		}
	}
	for i, a := range sub.ListenTLS {
		if err := checkListen(a); err != nil {
			bad(fmt.Sprintf("submission.listen_tls[%d]", i), "%v", err)
		}
	}
	if sub.MaxMessagesPerHour < 0 {
		bad("submission.max_messages_per_hour", "must not be negative")
	}
	if sub.MaxRecipientsPerHour < 0 {
		bad("submission.max_recipients_per_hour", "must not be negative")
	}
	for acct, domains := range sub.DomainSenders {
		if !strings.Contains(acct, "@") {
			bad("submission.domain_senders", "%q is not an account address", acct)
		}
		if len(domains) == 0 {
			bad("submission.domain_senders", "%q lists no domain", acct)
		}
	}
	au := &c.Auth
	for _, p := range []struct {
		key string
		v   int
	}{{"auth.slow_after", au.SlowAfter}, {"auth.ip_limit", au.IPLimit}, {"auth.account_limit", au.AccountLimit}} {
		if p.v < 1 {
			bad(p.key, "must be at least 1")
		}
	}
	if au.Window < Duration(time.Second) {
		bad("auth.window", "must be at least 1s")
	}
	if au.Cooldown < Duration(time.Second) {
		bad("auth.cooldown", "must be at least 1s")
	}
	for _, l := range []struct {
		key  string
		list []string
	}{{"imap.listen", c.IMAP.Listen}, {"imap.listen_tls", c.IMAP.ListenTLS}, {"pop3.listen", c.POP3.Listen}, {"pop3.listen_tls", c.POP3.ListenTLS}} {
		for i, a := range l.list {
			if err := checkListen(a); err != nil {
				bad(fmt.Sprintf("%s[%d]", l.key, i), "%v", err)
			}
		}
	}
	for _, p := range []struct {
		key string
		v   int
	}{
		{"imap.max_connections", c.IMAP.MaxConnections}, {"imap.max_connections_per_ip", c.IMAP.MaxConnectionsPerIP},
		{"pop3.max_connections", c.POP3.MaxConnections}, {"pop3.max_connections_per_ip", c.POP3.MaxConnectionsPerIP},
	} {
		if p.v < 1 {
			bad(p.key, "must be at least 1")
		}
	}
	if c.IMAP.IdleTimeout < Duration(30*time.Minute) {
		bad("imap.idle_timeout", "must be at least 30m (RFC 9051 5.4)")
	}
	if c.POP3.IdleTimeout < Duration(10*time.Minute) {
		bad("pop3.idle_timeout", "must be at least 10m (RFC 1939 3)")
	}
	if c.IMAP.MaxAppendSize < 1024 {
		bad("imap.max_append_size", "must be at least 1024 bytes")
	}
	rl := &c.Relay
	for i, a := range rl.DNSServers {
		if _, _, err := net.SplitHostPort(a); err != nil {
			bad(fmt.Sprintf("relay.dns_servers[%d]", i), "%v (want host:port)", err)
		}
	}
	if rl.Port < 1 || rl.Port > 65535 {
		bad("relay.port", "must be a port number")
	}
	if rl.Concurrency < 1 {
		bad("relay.concurrency", "must be at least 1")
	}
	if rl.PerDestination < 1 {
		bad("relay.per_destination", "must be at least 1")
	}
	if rl.RetryFirst < Duration(time.Second) {
		bad("relay.retry_first", "must be at least 1s")
	}
	if rl.RetryMax < rl.RetryFirst {
		bad("relay.retry_max", "must not be shorter than retry_first")
	}
	if rl.Lifetime < rl.RetryFirst {
		bad("relay.lifetime", "must not be shorter than retry_first")
	}
	if rl.DelayWarning < 0 || rl.ConnectionReuse < 0 {
		bad("relay", "delay_warning and connection_reuse must not be negative")
	}
	for dom, r := range rl.Routes {
		key := fmt.Sprintf("relay.routes.%q", dom)
		if r.Host == "" {
			bad(key+".host", "must be set")
		}
		switch r.TLS {
		case "", "starttls", "implicit", "opportunistic", "none":
		default:
			bad(key+".tls", "%q is not one of starttls, implicit, opportunistic, none", r.TLS)
		}
		if r.Username != "" && r.TLS == "none" {
			bad(key, "a password is never sent without TLS: set tls")
		}
	}
	if len(s.SubaddressSeparator) > 1 || strings.ContainsAny(s.SubaddressSeparator, "@\" .") {
		bad("smtp.subaddress_separator", "must be one character other than @, quote, space and dot, or empty")
	}
	return errors.Join(errs...)
}

func checkListen(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("%q is not an IP address", host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q is not a port", port)
	}
	return nil
}

// Duration is a time.Duration written as a string in TOML ("5m", "30s").
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Size is a byte count written as a number or as a string with a unit: "50MiB", "10MB", "512KiB".
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	str := strings.TrimSpace(string(b))
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(str, u.suffix) {
			mult = u.mult
			str = strings.TrimSpace(strings.TrimSuffix(str, u.suffix))
			break
		}
	}
	n, err := strconv.ParseInt(str, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a size (examples: 52428800, \"50MiB\")", string(b))
	}
	*s = Size(n * mult)
	return nil
}
