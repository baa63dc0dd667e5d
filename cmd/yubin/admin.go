package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"yubin/internal/address"
	"yubin/internal/directory"
	"yubin/internal/store"
)

// cliArgs are the positional arguments and the options of a management command. Options may
// stand anywhere ("yubin mail list a@b --data DIR"), which the flag package does not allow.
type cliArgs struct {
	pos           []string
	data, config  string
	mailbox       string
	passwordStdin bool
}

func parseCLI(args []string) (cliArgs, error) {
	c := cliArgs{mailbox: "INBOX"}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || a == "-" {
			c.pos = append(c.pos, a)
			continue
		}
		next := func() (string, error) {
			if hasVal {
				return val, nil
			}
			if i+1 >= len(args) {
				return "", usagef("option %s needs a value", a)
			}
			i++
			return args[i], nil
		}
		var err error
		switch name {
		case "data":
			c.data, err = next()
		case "config":
			c.config, err = next()
		case "mailbox":
			c.mailbox, err = next()
		case "password-stdin":
			c.passwordStdin = true
		default:
			return c, usagef("unknown option %s", a)
		}
		if err != nil {
			return c, err
		}
	}
	return c, nil
}

// openStore opens the data directory found as cliConfig says.
func (c cliArgs) openStore(ctx context.Context) (*store.Store, error) {
	cfg, err := cliConfig(c)
	if err != nil {
		return nil, err
	}
	return store.Open(ctx, cfg.DataDir, store.Options{})
}

func withStore(ctx context.Context, c cliArgs, f func(*store.Store) error) error {
	st, err := c.openStore(ctx)
	if err != nil {
		return err
	}
	return errors.Join(f(st), st.Close())
}

func need(c cliArgs, n int, usage string) error {
	if len(c.pos) != n {
		return usagef("usage: %s", usage)
	}
	return nil
}

// addressKey checks and normalises an address given on the command line.
func addressKey(s string) (string, error) {
	a, err := address.Parse(s, address.Options{AllowUTF8: true})
	if err != nil {
		return "", fmt.Errorf("%q: %w", s, err)
	}
	if a.IsIPLiteral() || a.HasRoutingChars() {
		return "", fmt.Errorf("%q: not usable as a hosted address", s)
	}
	return a.Key(), nil
}

func domainName(s string) (string, error) {
	if _, err := address.Parse("x@"+s, address.Options{AllowUTF8: true}); err != nil || strings.HasPrefix(s, "[") {
		return "", fmt.Errorf("%q is not a domain name", s)
	}
	return strings.ToLower(s), nil
}

func cmdDomain(ctx context.Context, args []string, stdout io.Writer) error {
	c, err := parseCLI(args)
	if err != nil {
		return err
	}
	if len(c.pos) == 0 {
		return usagef("usage: yubin domain add|list|remove|catchall")
	}
	sub := c.pos[0]
	c.pos = c.pos[1:]
	return withStore(ctx, c, func(st *store.Store) error {
		switch sub {
		case "add", "remove":
			if err := need(c, 1, "yubin domain "+sub+" NAME"); err != nil {
				return err
			}
			name, err := domainName(c.pos[0])
			if err != nil {
				return err
			}
			if sub == "add" {
				err = st.AddDomain(ctx, name)
			} else {
				err = st.RemoveDomain(ctx, name)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "domain %s %s\n", name, map[string]string{"add": "added", "remove": "removed"}[sub])
			return nil
		case "list":
			ds, err := st.ListDomains(ctx)
			if err != nil {
				return err
			}
			for _, d := range ds {
				if d.CatchAll != "" {
					fmt.Fprintf(stdout, "%s\tcatch-all -> %s\n", d.Name, d.CatchAll)
				} else {
					fmt.Fprintln(stdout, d.Name)
				}
			}
			return nil
		case "catchall":
			if len(c.pos) != 1 && len(c.pos) != 2 {
				return usagef("usage: yubin domain catchall DOMAIN [TARGET]")
			}
			name, err := domainName(c.pos[0])
			if err != nil {
				return err
			}
			target := ""
			if len(c.pos) == 2 {
				if target, err = addressKey(c.pos[1]); err != nil {
					return err
				}
			}
			if err := st.SetCatchAll(ctx, name, target); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "catch-all of %s: %s\n", name, or(target, "none"))
			return nil
		}
		return usagef("unknown subcommand %q", sub)
	})
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// readPassword takes a password from standard input (first line), or makes one.
func readPassword(c cliArgs, stdin io.Reader) (pw string, generated bool, err error) {
	if !c.passwordStdin {
		return newPassword(), true, nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", false, err
	}
	pw = strings.TrimRight(line, "\r\n")
	if len(pw) < 8 {
		return "", false, errors.New("password must have at least 8 characters")
	}
	return pw, false, nil
}

