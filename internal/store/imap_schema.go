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
// message_meta caches what FETCH and SEARCH derive from an immutable blob, filled on first use,
// so that listing a large mailbox does not open every file each time: the header block, the
// MIME structure and the finished ENVELOPE (both encoded by the protocol layer), and the
// header's field values in lower case (raw and RFC 2047-decoded), which header SEARCH scans
// for its candidates. It is keyed by message id: a message's bytes never change.
//
// mailbox_search copies message_meta.search to every entry of the message, keyed like
// mailbox_messages, so that SEARCH HEADER scans one mailbox's rows in key order without a
// lookup per message (a join on message_id costs more than the scan itself). PutMessageMeta
// fills it, COPY copies it, and deleting the entry deletes it.
const schemaMailbox = `
CREATE TABLE mailbox_expunged (
	mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
	uid        INTEGER NOT NULL,
	modseq     INTEGER NOT NULL,
	PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX mailbox_expunged_modseq ON mailbox_expunged (mailbox_id, modseq);
-- The small columns come first, so that reading size and envelope does not touch a long
-- header's overflow pages; size repeats messages.size so that FETCH ENVELOPE RFC822.SIZE
-- needs no other table. (WITHOUT ROWID measured slower to fill and no faster to read.)
CREATE TABLE message_meta (
	message_id TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
	size       INTEGER NOT NULL,
	envelope   BLOB NOT NULL,
	structure  BLOB NOT NULL,
	search     BLOB NOT NULL,
	header     BLOB NOT NULL
);
CREATE TABLE mailbox_search (
	mailbox_id INTEGER NOT NULL,
	uid        INTEGER NOT NULL,
	search     BLOB NOT NULL,
	PRIMARY KEY (mailbox_id, uid),
	FOREIGN KEY (mailbox_id, uid) REFERENCES mailbox_messages (mailbox_id, uid) ON DELETE CASCADE
) WITHOUT ROWID;
`
