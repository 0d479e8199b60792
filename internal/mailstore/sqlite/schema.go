package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are applied in order; migrations[i] brings the schema from
// version i to version i+1. Never edit a released migration: append one.
//
// Account and mailbox IDs use AUTOINCREMENT so that an ID is never reused:
// a session still holding the ID of a deleted mailbox must not end up
// operating on a newer one. Times are stored as Unix nanoseconds. Flags are stored as one
// space-separated string of canonical flags (flags are atoms, so they
// contain no space) plus a seen column for the unseen counter.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
) WITHOUT ROWID;

-- last_uidvalidity: the highest UIDVALIDITY ever handed out in this
-- database. New mailboxes get max(last+1, now), so a value is never
-- reused, whatever name it was given to.
INSERT INTO meta (key, value) VALUES ('last_uidvalidity', 0);

CREATE TABLE accounts (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	name          TEXT NOT NULL UNIQUE,
	password_hash TEXT NOT NULL,
	created       INTEGER NOT NULL
);

CREATE TABLE mailboxes (
	id             INTEGER PRIMARY KEY AUTOINCREMENT,
	account_id     INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
	name           TEXT NOT NULL,
	special_use    TEXT NOT NULL,
	subscribed     INTEGER NOT NULL,
	uid_validity   INTEGER NOT NULL,
	uid_next       INTEGER NOT NULL,
	highest_modseq INTEGER NOT NULL,
	messages       INTEGER NOT NULL DEFAULT 0,
	unseen         INTEGER NOT NULL DEFAULT 0,
	size           INTEGER NOT NULL DEFAULT 0,
	UNIQUE (account_id, name)
);

-- One row per blob file that may be referenced. structure is
-- message.Part.Marshal output, computed once when the blob was spooled.
CREATE TABLE blobs (
	id        INTEGER PRIMARY KEY,
	hash      TEXT NOT NULL UNIQUE,
	size      INTEGER NOT NULL,
	structure BLOB
);

CREATE TABLE messages (
	mailbox_id    INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
	uid           INTEGER NOT NULL,
	modseq        INTEGER NOT NULL,
	flags         TEXT NOT NULL,
	seen          INTEGER NOT NULL,
	internal_date INTEGER NOT NULL,
	save_date     INTEGER NOT NULL,
	blob_id       INTEGER NOT NULL REFERENCES blobs(id),
	PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX messages_modseq ON messages (mailbox_id, modseq);
CREATE INDEX messages_blob ON messages (blob_id);

CREATE TABLE expunged (
	mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
	uid        INTEGER NOT NULL,
	modseq     INTEGER NOT NULL,
	PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX expunged_modseq ON expunged (mailbox_id, modseq);
`,
	// 2: SASL SCRAM secrets and quotas per account.
	// scram_sha256 holds the salted SCRAM-SHA-256 keys (RFC 5802 §3:
	// iteration count, salt, StoredKey, ServerKey), never the password; ''
	// when not set. quota_bytes / quota_messages: 0 means no limit.
	`
ALTER TABLE accounts ADD COLUMN scram_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN quota_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN quota_messages INTEGER NOT NULL DEFAULT 0;
`,
}

// migrate brings the database schema up to date. It runs in one IMMEDIATE
// transaction, so two processes opening a new data directory at once
// serialise: the second sees the first's result.
func migrate(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			conn.ExecContext(context.Background(), "ROLLBACK")
		}
	}()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	var version int
	err := conn.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&version)
	switch {
	case err == sql.ErrNoRows:
		if _, err := conn.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
	case err != nil:
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("sqlite: database schema version %d is newer than this program (%d)", version, len(migrations))
	}
	for v := version; v < len(migrations); v++ {
		if _, err := conn.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("sqlite: migration %d: %w", v+1, err)
		}
	}
	if version < len(migrations) {
		if _, err := conn.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(migrations)); err != nil {
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	committed = true
	return nil
}
