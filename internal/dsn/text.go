package dsn

import (
	"bytes"
	"fmt"
	"mime/quotedprintable"
	"strconv"
	"strings"
	"time"

	"yubin/internal/smtp"
)

// humanText is the first part: what happened, in words, for the sender. It quotes the reply
// as the remote server sent it, line by line, because that is what a postmaster asked for
// help will want to see.
func (r *Report) humanText(hasOriginal, full bool) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	var failed, delayed int
	for _, rc := range r.Recipients {
		if rc.Action == Delayed {
			delayed++
		} else {
			failed++
		}
	}
	line("This is the mail system at %s.", r.Hostname)
	line("")
	if failed > 0 {
		wrap(&b, "", fmt.Sprintf("Your message could not be delivered to %s, and will not be tried again for %s.",
			count(failed, "recipient"), pick(failed == 1, "this recipient", "these recipients")))
	}
	if delayed > 0 {
		if failed > 0 {
			line("")
		}
		wrap(&b, "", fmt.Sprintf("Your message has not yet been delivered to %s. Nothing is lost: the mail system keeps trying, and will tell you if it gives up. You do not need to send the message again.",
			count(delayed, "recipient")))
	}
	for _, rc := range r.Recipients {
		line("")
		line("<%s>", clean(rc.Address))
		switch {
		case rc.Action == Delayed && !rc.WillRetryUntil.IsZero():
			wrap(&b, "    ", "Not delivered yet; delivery will be retried until "+rc.WillRetryUntil.Format(time.RFC1123Z)+".")
		case rc.Action == Delayed:
			wrap(&b, "    ", "Not delivered yet; delivery will be retried.")
		case rc.Expired && !r.ArrivalDate.IsZero():
			wrap(&b, "    ", "Delivery failed: the mail system kept trying since "+r.ArrivalDate.Format(time.RFC1123Z)+" and has now given up.")
		case rc.Expired:
			wrap(&b, "    ", "Delivery failed: the mail system kept trying and has now given up.")
		default:
			wrap(&b, "    ", "Delivery failed permanently (status "+rc.status()+").")
		}
		if rc.Reply != nil {
			switch {
			case rc.RemoteMTA != "" && (rc.Expired || rc.Action == Delayed):
				line("    The last answer, from the mail server %s, was:", clean(rc.RemoteMTA))
			case rc.RemoteMTA != "":
				line("    The mail server %s answered:", clean(rc.RemoteMTA))
			default:
				line("    The reason given by %s was:", r.Hostname)
			}
			for _, l := range replyLines(rc.Reply) {
				line("        %s", clean(l))
			}
		}
		wrap(&b, "    ", "What you can do: "+rc.advice())
	}
	if hasOriginal {
		line("")
		switch {
		case full:
			line("Your message is attached below.")
		case strings.EqualFold(r.Ret, "FULL"):
			line("Your message is too big to be returned in full; its headers are attached below.")
		default:
			line("The headers of your message are attached below.")
		}
	}
	return b.String()
}

// replyLines renders the reply as it came on the wire, without CRLF: "550-5.1.1 first",
// "550 5.1.1 last".
func replyLines(r *smtp.Reply) []string {
	lines := r.Lines
	if len(lines) == 0 {
		lines = []string{""}
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		sep := " "
		if i < len(lines)-1 {
			sep = "-"
		}
		s := strconv.Itoa(r.Code) + sep
		if r.Enhanced != "" {
			s += r.Enhanced
			if l != "" {
				s += " "
			}
		}
		out[i] = strings.TrimRight(s+l, " ")
	}
	return out
}

// advice tells the sender what to do, from the RFC 3463 status: its subject (the middle
// number) says where the problem lies.
func (rc Recipient) advice() string {
	if rc.Action == Delayed {
		return "nothing for now. If the problem lasts, you will get another report when the mail system gives up."
	}
	if rc.Expired {
		return "the receiving mail system could not be reached, or kept asking to try later, the whole time. " +
			"Check that the part of the address after the @ is spelled right; if it is, the problem is on the " +
			"receiving side: send the message again later, or reach the recipient another way."
	}
	st := rc.status()
	_, rest, _ := strings.Cut(st, ".")
	subject, _, _ := strings.Cut(rest, ".")
	switch {
	case subject == "1":
		return "check the address for typing mistakes. If it is right, the address may no longer exist: " +
			"reach the recipient another way and ask for their current address."
	case rest == "2.2":
		return "the recipient's mailbox is full. Send the message again later, or reach the recipient another way."
	case rest == "3.4" || rest == "2.3":
		return "the message is too big for the receiving system. Send a smaller one, for example with a link " +
			"instead of a large attachment."
	case subject == "2":
		return "the recipient's mailbox cannot take mail at present. Reach the recipient another way."
	case subject == "7":
		return "the receiving system refused the message under its security or anti-spam policy. If you think " +
			"that is a mistake, send this report to your mail administrator: they can check your domain's SPF, " +
			"DKIM and DMARC records and contact the receiving side's postmaster."
	case subject == "6":
		return "the receiving system could not take the message's format or content (for example international " +
			"characters in an address). Send it again in a simpler form, or ask your mail administrator for help."
	case subject == "3" || subject == "4":
		return "the receiving mail system has a problem. Send the message again later, or reach the recipient " +
			"another way; if it keeps happening, tell your mail administrator."
	}
	return "if you are not sure what the answer above means, send this report to your mail administrator."
}

// writeText writes the part headers and the body of the text part: 7bit when it is short-lined
// ASCII, else UTF-8 in quoted-printable, so the report stays 7-bit clean.
func writeText(buf *bytes.Buffer, text string) {
	text = strings.ReplaceAll(text, "\n", "\r\n")
	long := false
	for _, l := range strings.Split(text, "\r\n") {
		long = long || len(l) > 998
	}
	if isASCII(text) && !long {
		buf.WriteString("Content-Type: text/plain; charset=us-ascii\r\n")
		buf.WriteString("Content-Description: Notification\r\n\r\n")
		buf.WriteString(text)
		return
	}
	buf.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	buf.WriteString("Content-Transfer-Encoding: quoted-printable\r\n")
	buf.WriteString("Content-Description: Notification\r\n\r\n")
	qp := quotedprintable.NewWriter(buf)
	qp.Write([]byte(text))
	qp.Close()
	if !bytes.HasSuffix(buf.Bytes(), []byte("\r\n")) {
		buf.WriteString("\r\n")
	}
}

// wrap writes text as lines of at most 72 characters, each starting with indent.
func wrap(b *strings.Builder, indent, text string) {
	const width = 72
	line := indent
	for _, w := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(w) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += w
	}
	b.WriteString(line + "\n")
}

func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func pick(cond bool, a, b string) string {
	if cond {
		return a
	}
	return b
}
