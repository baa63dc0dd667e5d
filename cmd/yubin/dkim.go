package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"yubin/internal/intake"
	"yubin/internal/store"
)

// cmdDKIM manages DKIM signing keys: keygen prints the exact DNS record to publish.
func cmdDKIM(ctx context.Context, args []string, stdout io.Writer) error {
	const usage = "yubin dkim keygen DOMAIN [--algo ed25519|rsa] [--selector NAME] | list [DOMAIN] | remove DOMAIN SELECTOR"
	// --algo and --selector are this command's own options; the rest go to parseCLI.
	algo, selector := "ed25519", ""
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(a, "=")
		if name == "--algo" || name == "--selector" {
			if !hasVal {
				if i+1 >= len(args) {
					return usagef("%s needs a value", name)
				}
				i++
				val = args[i]
			}
			if name == "--algo" {
				algo = val
			} else {
				selector = val
			}
			continue
		}
		rest = append(rest, a)
	}
	c, err := parseCLI(rest)
	if err != nil {
		return err
	}
	if len(c.pos) == 0 {
		return usagef("usage: %s", usage)
	}
	sub := c.pos[0]
	c.pos = c.pos[1:]
	return withStore(ctx, c, func(st *store.Store) error {
		switch sub {
		case "keygen":
			if len(c.pos) != 1 {
				return usagef("usage: %s", usage)
			}
			domain, err := domainName(c.pos[0])
			if err != nil {
				return err
			}
			if algo != "ed25519" && algo != "rsa" {
				return usagef("--algo must be ed25519 or rsa")
			}
			if selector == "" {
				// A dated selector lets a new key be published beside the old one.
				selector = map[string]string{"ed25519": "ed", "rsa": "rsa"}[algo] + time.Now().UTC().Format("200601")
			}
			k, err := intake.GenerateDKIMKey(domain, selector, algo)
			if err != nil {
				return err
			}
			if err := st.AddDKIMKey(ctx, k); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "DKIM key %s for %s created. Publish this DNS record, then mail from %s is signed:\n\n", selector, domain, domain)
			return printDKIMRecord(stdout, k)
		case "list":
			domain := ""
			if len(c.pos) > 0 {
				domain = strings.ToLower(c.pos[0])
			}
			keys, err := st.DKIMKeys(ctx, domain)
			if err != nil {
				return err
			}
			for _, k := range keys {
				fmt.Fprintf(stdout, "%s\t%s\t%s\tcreated %s\n", k.Domain, k.Selector, k.Algorithm, k.Created.Format("2006-01-02"))
				if err := printDKIMRecord(stdout, k); err != nil {
					return err
				}
			}
			return nil
		case "remove":
			if len(c.pos) != 2 {
				return usagef("usage: %s", usage)
			}
			if err := st.RemoveDKIMKey(ctx, strings.ToLower(c.pos[0]), c.pos[1]); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "DKIM key %s of %s removed\n", c.pos[1], c.pos[0])
			return nil
		}
		return usagef("usage: %s", usage)
	})
}

// printDKIMRecord prints the record in zone-file form, split into 255-octet strings.
func printDKIMRecord(w io.Writer, k store.DKIMKey) error {
	name, value, err := intake.DKIMRecord(k)
	if err != nil {
		return err
	}
	var parts []string
	for len(value) > 255 {
		parts = append(parts, `"`+value[:255]+`"`)
		value = value[255:]
	}
	parts = append(parts, `"`+value+`"`)
	fmt.Fprintf(w, "%s. IN TXT %s\n\n", name, strings.Join(parts, " "))
	return nil
}
