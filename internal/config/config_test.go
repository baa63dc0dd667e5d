package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "yubin.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultIsValid(t *testing.T) {
	t.Parallel()
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default() does not validate: %v", err)
	}
}

func TestLoadValues(t *testing.T) {
	t.Parallel()
	p := writeConfig(t, `
hostname = "mx.example.org"
data_dir = "state"
shutdown_timeout = "10s"
[log]
level = "debug"
format = "json"
[smtp]
listen = ["127.0.0.1:2525", "[::1]:2525"]
max_message_size = "10MiB"
max_recipients = 500
command_timeout = "2m"
subaddress_separator = "-"
`)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "mx.example.org" || c.Log.Level != "debug" || c.Log.Format != "json" {
		t.Errorf("top-level values: %+v", c)
	}
	if want := filepath.Join(filepath.Dir(p), "state"); c.DataDir != want {
		t.Errorf("data_dir relative to the file: got %q, want %q", c.DataDir, want)
	}
	if c.SMTP.MaxMessageSize != 10<<20 || c.SMTP.MaxRecipients != 500 || c.SMTP.CommandTimeout.D() != 2*time.Minute {
		t.Errorf("smtp values: %+v", c.SMTP)
	}
	if c.ShutdownTimeout.D() != 10*time.Second || c.SMTP.SubaddressSeparator != "-" {
		t.Errorf("durations/separator: %+v", c)
	}
	// Keys not in the file keep their defaults.
	if c.SMTP.MaxConnectionsPerIP != 20 || c.SMTP.DataTimeout.D() != 5*time.Minute {
		t.Errorf("defaults lost: %+v", c.SMTP)
	}
}

func TestSizeForms(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{
		`52428800`: 52428800, `"50MiB"`: 50 << 20, `"10MB"`: 10_000_000, `"512KiB"`: 512 << 10,
		`"2048"`: 2048, `"1 GiB"`: 1 << 30,
	} {
		c, err := Load(writeConfig(t, "hostname = \"h\"\n[smtp]\nmax_message_size = "+in+"\n"))
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if int64(c.SMTP.MaxMessageSize) != want {
			t.Errorf("%s: got %d, want %d", in, c.SMTP.MaxMessageSize, want)
		}
	}
	if _, err := Load(writeConfig(t, "[smtp]\nmax_message_size = \"lots\"\n")); err == nil {
		t.Error("a bad size was accepted")
	}
}

func TestValidateReportsEveryError(t *testing.T) {
	t.Parallel()
	p := writeConfig(t, `
hostname = "bad host"
shutdown_timeout = "-1s"
typo_key = 1
[log]
level = "loud"
format = "xml"
[tls]
cert_file = "/nonexistent/cert.pem"
[smtp]
listen = ["nowhere", "127.0.0.1:99999"]
max_message_size = 10
max_recipients = 5
max_connections = 0
max_errors = -1
command_timeout = "0s"
subaddress_separator = "@"
`)
	_, err := Load(p)
	if err == nil {
		t.Fatal("a bad config was accepted")
	}
	msg := err.Error()
	for _, key := range []string{
		"typo_key: unknown key", "hostname:", "shutdown_timeout:", "log.level:", "log.format:",
		"tls:", "tls.cert_file:", "smtp.listen[0]:", "smtp.listen[1]:", "smtp.max_message_size:",
		"smtp.max_recipients:", "smtp.max_connections:", "smtp.max_errors:", "smtp.command_timeout:",
		"smtp.subaddress_separator:",
	} {
		if !strings.Contains(msg, key) {
			t.Errorf("error does not name %q:\n%s", key, msg)
		}
	}
}
