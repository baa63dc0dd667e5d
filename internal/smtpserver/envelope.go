package smtpserver

import (
	"errors"
	"slices"
	"strconv"
	"strings"

	"yubin/internal/address"
	"yubin/internal/directory"
	"yubin/internal/intake"
	"yubin/internal/smtp"
)

// transaction is the state between MAIL and the end of the message (RFC 5321 3.3).
type transaction struct {
	from    string // reverse path, "" for <>
	utf8    bool   // SMTPUTF8 declared
	body    string // BODY= value, "" when not given
	ret     string // DSN RET= (RFC 3461 4.3): FULL, HDRS or ""
	envID   string // DSN ENVID= as received (xtext)
	rcpts   []intake.Recipient
	bdat    *bdatState // a BDAT transfer in progress
	usedDat bool       // DATA or BDAT already used in this transaction
}

func (sess *session) resetTx() {
	if sess.tx != nil && sess.tx.bdat != nil && sess.tx.bdat.draft != nil {
		sess.tx.bdat.draft.Abort()
	}
	sess.tx = nil
}

func (sess *session) cmdHello(arg string, esmtp bool) {
	verb := "HELO"
	if esmtp {
		verb = "EHLO"
	}
	arg = strings.TrimSpace(arg)
	if arg == "" || strings.ContainsAny(arg, " \t") {
		sess.fail(smtp.Replyf(501, "5.5.4", "%s needs one domain or address literal", verb))
		return
	}
	// RFC 5321 4.1.4: EHLO resets the transaction.
	sess.resetTx()
	sess.helo, sess.esmtp = arg, esmtp
	if !esmtp {
		sess.reply(smtp.NewReply(250, "", sess.srv.Hostname))
		return
	}
	// RFC 2034 4: the EHLO reply carries no enhanced code.
	lines := []string{
		sess.srv.Hostname + " greets " + sanitizeHelo(arg),
		"PIPELINING",
		"SIZE " + strconv.FormatInt(sess.srv.lim.MaxMessageSize, 10),
		"8BITMIME",
		"SMTPUTF8",
		"ENHANCEDSTATUSCODES",
		"CHUNKING",
		"DSN",
	}
	if sess.srv.TLSConfig != nil && sess.tls == nil && !sess.srv.Local {
		lines = append(lines, "STARTTLS")
	}
	if sess.authAvailable() {
		lines = append(lines, "AUTH PLAIN LOGIN")
	}
	lines = append(lines, "HELP")
	sess.reply(&smtp.Reply{Code: 250, Lines: lines})
}

