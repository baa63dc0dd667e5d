package outbound

import (
	"strconv"
	"time"

	"yubin/internal/smtp"
)

// window is how many pipelined commands may wait for their replies at
// once: a usual transaction goes in one round trip, and neither side's
// socket buffer can fill with replies nobody reads (the deadlock RFC 2920
// 3.1 warns of).
const window = 100

type txnCmd struct {
	line    string
	timeout time.Duration
	stage   string
}

// transaction sends the message to the recipients of rcpts that are still
// pending (RFC 5321 3.3), with PIPELINING (RFC 2920) and CHUNKING (RFC
// 3030) when offered. Replies are matched to commands strictly in order;
// each recipient gets its final reply as soon as it is known, so a
// connection lost half-way leaves the replies already read in place and
// the other recipients pending. A recipient is delivered only when the
// final reply to the data has been read.
//
// It returns why the transaction failed in a way another host might not
// (fail), and whether the destination has answered for every recipient
// (done).
func (s *session) transaction(m *message, all []*rcptState) (fail *smtp.Reply, done bool) {
	var rcpts []*rcptState
	for _, r := range all {
		if r.reply == nil {
			rcpts = append(rcpts, r)
		}
	}
	pipelining := s.ext.has("PIPELINING")
	chunking := s.ext.has("CHUNKING")

	cmds := []txnCmd{{
		line:    "MAIL FROM:" + smtp.PathArg{Mailbox: m.from, Params: m.mailParams(s.ext)}.String(),
		timeout: s.to.Mail, stage: "MAIL",
	}}
	for _, r := range rcpts {
		cmds = append(cmds, txnCmd{
			line:    "RCPT TO:" + smtp.PathArg{Mailbox: r.wire, Params: rcptParams(r, s.ext)}.String(),
			timeout: s.to.Rcpt, stage: "RCPT",
		})
	}
	// RFC 2920 3.1: DATA may end a pipelined group. BDAT goes only after the
	// RCPT replies: it carries the message, which is not sent for nothing.
	if pipelining && !chunking {
		cmds = append(cmds, txnCmd{line: "DATA", timeout: s.to.DataInit, stage: "DATA"})
	}
	win := 1
	if pipelining {
		win = window
	}

	var mailRep, dataRep *smtp.Reply
	var accepted []*rcptState
	sent, got := 0, 0
	for got < len(cmds) {
		wrote := false
		// Without PIPELINING nothing more goes out after a refused MAIL.
		for sent < len(cmds) && sent-got < win && (got == 0 || mailRep.Code/100 == 2) {
			s.cmd(cmds[sent].line)
			sent++
			wrote = true
		}
		if wrote {
			if err := s.flush(cmds[got].timeout); err != nil {
				return s.lost(cmds[got].stage, err), false
			}
		}
		if got == sent {
			break
		}
		rep, err := s.read(cmds[got].timeout)
		if err != nil {
			return s.lost(cmds[got].stage, err), false
		}
		if rep.Code == 421 {
			// The peer is closing; the replies to what follows will not come.
			return rep, false
		}
		switch i := got; {
		case i == 0:
			mailRep = rep
			s.inTxn = rep.Code/100 == 2
		case i <= len(rcpts):
			if mailRep.Code/100 != 2 {
				break // the answer to MAIL holds for everyone
			}
			r := rcpts[i-1]
			if rep.Code/100 == 2 {
				accepted = append(accepted, r)
			} else {
				r.reply, r.mx = s.failure(rcptReply(rep)), s.host
			}
		default:
			dataRep = rep
		}
		got++
	}

	if mailRep.Code/100 != 2 || len(accepted) == 0 {
		if dataRep != nil && dataRep.Code == 354 {
			// A peer that opened DATA with nobody to deliver to gets empty
			// data, whose reply does not matter.
			if err := s.endEmptyData(); err != nil {
				return s.lost("DATA", err), false
			}
		}
		switch mailRep.Code / 100 {
		case 2:
			return nil, true // every recipient has its RCPT reply
		case 5:
			finalAll(rcpts, mailRep, s.host)
			return nil, true
		}
		return s.failure(mailRep), false // temporary: another MX may take it
	}

	var final *smtp.Reply
	var err error
	stage := "the message data"
	if chunking {
		final, err = s.bdat(m)
	} else {
		if dataRep == nil {
			s.cmd("DATA")
			if err := s.flush(s.to.DataInit); err != nil {
				return s.lost("DATA", err), false
			}
			if dataRep, err = s.read(s.to.DataInit); err != nil {
				return s.lost("DATA", err), false
			}
		}
		switch {
		case dataRep.Code == 421:
			return dataRep, false
		case dataRep.Code != 354:
			finalAll(accepted, s.failure(dataRep), s.host)
			return nil, true
		}
		final, err = s.data(m)
	}
	if err != nil {
		if !s.broken {
			// Our side failed to read the message: the connection is
			// dropped without ending the data, so the peer discards it.
			s.broken = true
			finalAll(accepted, smtp.Replyf(451, "4.3.0", "reading the message: %v", err), "")
			return nil, true
		}
		return s.lost(stage, err), false
	}
	if final.Code == 421 {
		return final, false
	}
	s.inTxn = false // RFC 5321 4.1.1.4: the reply to the data ends the transaction
	if final.Code/100 != 2 {
		final = s.failure(final)
	}
	finalAll(accepted, final, s.host)
	return nil, true
}

