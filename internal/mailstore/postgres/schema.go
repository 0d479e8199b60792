package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// migrations are applied in order; migrations[i] brings the schema from
// version i to version i+1. Never edit a released migration: append one.
//
// IDs are identity columns (sequences), which never hand out a value
// twice, so a session still holding the ID of a deleted mailbox never
// operates on a newer one. Times are Unix nanoseconds (bigint), exactly as
// the sqlite backend keeps them. Flags are one space-separated string of
// canonical flags (atoms contain no space) plus the seen and deleted
// columns the counters and View need. Names use the "C" collation, so that
// they sort and compare bytewise (Go string order) whatever the database's
// locale. messages.size repeats the blob's size so that counters, quotas
// and View never join blobs.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE meta (
	key   text PRIMARY KEY,
	value bigint NOT NULL
);

-- last_uidvalidity: the highest UIDVALIDITY ever handed out in this
-- database. New mailboxes get max(last+1, now), so a value is never
-- reused, whatever name it was given to.
INSERT INTO meta (key, value) VALUES ('last_uidvalidity', 0);

CREATE TABLE accounts (
	id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name           text COLLATE "C" NOT NULL UNIQUE,
	password_hash  text NOT NULL,
	scram_sha256   text NOT NULL DEFAULT '',
	created        bigint NOT NULL,
	quota_bytes    bigint NOT NULL DEFAULT 0,
	quota_messages bigint NOT NULL DEFAULT 0
);

CREATE TABLE mailboxes (
	id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	account_id     bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	name           text COLLATE "C" NOT NULL,
	special_use    text NOT NULL,
	subscribed     boolean NOT NULL,
	uid_validity   bigint NOT NULL,
	uid_next       bigint NOT NULL,
	highest_modseq bigint NOT NULL,
	messages       bigint NOT NULL DEFAULT 0,
	unseen         bigint NOT NULL DEFAULT 0,
	size           bigint NOT NULL DEFAULT 0,
	UNIQUE (account_id, name)
);

-- One row per blob file that may be referenced. structure is
-- message.Part.Marshal output, computed once when the blob was spooled.
CREATE TABLE blobs (
	id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	hash      text COLLATE "C" NOT NULL UNIQUE,
	size      bigint NOT NULL,
	structure bytea
);

CREATE TABLE messages (
	mailbox_id    bigint NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
	uid           bigint NOT NULL,
	modseq        bigint NOT NULL,
	flags         text NOT NULL,
	seen          boolean NOT NULL,
	deleted       boolean NOT NULL,
	internal_date bigint NOT NULL,
	save_date     bigint NOT NULL,
	size          bigint NOT NULL,
	blob_id       bigint NOT NULL REFERENCES blobs (id),
	PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX messages_modseq ON messages (mailbox_id, modseq);
CREATE INDEX messages_blob ON messages (blob_id);

CREATE TABLE expunged (
	mailbox_id bigint NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
	uid        bigint NOT NULL,
	modseq     bigint NOT NULL,
	PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX expunged_modseq ON expunged (mailbox_id, modseq);
`,
	// 2: the blob's hash (the BlobID) on the message row, so that listing
	// messages (FETCH FLAGS of a whole mailbox) needs no lookup in blobs
	// per row: that lookup was about half of PostgreSQL's time in the
	// IMAP benchmark (docs/benchmarks.md, scale-out). Nullable, and read
	// as coalesce(blob_hash, lookup), so that nodes of the previous
	// version, which insert rows without it, keep working during a
	// rolling upgrade.
	`
ALTER TABLE messages ADD COLUMN blob_hash text;
UPDATE messages m SET blob_hash = b.hash FROM blobs b WHERE b.id = m.blob_id;
`,
}

// Migrate brings the schema of the database at url up to date and returns
// the number of migrations it applied (0 when it was current). It runs in
// one transaction holding pg_advisory_xact_lock(migrateLockKey), so nodes
// starting together serialise: the later ones find the schema current. A
// database whose schema is newer than this program is an error, and so
// nothing is changed. `letterbox store migrate` calls it; Open does too.
func Migrate(ctx context.Context, url string) (applied int, err error) {
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		return 0, fmt.Errorf("postgres: %w", err)
	}
	prepareConnConfig(cc, appName)
	return migrate(ctx, cc)
}

func migrate(ctx context.Context, cc *pgx.ConnConfig) (int, error) {
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return 0, fmt.Errorf("postgres: migrate: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn.Close(cctx)
		cancel()
	}()
	for attempt := 1; ; attempt++ {
		n, err := migrateTx(ctx, conn)
		if err != nil && retryable(err) && attempt < maxAttempts {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("postgres: migrate: %w", err)
		}
		return n, nil
	}
}

// errNewerSchema reports a database written by a newer program.
var errNewerSchema = errors.New("database schema is newer than this program")

func migrateTx(ctx context.Context, conn *pgx.Conn) (applied int, err error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			tx.Rollback(rctx)
			cancel()
		}
	}()
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrateLockKey); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)`); err != nil {
		return 0, err
	}
	var version int
	err = tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&version)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return 0, err
		}
	case err != nil:
		return 0, err
	}
	if version > len(migrations) {
		return 0, fmt.Errorf("%w: version %d, this program knows %d", errNewerSchema, version, len(migrations))
	}
	for v := version; v < len(migrations); v++ {
		if _, err := tx.Exec(ctx, migrations[v]); err != nil {
			return 0, fmt.Errorf("migration %d: %w", v+1, err)
		}
	}
	if version < len(migrations) {
		if _, err := tx.Exec(ctx, `UPDATE schema_version SET version = $1`, len(migrations)); err != nil {
			return 0, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	return len(migrations) - version, nil
}
