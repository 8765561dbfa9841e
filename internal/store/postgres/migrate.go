package postgres

import (
	"context"
	"embed"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/commucat/commucat/internal/store"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrations lists the embedded migrations in version order.
var migrations = store.MustLoadMigrations(migrationFS, "postgres")

// LatestVersion is the newest embedded schema version.
func LatestVersion() int { return len(migrations) }

const createSchemaMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT      NOT NULL PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL
)`

// currentVersion returns the highest recorded version (0 when none or
// when schema_migrations does not exist in the search path).
func currentVersion(ctx context.Context, db querier) (int, error) {
	var exists bool
	if err := db.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return 0, err
	}
	var v int
	err := db.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

func tooNew(version int) error {
	return fmt.Errorf("postgres: database version %d, newest migration %d: %w", version, LatestVersion(), store.ErrSchemaTooNew)
}

// Migrate applies the pending embedded migrations in order, each in its
// own transaction together with its schema_migrations row. Every such
// transaction first takes a transaction-scoped advisory lock, so nodes
// migrating the same database at once apply each migration exactly once
// (the others wait, then find it applied). It returns how many migrations
// this call applied and the resulting version; a database whose version is
// newer than the newest embedded migration yields store.ErrSchemaTooNew
// (and nothing is applied).
func (s *Store) Migrate(ctx context.Context) (applied int, version int, err error) {
	for {
		did := false
		next := 0
		err := runTx(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
				return fmt.Errorf("postgres: migrate: lock: %w", err)
			}
			cur, err := currentVersion(ctx, tx)
			if err != nil {
				return fmt.Errorf("postgres: migrate: %w", err)
			}
			version = cur
			if cur > LatestVersion() {
				return tooNew(cur)
			}
			if cur == LatestVersion() {
				return nil
			}
			if _, err := tx.Exec(ctx, createSchemaMigrations); err != nil {
				return fmt.Errorf("postgres: migrate: %w", err)
			}
			m := migrations[cur] // version cur+1
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("postgres: migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx,
				`INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())`, m.Version); err != nil {
				return fmt.Errorf("postgres: migration %s: record: %w", m.Name, err)
			}
			did, next = true, m.Version
			return nil
		})
		if err != nil {
			return applied, version, err
		}
		if !did {
			return applied, version, nil
		}
		applied++
		version = next
	}
}

// SchemaVersion returns the recorded schema version and whether embedded
// migrations are pending. A database newer than this release returns its
// version, pending false and store.ErrSchemaTooNew.
func (s *Store) SchemaVersion(ctx context.Context) (version int, pending bool, err error) {
	version, err = currentVersion(ctx, s.pool)
	if err != nil {
		return 0, false, fmt.Errorf("postgres: schema version: %w", err)
	}
	if version > LatestVersion() {
		return version, false, tooNew(version)
	}
	return version, version < LatestVersion(), nil
}