// data sends the content after a 354 and reads the final reply.
func (s *session) data(m *message) (*smtp.Reply, error) {
	s.dw.timeout = s.to.DataBlock
	// The normaliser dot-stuffs as it goes (what smtp.NewDataWriter would do in a second
	// pass), and its content ends in CRLF: the end of data follows.
	if err := copyContentStuffed(s.bw, m.d.Open, m.content, true); err != nil {
		return nil, err
	}
	if _, err := s.bw.WriteString(".\r\n"); err != nil {
		return nil, err
	}
	if err := s.flush(s.to.DataBlock); err != nil {
		return nil, err
	}
	return s.read(s.to.DataFinal)
}

// bdat sends the content as one BDAT LAST chunk (RFC 3030 2): its size is
// known from prepare, and one chunk needs no reply in between.
func (s *session) bdat(m *message) (*smtp.Reply, error) {
	s.cmd("BDAT " + strconv.FormatInt(m.content.size, 10) + " LAST")
	s.dw.timeout = s.to.DataBlock
	if err := copyContent(s.bw, m.d.Open, m.content); err != nil {
		return nil, err
	}
	if err := s.flush(s.to.DataBlock); err != nil {
		return nil, err
	}
	return s.read(s.to.DataFinal)
}

func (s *session) endEmptyData() error {
	s.cmd(".")
	if err := s.flush(s.to.DataBlock); err != nil {
		return err
	}
	_, err := s.read(s.to.DataFinal)
	return err
}

// rcptReply is the recipient's reply to RCPT. RFC 5321 4.5.3.1.10: a 552
// to RCPT ("too many recipients" in RFC 821's wording) is temporary, so it
// becomes the 452 it should have been and the recipient is retried.
func rcptReply(rep *smtp.Reply) *smtp.Reply {
	if rep.Code != 552 {
		return rep
	}
	enh := rep.Enhanced
	if enh != "" {
		enh = "4" + enh[1:]
	}
	return &smtp.Reply{Code: 452, Enhanced: enh, Lines: append([]string(nil), rep.Lines...)}
}

// failure returns rep as the reply for a failure: a 4xx or 5xx as it is,
// anything else (a 2xx or 3xx where it makes no sense) as a temporary
// protocol error, so that an odd peer can never make a failed step look
// like a delivery. After such a reply the session is out of step.
func (s *session) failure(rep *smtp.Reply) *smtp.Reply {
	if c := rep.Code / 100; c == 4 || c == 5 {
		return rep
	}
	s.broken = true
	return smtp.Replyf(451, "4.5.0", "unexpected reply from %s: %s", s.host, rep.Error())
}
