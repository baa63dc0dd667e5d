package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"os"
	"os/user"
	"strings"
	"time"

	"yubin/internal/config"
	"yubin/internal/smtp"
)

// sendmail exit codes (sysexits.h), which cron, git and scripts understand.
const (
	exUsage       = 64
	exDataErr     = 65
	exNoUser      = 67
	exUnavailable = 69
	exSoftware    = 70
	exTempFail    = 75
)

// sendmailOpts is the part of the sendmail command line yubin honours.
type sendmailOpts struct {
	fromHeaders bool   // -t: recipients from To, Cc, Bcc
	sender      string // -f
	fullName    string // -F
	ignoreDots  bool   // -i, -oi: a line with a single dot does not end the message
	rcpts       []string
	config      string // -C or --config
	data        string // --data
}

const sendmailUsage = "usage: yubin sendmail [-t] [-i] [-f sender] [-F name] [--config FILE] [recipient...] < message"

// parseSendmailArgs understands the options that programs pass to /usr/sbin/sendmail and
// ignores the queue and delivery-mode options that have no meaning here (-odi, -oem, -B...).
func parseSendmailArgs(args []string) (sendmailOpts, error) {
	var o sendmailOpts
	value := func(i *int, a, flag string) (string, error) {
		if len(a) > len(flag) {
			return a[len(flag):], nil
		}
		if *i+1 >= len(args) {
			return "", fmt.Errorf("option %s needs a value", flag)
		}
		*i++
		return args[*i], nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		var err error
		switch {
		case a == "--":
			o.rcpts = append(o.rcpts, args[i+1:]...)
			return o, nil
		case a == "-t":
			o.fromHeaders = true
		case a == "-i" || a == "-oi":
			o.ignoreDots = true
		case strings.HasPrefix(a, "--config"):
			o.config, err = value(&i, a, "--config")
			o.config = strings.TrimPrefix(o.config, "=")
		case strings.HasPrefix(a, "--data"):
			o.data, err = value(&i, a, "--data")
			o.data = strings.TrimPrefix(o.data, "=")
		case strings.HasPrefix(a, "-f") || strings.HasPrefix(a, "-r"):
			o.sender, err = value(&i, a, a[:2])
		case strings.HasPrefix(a, "-F"):
			o.fullName, err = value(&i, a, "-F")
		case strings.HasPrefix(a, "-C"):
			o.config, err = value(&i, a, "-C")
		case strings.HasPrefix(a, "-B"), strings.HasPrefix(a, "-N"), strings.HasPrefix(a, "-R"), strings.HasPrefix(a, "-V"):
			if len(a) == 2 {
				i++ // the option's value
			}
		case strings.HasPrefix(a, "-o"), a == "-bm", a == "-v", a == "-U", a == "-m", a == "-em", a == "-ee", a == "-eq":
			// Delivery modes and other sendmail options: meaningless here, accepted.
		case strings.HasPrefix(a, "-"):
			return o, fmt.Errorf("unsupported option %s", a)
		default:
			o.rcpts = append(o.rcpts, a)
		}
		if err != nil {
			return o, err
		}
	}
	return o, nil
}

// cmdSendmail hands a message from standard input to the running server over its local
// socket. Nothing is ever dropped silently: if the server does not take the message, the
// exit code and standard error say so.
func cmdSendmail(args []string, stdin io.Reader, stderr io.Writer) int {
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "yubin sendmail: "+format+"\n", a...)
		return code
	}
	o, err := parseSendmailArgs(args)
	if err != nil {
		return fail(exUsage, "%v\n%s", err, sendmailUsage)
	}
	cfg, err := cliConfig(cliArgs{config: o.config, data: o.data})
	if err != nil {
		return fail(exUnavailable, "%v", err)
	}
	if o.sender == "" {
		// Like Postfix's sendmail: the envelope sender is the local user, never <> (mail
		// from cron would look like a bounce, and could not be bounced itself).
		o.sender = localSender(cfg)
	}
	raw, err := readSendmailInput(stdin, o.ignoreDots)
	if err != nil {
		return fail(exDataErr, "reading the message: %v", err)
	}
	msg, rcpts, err := prepareMessage(raw, o, cfg)
	if err != nil {
		return fail(exDataErr, "%v", err)
	}
	if len(rcpts) == 0 {
		return fail(exUsage, "no recipients (give them as arguments, or use -t)\n%s", sendmailUsage)
	}
	sock := cfg.SocketPath()
	if sock == "" {
		return fail(exUnavailable, "the local submission socket is disabled (submission.socket = \"none\"); the message was NOT sent")
	}
	code, err := submitLocal(sock, o.sender, rcpts, msg)
	if err != nil {
		return fail(code, "%v", err)
	}
	return 0
}

// cliConfig finds the configuration as every management command does, and additionally
// /etc/yubin/yubin.toml, where an installed sendmail looks when nothing is given.
func cliConfig(c cliArgs) (config.Config, error) {
	cfgPath, dir := c.config, c.data
	if cfgPath == "" && dir == "" {
		cfgPath, dir = os.Getenv("YUBIN_CONFIG"), os.Getenv("YUBIN_DATA")
	}
	if cfgPath == "" && dir == "" {
		if _, err := os.Stat("/etc/yubin/yubin.toml"); err == nil {
			cfgPath = "/etc/yubin/yubin.toml"
		}
	}
	if cfgPath != "" {
		return config.Load(cfgPath)
	}
	cfg := config.Default()
	cfg.DataDir = dir
	if dir == "" {
		cfg.DataDir = "./yubin-data"
	}
	return cfg, nil
}