func (sess *session) cmdMail(arg string) {
	switch {
	case sess.helo == "":
		sess.fail(smtp.NewReply(503, "5.5.1", "send EHLO or HELO first"))
		return
	case sess.tx != nil:
		sess.fail(smtp.NewReply(503, "5.5.1", "nested MAIL command"))
		return
	case sess.srv.Submission && !sess.srv.Local && sess.account == nil:
		// RFC 6409 4.3, RFC 4954 6.
		sess.fail(smtp.NewReply(530, "5.7.0", "authentication required"))
		return
	case sess.account != nil && !sess.srv.rates.allowMessage(sess.account.Address):
		sess.log().Warn("message rate limit reached")
		sess.reply(smtp.NewReply(450, "4.7.1", "hourly message limit reached for your account, try again later"))
		return
	}
	pa, err := smtp.ParsePathArg(arg, "FROM:")
	if err != nil {
		sess.fail(asReply(err, 501, "5.5.4"))
		return
	}
	tx := &transaction{}
	if len(pa.Params) > 0 && !sess.esmtp {
		sess.fail(smtp.NewReply(555, "5.5.4", "MAIL parameters need EHLO"))
		return
	}
	for _, p := range pa.Params {
		switch p.Key {
		case "SIZE":
			n, err := strconv.ParseInt(p.Value, 10, 64)
			if err != nil || n < 0 {
				sess.fail(smtp.NewReply(501, "5.5.4", "bad SIZE value"))
				return
			}
			// RFC 1870 6: a declared size over the limit is refused at MAIL.
			if n > sess.srv.lim.MaxMessageSize {
				sess.fail(smtp.Replyf(552, "5.3.4", "message size exceeds fixed maximum message size (%d)", sess.srv.lim.MaxMessageSize))
				return
			}
		case "BODY":
			if tx.body = upperOneOf(p.Value, "7BIT", "8BITMIME"); tx.body == "" {
				sess.fail(smtp.NewReply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME"))
				return
			}
		case "SMTPUTF8":
			if p.Value != "" {
				sess.fail(smtp.NewReply(501, "5.5.4", "SMTPUTF8 takes no value"))
				return
			}
			tx.utf8 = true
		case "RET":
			// RFC 3461 4.3
			if tx.ret = upperOneOf(p.Value, "FULL", "HDRS"); tx.ret == "" {
				sess.fail(smtp.NewReply(501, "5.5.4", "RET must be FULL or HDRS"))
				return
			}
		case "ENVID":
			// RFC 3461 4.4: xtext, at most 100 characters.
			if len(p.Value) == 0 || len(p.Value) > 100 || !validXtext(p.Value) {
				sess.fail(smtp.NewReply(501, "5.5.4", "bad ENVID value"))
				return
			}
			tx.envID = p.Value
		case "AUTH":
			// RFC 4954 5: accepted; without a trusted authenticated session it is ignored.
		default:
			sess.fail(smtp.Replyf(555, "5.5.4", "unsupported MAIL parameter %s", p.Key))
			return
		}
	}
	if pa.Mailbox != "" {
		a, err := address.Parse(pa.Mailbox, address.Options{AllowUTF8: tx.utf8})
		if err != nil {
			sess.fail(addressReply(err, "5.1.7", "sender"))
			return
		}
		tx.from = a.String()
		if r := sess.checkSender(a); r != nil {
			sess.fail(r)
			return
		}
	} else if sess.srv.Submission && !sess.srv.Local {
		sess.fail(smtp.NewReply(550, "5.7.1", "the null sender is not allowed on submission"))
		return
	}
	sess.tx = tx
	sess.reply(smtp.NewReply(250, "2.1.0", "sender OK"))
}

// addressReply maps an address syntax error: non-ASCII without SMTPUTF8 is 553 5.6.7
// (RFC 6531 3.5), anything else 501 with the enhanced code for sender or recipient syntax.
func addressReply(err error, enh, who string) *smtp.Reply {
	var ae *address.Error
	if errors.As(err, &ae) && ae.UTF8 {
		return smtp.NewReply(553, "5.6.7", "non-ASCII address requires SMTPUTF8")
	}
	return smtp.Replyf(501, enh, "bad %s address syntax", who)
}

func (sess *session) cmdRcpt(arg string) {
	tx := sess.tx
	switch {
	case tx == nil:
		sess.fail(smtp.NewReply(503, "5.5.1", "need MAIL before RCPT"))
		return
	case tx.usedDat:
		sess.fail(smtp.NewReply(503, "5.5.1", "RCPT not allowed during BDAT transfer"))
		return
	}
	pa, err := smtp.ParsePathArg(arg, "TO:")
	if err != nil {
		sess.fail(asReply(err, 501, "5.5.4"))
		return
	}
	var notify, orcpt string
	for _, p := range pa.Params {
		switch p.Key {
		case "NOTIFY":
			// RFC 3461 4.1: NEVER alone, or a list of SUCCESS, FAILURE, DELAY.
			v := strings.ToUpper(p.Value)
			if !validNotify(v) {
				sess.fail(smtp.NewReply(501, "5.5.4", "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"))
				return
			}
			notify = v
		case "ORCPT":
			// RFC 3461 4.2: addr-type ";" xtext.
			typ, val, ok := strings.Cut(p.Value, ";")
			if !ok || typ == "" || val == "" || len(p.Value) > 500 || !validXtext(val) {
				sess.fail(smtp.NewReply(501, "5.5.4", "bad ORCPT value"))
				return
			}
			orcpt = p.Value
		default:
			sess.fail(smtp.Replyf(555, "5.5.4", "unsupported RCPT parameter %s", p.Key))
			return
		}
	}
	if sess.account != nil && !sess.srv.rates.allowRecipients(sess.account.Address, len(tx.rcpts)+1) {
		sess.log().Warn("recipient rate limit reached")
		sess.reply(smtp.NewReply(450, "4.7.1", "hourly recipient limit reached for your account, try again later"))
		return
	}
	if len(tx.rcpts) >= sess.srv.lim.MaxRecipients {
		// RFC 5321 4.5.3.1.10: 452, the client sends the rest in another transaction.
		sess.reply(smtp.NewReply(452, "4.5.3", "too many recipients"))
		return
	}
	var a address.Address
	switch {
	case pa.Mailbox == "":
		sess.fail(smtp.NewReply(501, "5.1.3", "null recipient not allowed"))
		return
	case strings.EqualFold(pa.Mailbox, "postmaster"):
		// RFC 5321 4.1.1.3: "<Postmaster>" without a domain must be accepted.
		a = address.Address{Local: "postmaster", Domain: strings.ToLower(sess.srv.Hostname)}
	default:
		a, err = address.Parse(pa.Mailbox, address.Options{AllowUTF8: tx.utf8})
		if err != nil {
			sess.fail(addressReply(err, "5.1.3", "recipient"))
			return
		}
	}
	res, err := sess.srv.Backend.Resolve(sess.ctx, a)
	if err != nil {
		sess.fail(sess.resolveReply(a, err))
		return
	}
	if !res.Hosted && sess.mayRelay() {
		tx.rcpts = append(tx.rcpts, intake.Recipient{Address: a.String(), Notify: notify, ORCPT: orcpt,
			Targets: []directory.Target{{Address: a.String(), Remote: true}}})
		sess.reply(smtp.NewReply(250, "2.1.5", "recipient OK"))
		return
	}
	if !res.Hosted {
		sess.log().Info("relay denied", "rcpt", a.String())
		sess.fail(smtp.Replyf(554, "5.7.1", "<%s>: relay access denied", a.String()))
		return
	}
	if !deliverable(res.Targets) {
		// A postmaster placeholder: the domain has no account at all to receive it.
		sess.fail(smtp.Replyf(550, "5.1.1", "<%s>: no mailbox here", a.String()))
		return
	}
	tx.rcpts = append(tx.rcpts, intake.Recipient{Address: a.String(), Notify: notify, ORCPT: orcpt, Targets: res.Targets})
	sess.reply(smtp.NewReply(250, "2.1.5", "recipient OK"))
}

func (sess *session) resolveReply(a address.Address, err error) *smtp.Reply {
	switch {
	case errors.Is(err, directory.ErrNoSuchUser):
		return smtp.Replyf(550, "5.1.1", "<%s>: no such user here", a.String())
	case errors.Is(err, directory.ErrRouting):
		return smtp.Replyf(550, "5.7.1", "<%s>: sender-specified routing is not supported", a.String())
	case errors.Is(err, directory.ErrAliasLoop):
		sess.log().Error("alias loop", "rcpt", a.String(), "err", err)
		return smtp.Replyf(550, "5.4.6", "<%s>: alias loop, tell the postmaster", a.String())
	}
	ref := sess.internalError("recipient lookup failed", err)
	return smtp.Replyf(451, "4.3.0", "<%s>: temporary lookup failure, try again later (ref %s)", a.String(), ref)
}

// mayRelay tells whether this session may send to domains yubin does not host: an
// authenticated submission, or a local program.
func (sess *session) mayRelay() bool {
	return sess.srv.Local || sess.srv.Submission && sess.account != nil
}

// checkSender enforces that an authenticated account sends only as itself: its own address
// (with any sub-address tag), an alias that delivers to it, or any address of a domain the
// policy lets it administer. Local programs may use any sender.
func (sess *session) checkSender(a address.Address) *smtp.Reply {
	acc := sess.account
	if acc == nil {
		return nil
	}
	for _, d := range sess.srv.Policy.DomainSenders[acc.Address] {
		if strings.EqualFold(d, a.Domain) {
			return nil
		}
	}
	res, err := sess.srv.Backend.Resolve(sess.ctx, a)
	if err != nil && !errors.Is(err, directory.ErrNoSuchUser) && !errors.Is(err, directory.ErrRouting) {
		ref := sess.internalError("sender lookup failed", err)
		return smtp.Replyf(451, "4.3.0", "temporary lookup failure, try again later (ref %s)", ref)
	}
	for _, t := range res.Targets {
		if t.AccountID == acc.ID {
			return nil
		}
	}
	sess.log().Warn("sender not owned by the account", "from", a.String())
	return smtp.Replyf(550, "5.7.1", "<%s>: sender address not owned by %s", a.String(), acc.Address)
}

// deliverable reports whether any target names a mailbox or a remote address.
func deliverable(ts []directory.Target) bool {
	for _, t := range ts {
		if t.AccountID > 0 || t.Remote {
			return true
		}
	}
	return false
}

// validNotify checks a NOTIFY value (upper-cased).
func validNotify(v string) bool {
	if v == "NEVER" {
		return true
	}
	seen := map[string]bool{}
	for _, k := range strings.Split(v, ",") {
		if k != "SUCCESS" && k != "FAILURE" && k != "DELAY" || seen[k] {
			return false
		}
		seen[k] = true
	}
	return len(seen) > 0
}

// validXtext checks RFC 3461 4 xtext: printable ASCII except "+" and "=", with "+XX" hex
// escapes.
func validXtext(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) || !isHexUpper(s[i+1]) || !isHexUpper(s[i+2]) {
				return false
			}
			i += 2
		case c < '!' || c > '~' || c == '=':
			return false
		}
	}
	return true
}

func isHexUpper(c byte) bool { return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' }

// sanitizeHelo keeps a client's EHLO argument safe to echo and to put in a header.
func sanitizeHelo(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r > ' ' && r < 0x7f && r != '(' && r != ')' && r != '\\' && r != '"' {
			b.WriteRune(r)
		}
		if b.Len() >= 255 {
			break
		}
	}
	if b.Len() == 0 {
		return "unknown"
	}
	return b.String()
}

// upperOneOf returns v in upper case when that is one of allowed, else "".
func upperOneOf(v string, allowed ...string) string {
	v = strings.ToUpper(v)
	if slices.Contains(allowed, v) {
		return v
	}
	return ""
}
