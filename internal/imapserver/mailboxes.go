package imapserver

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"
	goimapserver "github.com/emersion/go-imap/v2/imapserver"

	"yubin/internal/mailbox"
	"yubin/internal/store"
)

func errorID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// mailboxName validates and normalizes a client's mailbox name.
func mailboxName(name string) (string, error) {
	n, err := mailbox.Normalize(name)
	if err != nil {
		return "", no(imap.ResponseCodeCannot, "Invalid mailbox name")
	}
	return n, nil
}

func (s *session) notFound(name string) error {
	return no(imap.ResponseCodeNonExistent, "No such mailbox")
}

// Create implements CREATE (RFC 9051 6.3.4) with CREATE-SPECIAL-USE (RFC 6154 3). Missing
// parents are created too, as the RFC suggests.
func (s *session) Create(name string, options *imap.CreateOptions) error {
	name = strings.TrimSuffix(name, string(mailbox.Sep))
	n, err := mailboxName(name)
	if err != nil {
		return err
	}
	if n == "INBOX" {
		return no(imap.ResponseCodeAlreadyExists, "INBOX always exists")
	}
	var use string
	if options != nil {
		switch len(options.SpecialUse) {
		case 0:
		case 1:
			use = string(options.SpecialUse[0])
			if !slices.ContainsFunc(mailbox.SpecialUses, func(u string) bool { return strings.EqualFold(u, use) }) {
				return no(imap.ResponseCode("USEATTR"), "Unknown special-use attribute")
			}
			for _, u := range mailbox.SpecialUses {
				if strings.EqualFold(u, use) {
					use = u
				}
			}
		default:
			return no(imap.ResponseCode("USEATTR"), "One special-use attribute per mailbox")
		}
	}
	for _, p := range mailbox.Parents(n) {
		if _, err := s.srv.Store.GetMailbox(s.ctx, s.account.ID, p); errors.Is(err, store.ErrNotFound) {
			if _, err := s.srv.Store.CreateMailbox(s.ctx, s.account.ID, p, ""); err != nil && !errors.Is(err, store.ErrExists) {
				return s.internal("create", err)
			}
		}
	}
	_, err = s.srv.Store.CreateMailbox(s.ctx, s.account.ID, n, use)
	switch {
	case errors.Is(err, store.ErrExists):
		return no(imap.ResponseCodeAlreadyExists, "Mailbox already exists")
	case err != nil:
		return s.internal("create", err)
	}
	return nil
}

// Delete implements DELETE (RFC 9051 6.3.5). Children stay (as mailboxes of their own).
func (s *session) Delete(name string) error {
	n, err := mailboxName(name)
	if err != nil {
		return err
	}
	if n == "INBOX" {
		return no(imap.ResponseCodeCannot, "INBOX cannot be deleted")
	}
	err = s.srv.Store.DeleteMailbox(s.ctx, s.account.ID, n)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return s.notFound(n)
	case err != nil:
		return s.internal("delete", err)
	}
	return nil
}

// Rename implements RENAME (RFC 9051 6.3.6), children included; renaming INBOX moves its
// messages.
func (s *session) Rename(oldName, newName string, options *imap.RenameOptions) error {
	o, err := mailboxName(oldName)
	if err != nil {
		return err
	}
	n, err := mailboxName(strings.TrimSuffix(newName, string(mailbox.Sep)))
	if err != nil {
		return err
	}
	if n == "INBOX" || strings.HasPrefix(n, o+string(mailbox.Sep)) && o != "INBOX" {
		return no(imap.ResponseCodeCannot, "Cannot rename a mailbox to that name")
	}
	for _, p := range mailbox.Parents(n) {
		if p == o {
			continue
		}
		if _, err := s.srv.Store.GetMailbox(s.ctx, s.account.ID, p); errors.Is(err, store.ErrNotFound) {
			if _, err := s.srv.Store.CreateMailbox(s.ctx, s.account.ID, p, ""); err != nil && !errors.Is(err, store.ErrExists) {
				return s.internal("rename", err)
			}
		}
	}
	err = s.srv.Store.RenameMailbox(s.ctx, s.account.ID, o, n, string(mailbox.Sep))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return s.notFound(o)
	case errors.Is(err, store.ErrExists):
		return no(imap.ResponseCodeAlreadyExists, "Target mailbox already exists")
	case err != nil:
		return s.internal("rename", err)
	}
	return nil
}

func (s *session) Subscribe(name string) error   { return s.subscribe(name, true) }
func (s *session) Unsubscribe(name string) error { return s.subscribe(name, false) }