// readSendmailInput reads the message; without -i a line holding a single dot ends it.
func readSendmailInput(r io.Reader, ignoreDots bool) ([]byte, error) {
	if ignoreDots {
		return io.ReadAll(r)
	}
	var out bytes.Buffer
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadBytes('\n')
		if t := bytes.TrimRight(line, "\r\n"); len(t) == 1 && t[0] == '.' {
			return out.Bytes(), nil
		}
		out.Write(line)
		if errors.Is(err, io.EOF) {
			return out.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// prepareMessage normalises line endings to CRLF, collects -t recipients, drops Bcc and adds
// a From header when the message has none.
func prepareMessage(raw []byte, o sendmailOpts, cfg config.Config) ([]byte, []string, error) {
	raw = bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))
	raw = bytes.ReplaceAll(raw, []byte("\r"), []byte("\n"))
	headerEnd := bytes.Index(raw, []byte("\n\n"))
	var header, body []byte
	if headerEnd < 0 {
		header, body = raw, nil
	} else {
		header, body = raw[:headerEnd+1], raw[headerEnd+1:]
	}
	rcpts := append([]string(nil), o.rcpts...)
	var kept [][]byte
	hasFrom := false
	var field []byte
	flush := func() error {
		if field == nil {
			return nil
		}
		name, value, _ := strings.Cut(string(field), ":")
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "from" {
			hasFrom = true
		}
		if o.fromHeaders && (name == "to" || name == "cc" || name == "bcc") {
			list, err := mail.ParseAddressList(strings.TrimSpace(strings.ReplaceAll(value, "\n", " ")))
			if err != nil && strings.TrimSpace(value) != "" {
				return fmt.Errorf("%s header: %v", name, err)
			}
			for _, a := range list {
				rcpts = append(rcpts, a.Address)
			}
		}
		if name != "bcc" {
			kept = append(kept, field)
		}
		field = nil
		return nil
	}
	for _, line := range bytes.SplitAfter(header, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && field != nil {
			field = append(field, line...)
			continue
		}
		if err := flush(); err != nil {
			return nil, nil, err
		}
		field = append([]byte(nil), line...)
	}
	if err := flush(); err != nil {
		return nil, nil, err
	}
	sender := o.sender
	var out bytes.Buffer
	if !hasFrom {
		from := (&mail.Address{Name: o.fullName, Address: sender}).String()
		out.WriteString("From: " + from + "\n")
	}
	for _, f := range kept {
		out.Write(f)
	}
	if headerEnd >= 0 {
		out.Write(body)
	}
	msg := bytes.ReplaceAll(out.Bytes(), []byte("\n"), []byte("\r\n"))
	if len(msg) > 0 && !bytes.HasSuffix(msg, []byte("\r\n")) {
		msg = append(msg, "\r\n"...)
	}
	return msg, rcpts, nil
}

// localSender is user@hostname for the user running the command.
func localSender(cfg config.Config) string {
	name := "root"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	return name + "@" + cfg.Hostname
}

// submitLocal runs one SMTP transaction on the local socket. It returns a sendmail exit code
// with the error.
func submitLocal(sock, sender string, rcpts []string, msg []byte) (int, error) {
	c, err := net.DialTimeout("unix", sock, 10*time.Second)
	if err != nil {
		return exTempFail, fmt.Errorf("cannot reach the yubin server at %s (%v): is it running? The message was NOT sent", sock, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	br := bufio.NewReader(c)
	bw := bufio.NewWriter(c)
	step := func(line string, want int) error {
		if line != "" {
			bw.WriteString(line + "\r\n")
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		r, err := smtp.ReadReply(br, 100)
		if err != nil {
			return fmt.Errorf("reading the server's reply: %w", err)
		}
		if r.Code != want {
			return r
		}
		return nil
	}
	utf8 := !isASCII(sender)
	for _, r := range rcpts {
		utf8 = utf8 || !isASCII(r)
	}
	mailCmd := "MAIL FROM:<" + sender + ">"
	if utf8 {
		mailCmd += " SMTPUTF8"
	}
	if !isASCII(string(msg)) {
		mailCmd += " BODY=8BITMIME"
	}
	if err := step("", 220); err != nil {
		return exTempFail, err
	}
	if err := step("EHLO localhost", 250); err != nil {
		return exTempFail, err
	}
	if err := step(mailCmd, 250); err != nil {
		return replyExit(err), fmt.Errorf("sender <%s> refused: %w", sender, err)
	}
	for _, r := range rcpts {
		if err := step("RCPT TO:<"+r+">", 250); err != nil {
			return replyExit(err), fmt.Errorf("recipient <%s> refused: %w; the message was NOT sent", r, err)
		}
	}
	if err := step("DATA", 354); err != nil {
		return replyExit(err), err
	}
	dw := smtp.NewDataWriter(bw)
	if _, err := dw.Write(msg); err != nil {
		return exTempFail, err
	}
	if err := dw.Close(); err != nil {
		return exTempFail, err
	}
	if err := bw.Flush(); err != nil {
		return exTempFail, err
	}
	if err := step("", 250); err != nil {
		return replyExit(err), fmt.Errorf("message refused: %w", err)
	}
	step("QUIT", 221)
	return 0, nil
}

// replyExit maps a refusal to an exit code: 5xx recipient problems are EX_NOUSER, other
// 5xx EX_DATAERR, 4xx EX_TEMPFAIL.
func replyExit(err error) int {
	var r *smtp.Reply
	if !errors.As(err, &r) {
		return exTempFail
	}
	switch {
	case r.Code >= 400 && r.Code < 500:
		return exTempFail
	case strings.HasPrefix(r.Enhanced, "5.1."):
		return exNoUser
	case r.Code >= 500:
		return exDataErr
	}
	return exSoftware
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
