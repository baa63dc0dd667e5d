package store

import (
	"context"
	"database/sql"
	"fmt"
)

// schemaVersion is stored in PRAGMA user_version. migrations[i] takes the
// schema from version i to i+1.
const schemaVersion = 1

// Times are INTEGER Unix seconds (UTC); booleans are INTEGER 0/1; flags are
// TEXT, space separated, in their standard case (`\Seen`). A PostgreSQL
// backend maps INTEGER to BIGINT and AUTOINCREMENT to an identity column.
// AUTOINCREMENT keeps SQLite from reusing the id of a deleted account,
// mailbox or queue row, which a session or a log line may still name.
//
// Version 1 has not been released yet, so it is still assembled from the parts that each
// subsystem owns (schemaCore here, the others in their own files); once released, a change
// becomes a new migration.
var migrations = []string{
	// 0 -> 1
	schemaCore + schemaQueue + schemaMailbox + schemaAuth + schemaDKIM,
}

const schemaCore = `
CREATE TABLE domains (
	name      TEXT PRIMARY KEY,
	catch_all TEXT NOT NULL DEFAULT '',
	created   INTEGER NOT NULL
);
CREATE TABLE accounts (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	address       TEXT NOT NULL UNIQUE,
	domain        TEXT NOT NULL REFERENCES domains (name),
	password_hash TEXT NOT NULL,
	disabled      INTEGER NOT NULL DEFAULT 0,
	created       INTEGER NOT NULL
);
CREATE INDEX accounts_domain ON accounts (domain);
CREATE TABLE aliases (
	address TEXT NOT NULL,
	target  TEXT NOT NULL,
	domain  TEXT NOT NULL REFERENCES domains (name),
	PRIMARY KEY (address, target)
);
CREATE INDEX aliases_domain ON aliases (domain);
CREATE TABLE mailboxes (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	account_id    INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	name          TEXT NOT NULL,
	special_use   TEXT NOT NULL DEFAULT '',
	uidvalidity   INTEGER NOT NULL,
	uidnext       INTEGER NOT NULL,
	highestmodseq INTEGER NOT NULL,
	subscribed    INTEGER NOT NULL DEFAULT 0,
	unseen_low    INTEGER NOT NULL DEFAULT 1, -- every entry with a lower UID has \Seen (see unseenLowSQL)
	UNIQUE (account_id, name)
);
CREATE TABLE messages (
	id          TEXT PRIMARY KEY,
	blob_path   TEXT NOT NULL, -- '' when data holds the message (small messages, see InlineMax)
	size        INTEGER NOT NULL,
	received_at INTEGER NOT NULL,
	env_from    TEXT NOT NULL,
	data        BLOB
);
CREATE TABLE mailbox_messages (
	mailbox_id    INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
	uid           INTEGER NOT NULL,
	message_id    TEXT NOT NULL REFERENCES messages (id),
	flags         TEXT NOT NULL DEFAULT '',
	modseq        INTEGER NOT NULL,
	internal_date INTEGER NOT NULL,
	PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID; -- a mailbox's rows in UID order: FETCH 1:* reads them without a lookup each
CREATE INDEX mailbox_messages_message ON mailbox_messages (message_id);
CREATE INDEX mailbox_messages_modseq ON mailbox_messages (mailbox_id, modseq);
`

// Subsystem parts of schema version 1: schemaQueue is in queue.go, schemaMailbox in
// imap_schema.go.

// migrate brings the schema to schemaVersion. It runs in one BEGIN IMMEDIATE
// transaction and reads the version inside it, so two processes opening a new
// directory at once do not both create the tables. A database already at schemaVersion
// is only read: opening it (a CLI command beside a busy server) does not wait for the
// writer's lock.
func migrate(ctx context.Context, db *sql.DB) error {
	if _, current, err := schemaState(ctx, db); err != nil || current {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer tx.Rollback()
	v, current, err := schemaState(ctx, tx)
	if err != nil || current {
		return err // another process migrated it meanwhile
	}
	for ; v < schemaVersion; v++ {
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migrate schema to version %d: %w", v+1, err)
		}
	}
	// PRAGMA takes no bound parameters; v is our own integer.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion)); err != nil {
		return fmt.Errorf("set schema version: %w", err)
	}
	return tx.Commit()
}

// schemaState reads the recorded schema version; current reports that it is schemaVersion
// (versions only grow), and a version newer than this yubin's is an error.
func schemaState(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}) (v int, current bool, err error) {
	if err := q.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return 0, false, fmt.Errorf("read schema version: %w", err)
	}
	if v > schemaVersion {
		return v, false, fmt.Errorf("schema version %d is newer than this yubin (%d)", v, schemaVersion)
	}
	return v, v == schemaVersion, nil
}

// SchemaVersion returns the schema version recorded in the database.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.r.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v)
	return v, err
}