func cmdAccount(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	c, err := parseCLI(args)
	if err != nil {
		return err
	}
	if len(c.pos) == 0 {
		return usagef("usage: yubin account add|list|passwd|remove|app-password")
	}
	sub := c.pos[0]
	c.pos = c.pos[1:]
	return withStore(ctx, c, func(st *store.Store) error {
		switch sub {
		case "add", "passwd":
			if err := need(c, 1, "yubin account "+sub+" ADDRESS [--password-stdin]"); err != nil {
				return err
			}
			key, err := addressKey(c.pos[0])
			if err != nil {
				return err
			}
			pw, generated, err := readPassword(c, stdin)
			if err != nil {
				return err
			}
			hash, err := directory.HashPassword(pw, directory.DefaultHashParams())
			if err != nil {
				return err
			}
			if sub == "add" {
				_, err = st.AddAccount(ctx, key, hash)
			} else {
				err = st.SetPassword(ctx, key, hash)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "account %s %s\n", key, map[string]string{"add": "added", "passwd": "password changed"}[sub])
			if generated {
				fmt.Fprintf(stdout, "password: %s\n", pw)
			}
			return nil
		case "app-password":
			return appPassword(ctx, st, c, stdout)
		case "remove":
			if err := need(c, 1, "yubin account remove ADDRESS"); err != nil {
				return err
			}
			key, err := addressKey(c.pos[0])
			if err != nil {
				return err
			}
			if err := st.RemoveAccount(ctx, key); err != nil {
				return err
			}
			n, err := st.DeleteUnreferenced(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "account %s removed (%d messages deleted)\n", key, n)
			return nil
		case "list":
			domain := ""
			if len(c.pos) > 0 {
				domain = strings.ToLower(c.pos[0])
			}
			as, err := st.ListAccounts(ctx, domain)
			if err != nil {
				return err
			}
			for _, a := range as {
				state := ""
				if a.Disabled {
					state = "\tdisabled"
				}
				fmt.Fprintf(stdout, "%s%s\n", a.Address, state)
			}
			return nil
		}
		return usagef("unknown subcommand %q", sub)
	})
}

// appPassword manages an account's app passwords: one per device, each revocable alone.
func appPassword(ctx context.Context, st *store.Store, c cliArgs, stdout io.Writer) error {
	const usage = "yubin account app-password add ADDRESS NAME | list ADDRESS | remove ADDRESS NAME"
	if len(c.pos) < 2 {
		return usagef("usage: %s", usage)
	}
	sub := c.pos[0]
	key, err := addressKey(c.pos[1])
	if err != nil {
		return err
	}
	switch sub {
	case "add":
		if len(c.pos) != 3 {
			return usagef("usage: %s", usage)
		}
		pw := newPassword()
		hash, err := directory.HashPassword(pw, directory.DefaultHashParams())
		if err != nil {
			return err
		}
		if err := st.AddAppPassword(ctx, key, c.pos[2], hash); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "app password %q of %s added\npassword: %s\n", c.pos[2], key, pw)
		return nil
	case "list":
		ps, err := st.ListAppPasswords(ctx, key)
		if err != nil {
			return err
		}
		for _, p := range ps {
			fmt.Fprintf(stdout, "%s\tcreated %s\n", p.Name, p.Created.Format("2006-01-02 15:04"))
		}
		return nil
	case "remove":
		if len(c.pos) != 3 {
			return usagef("usage: %s", usage)
		}
		if err := st.RemoveAppPassword(ctx, key, c.pos[2]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "app password %q of %s revoked\n", c.pos[2], key)
		return nil
	}
	return usagef("usage: %s", usage)
}

