package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"mime"
	"net/textproto"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"yubin/internal/store"
)

const queueUsage = "yubin queue list | show ID | retry ID|all | remove ID | bounce ID"

// cmdQueue is the operator's view of the outbound queue. It works on the data directory like
// the other management commands; a running server sees retry and bounce within its poll
// interval (2 seconds), and sends the bounce itself.
func cmdQueue(ctx context.Context, args []string, stdout io.Writer) error {
	c, err := parseCLI(args)
	if err != nil {
		return err
	}
	if len(c.pos) == 0 {
		return usagef("usage: %s", queueUsage)
	}
	sub := c.pos[0]
	c.pos = c.pos[1:]
	var id int64
	switch sub {
	case "list":
		if err := need(c, 0, "yubin queue list"); err != nil {
			return err
		}
	case "show", "remove", "bounce", "retry":
		if err := need(c, 1, "yubin queue "+sub+" ID"); err != nil {
			return err
		}
		if sub == "retry" && c.pos[0] == "all" {
			break
		}
		if id, err = strconv.ParseInt(c.pos[0], 10, 64); err != nil || id <= 0 {
			return usagef("%q is not a queue entry id (see yubin queue list)", c.pos[0])
		}
	default:
		return usagef("unknown subcommand %q; usage: %s", sub, queueUsage)
	}
	return withStore(ctx, c, func(st *store.Store) error {
		switch sub {
		case "list":
			return queueList(ctx, st, stdout)
		case "show":
			return queueShow(ctx, st, id, stdout)
		case "retry":
			n, err := st.RetryQueue(ctx, id, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%d %s due now; a running server tries within seconds\n", n, plural(n, "entry", "entries"))
			return nil
		case "remove":
			if err := st.RemoveQueueEntry(ctx, id); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "entry %d removed; no bounce is sent\n", id)
			return nil
		case "bounce":
			e, err := st.GetQueueEntry(ctx, id)
			if err != nil {
				return err
			}
			reason := "554 5.0.0 Delivery cancelled by the postmaster of this mail system"
			if e.LastError != "" {
				reason += " (last error: " + e.LastError + ")"
			}
			if err := st.FailQueueEntry(ctx, id, time.Now(), reason); err != nil {
				return err
			}
			if e.From == "" {
				fmt.Fprintf(stdout, "entry %d failed; its sender is <>, so no bounce is sent\n", id)
			} else {
				fmt.Fprintf(stdout, "entry %d failed; the server sends the bounce to <%s> (within seconds if it runs, else when it starts)\n", id, e.From)
			}
			return nil
		}
		return nil
	})
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

const timeLayout = "2006-01-02 15:04:05"

func queueList(ctx context.Context, st *store.Store, stdout io.Writer) error {
	es, err := st.ListQueue(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tMESSAGE\tRCPT\tSTATE\tATTEMPTS\tNEXT ATTEMPT (UTC)\tLAST ERROR")
	for _, e := range es {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, e.MessageID, e.Rcpt, e.State, e.Attempts,
			e.NextAttempt.UTC().Format(timeLayout), shorten(e.LastError, 70))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d %s\n", len(es), plural(len(es), "entry", "entries"))
	return nil
}

// shorten cuts s to n bytes for a table; queue show prints it whole.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

func queueShow(ctx context.Context, st *store.Store, id int64, stdout io.Writer) error {
	e, err := st.GetQueueEntry(ctx, id)
	if err != nil {
		return err
	}
	tl, err := st.QueueTimeline(ctx, id)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	row("entry", "%d", e.ID)
	row("message", "%s (%d bytes, received %s UTC)", e.MessageID, e.Size, e.ReceivedAt.UTC().Format(timeLayout))
	row("from", "<%s>", e.From)
	row("to", "<%s>", e.Rcpt)
	row("state", "%s", e.State)
	row("attempts", "%d", e.Attempts)
	row("queued", "%s UTC", e.Created.UTC().Format(timeLayout))
	row("next attempt", "%s UTC", e.NextAttempt.UTC().Format(timeLayout))
	row("expires", "%s UTC", e.Expires.UTC().Format(timeLayout))
	if e.LastError != "" {
		from := ""
		if e.LastMX != "" {
			from = " (from " + e.LastMX + ")"
		}
		row("last error", "%s%s", e.LastError, from)
	}
	var params []string
	for _, p := range [][2]string{{"NOTIFY", e.Notify}, {"ORCPT", e.ORCPT}, {"RET", e.Ret}, {"ENVID", e.EnvID}} {
		if p[1] != "" {
			params = append(params, p[0]+"="+p[1])
		}
	}
	if e.SMTPUTF8 {
		params = append(params, "SMTPUTF8")
	}
	if e.EightBit {
		params = append(params, "BODY=8BITMIME")
	}
	if e.Warned {
		params = append(params, "(delay warning sent)")
	}
	if len(params) > 0 {
		row("parameters", "%s", strings.Join(params, " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(stdout, "\nheaders:")
	if hs, err := headerSummary(ctx, st, e.MessageID); err != nil {
		fmt.Fprintf(stdout, "  (cannot read the message: %v)\n", err)
	} else {
		for _, h := range hs {
			fmt.Fprintf(stdout, "  %s\n", h)
		}
	}

	fmt.Fprintln(stdout, "\ntimeline:")
	if len(tl) == 0 {
		fmt.Fprintln(stdout, "  no attempt yet")
		return nil
	}
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TIME (UTC)\tMX\tIP\tTLS\tREPLY")
	for _, a := range tl {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", a.Time.UTC().Format(timeLayout), or(a.MX, "-"), or(a.IP, "-"), or(a.TLS, "-"), a.Reply)
	}
	return tw.Flush()
}

// headerSummary returns the header fields an operator recognises a message by, decoded.
func headerSummary(ctx context.Context, st *store.Store, msgID string) ([]string, error) {
	f, _, err := st.OpenMessage(ctx, msgID)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := textproto.NewReader(bufio.NewReader(io.LimitReader(f, 1<<20))).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return nil, fmt.Errorf("read header: %w", err)
	}
	dec := &mime.WordDecoder{}
	var out []string
	for _, k := range []string{"From", "To", "Cc", "Subject", "Date", "Message-Id"} {
		v := h.Get(k)
		if v == "" {
			continue
		}
		if d, err := dec.DecodeHeader(v); err == nil {
			v = d
		}
		out = append(out, k+": "+shorten(strings.Join(strings.Fields(v), " "), 200))
	}
	return out, nil
}