func (s *session) subscribe(name string, on bool) error {
	n, err := mailboxName(name)
	if err != nil {
		return err
	}
	err = s.srv.Store.SetSubscribed(s.ctx, s.account.ID, n, on)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return s.notFound(n)
	case err != nil:
		return s.internal("subscribe", err)
	}
	return nil
}

// List implements LIST and LSUB (RFC 9051 6.3.9, RFC 5258 LIST-EXTENDED, RFC 5819
// LIST-STATUS, RFC 6154 SPECIAL-USE). Special-use and child attributes are always returned.
func (s *session) List(w *goimapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	if options == nil {
		options = &imap.ListOptions{}
	}
	if len(patterns) == 0 {
		// LIST "" "": the hierarchy delimiter and root.
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: mailbox.Sep})
	}
	all, err := s.srv.Store.ListMailboxes(s.ctx, s.account.ID)
	if err != nil {
		return s.internal("list", err)
	}
	exists := make(map[string]*store.Mailbox, len(all))
	hasChildren := map[string]bool{}
	subscribedChild := map[string]bool{}
	for i := range all {
		m := &all[i]
		exists[m.Name] = m
		for _, p := range mailbox.Parents(m.Name) {
			hasChildren[p] = true
			if m.Subscribed {
				subscribedChild[p] = true
			}
		}
	}
	// Parents that do not exist themselves (after a DELETE of a parent) are listed as
	// \Noselect so that clients can show the tree.
	names := make([]string, 0, len(all))
	for _, m := range all {
		names = append(names, m.Name)
	}
	for p := range hasChildren {
		if exists[p] == nil {
			names = append(names, p)
		}
	}
	slices.SortFunc(names, func(a, b string) int {
		if a == "INBOX" {
			return -1
		}
		if b == "INBOX" {
			return 1
		}
		return strings.Compare(a, b)
	})
	compiled := make([]mailbox.Pattern, len(patterns))
	for i, p := range patterns {
		compiled[i] = mailbox.CompilePattern(ref, p)
	}
	for _, name := range names {
		if !slices.ContainsFunc(compiled, func(p mailbox.Pattern) bool { return p.Match(name) }) {
			continue
		}
		m := exists[name]
		data := &imap.ListData{Delim: mailbox.Sep, Mailbox: name}
		subscribed := m != nil && m.Subscribed
		switch {
		case options.SelectSubscribed && !subscribed:
			if !options.SelectRecursiveMatch || !subscribedChild[name] {
				continue
			}
			data.ChildInfo = &imap.ListDataChildInfo{Subscribed: true}
		case options.SelectSpecialUse && (m == nil || m.SpecialUse == ""):
			continue
		}
		if m == nil {
			data.Attrs = append(data.Attrs, imap.MailboxAttrNoSelect)
		}
		if hasChildren[name] {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
		} else {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasNoChildren)
		}
		if m != nil && m.SpecialUse != "" {
			data.Attrs = append(data.Attrs, imap.MailboxAttr(m.SpecialUse))
		}
		if subscribed && (options.ReturnSubscribed || options.SelectSubscribed) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
		}
		if options.ReturnStatus != nil && m != nil {
			st, err := s.status(name, options.ReturnStatus)
			if err == nil {
				data.Status = st
			}
		}
		if err := w.WriteList(data); err != nil {
			return err
		}
	}
	return nil
}

// Status implements STATUS (RFC 9051 6.3.11) with STATUS=SIZE and APPENDLIMIT.
func (s *session) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	n, err := mailboxName(name)
	if err != nil {
		return nil, err
	}
	return s.status(n, options)
}

func (s *session) status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	st, err := s.srv.Store.GetMailboxStatus(s.ctx, s.account.ID, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, s.notFound(name)
	}
	if err != nil {
		return nil, s.internal("status", err)
	}
	u32 := func(n int) *uint32 { v := uint32(n); return &v }
	data := &imap.StatusData{
		Mailbox:     name,
		NumMessages: u32(st.Messages),
		UIDNext:     imap.UID(st.UIDNext),
		UIDValidity: st.UIDValidity,
		NumUnseen:   u32(st.Unseen),
		NumDeleted:  u32(st.Deleted),
		Size:        &st.Size,
		NumRecent:   u32(0),
	}
	limit := s.AppendLimit()
	data.AppendLimit = &limit
	var deleted int64 // DELETED-STORAGE (RFC 9208): no quota accounting yet
	data.DeletedStorage = &deleted
	return data, nil
}