func cmdAlias(ctx context.Context, args []string, stdout io.Writer) error {
	c, err := parseCLI(args)
	if err != nil {
		return err
	}
	if len(c.pos) == 0 {
		return usagef("usage: yubin alias add|list|remove")
	}
	sub := c.pos[0]
	c.pos = c.pos[1:]
	return withStore(ctx, c, func(st *store.Store) error {
		switch sub {
		case "add":
			if len(c.pos) < 2 {
				return usagef("usage: yubin alias add ADDRESS TARGET...")
			}
			key, err := addressKey(c.pos[0])
			if err != nil {
				return err
			}
			var targets []string
			for _, t := range c.pos[1:] {
				tk, err := addressKey(t)
				if err != nil {
					return err
				}
				targets = append(targets, tk)
			}
			if err := st.AddAlias(ctx, key, targets); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "alias %s -> %s\n", key, strings.Join(targets, ", "))
			return nil
		case "remove":
			if err := need(c, 1, "yubin alias remove ADDRESS"); err != nil {
				return err
			}
			key, err := addressKey(c.pos[0])
			if err != nil {
				return err
			}
			if err := st.RemoveAlias(ctx, key); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "alias %s removed\n", key)
			return nil
		case "list":
			domain := ""
			if len(c.pos) > 0 {
				domain = strings.ToLower(c.pos[0])
			}
			m, err := st.ListAliases(ctx, domain)
			if err != nil {
				return err
			}
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(stdout, "%s -> %s\n", k, strings.Join(m[k], ", "))
			}
			return nil
		}
		return usagef("unknown subcommand %q", sub)
	})
}

func cmdMail(ctx context.Context, args []string, stdout io.Writer) error {
	c, err := parseCLI(args)
	if err != nil {
		return err
	}
	if len(c.pos) < 2 {
		return usagef("usage: yubin mail list|count ADDRESS | yubin mail show ADDRESS UID")
	}
	sub := c.pos[0]
	key, err := addressKey(c.pos[1])
	if err != nil {
		return err
	}
	return withStore(ctx, c, func(st *store.Store) error {
		acct, err := st.GetAccount(ctx, key)
		if err != nil {
			return fmt.Errorf("account %s: %w", key, err)
		}
		if sub == "count" {
			boxes, err := st.ListMailboxes(ctx, acct.ID)
			if err != nil {
				return err
			}
			for _, b := range boxes {
				if b.Name == c.mailbox {
					fmt.Fprintln(stdout, b.Messages)
					return nil
				}
			}
			return fmt.Errorf("%s has no mailbox %q", key, c.mailbox)
		}
		msgs, err := st.ListMessages(ctx, acct.ID, c.mailbox)
		if err != nil {
			return err
		}
		switch sub {
		case "list":
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "UID\tSIZE\tRECEIVED\tID\tFLAGS")
			for _, m := range msgs {
				fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", m.UID, m.Size, m.InternalDate.Format("2006-01-02 15:04:05"), m.MessageID, strings.Join(m.Flags, " "))
			}
			return tw.Flush()
		case "show":
			if len(c.pos) != 3 {
				return usagef("usage: yubin mail show ADDRESS UID [--mailbox NAME]")
			}
			uid, err := strconv.ParseUint(c.pos[2], 10, 32)
			if err != nil {
				return usagef("%q is not a UID", c.pos[2])
			}
			for _, m := range msgs {
				if uint64(m.UID) == uid {
					f, _, err := st.OpenMessage(ctx, m.MessageID)
					if err != nil {
						return err
					}
					defer f.Close()
					_, err = io.Copy(stdout, f)
					return err
				}
			}
			return fmt.Errorf("no message with UID %d in %s of %s", uid, c.mailbox, key)
		}
		return usagef("unknown subcommand %q", sub)
	})
}
