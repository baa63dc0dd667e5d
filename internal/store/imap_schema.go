package store

// schemaMailbox holds what the IMAP and POP3 servers need beyond schemaCore's mailboxes and
// mailbox_messages tables.
//
// Every change to a mailbox raises mailboxes.highestmodseq by one and stamps the changed rows
// with the new value (RFC 7162 3.1.1, kept now so CONDSTORE/QRESYNC can be added later):
// a new or re-flagged entry in mailbox_messages.modseq, an expunged one as a row of
// mailbox_expunged. A session that has seen everything up to modseq M learns what changed
// since then from two index range scans, which is how IDLE and the per-command poll stay cheap
// on large mailboxes, and is what QRESYNC's VANISHED (EARLIER) will need.
//
// message_meta caches what FETCH and SEARCH derive from an immutable blob (its header block and
// MIME structure), filled on first use, so that listing a large mailbox does not open every
// file each time. It is keyed by message id: a message's bytes never change.
const schemaMailbox = `
CREATE TABLE mailbox_expunged (
	mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
	uid        INTEGER NOT NULL,
	modseq     INTEGER NOT NULL,
	PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX mailbox_expunged_modseq ON mailbox_expunged (mailbox_id, modseq);
CREATE TABLE message_meta (
	message_id TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
	header     BLOB NOT NULL,
	structure  BLOB NOT NULL
);
`
