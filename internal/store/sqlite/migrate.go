package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"time"

	"github.com/commucat/commucat/internal/store"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrations lists the embedded migrations in version order.
var migrations = store.MustLoadMigrations(migrationFS, "sqlite")

// LatestVersion is the newest embedded schema version.
func LatestVersion() int { return len(migrations) }

const createSchemaMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER NOT NULL PRIMARY KEY,
    applied_at INTEGER NOT NULL
)`

// currentVersion returns the highest recorded version (0 when none or
// when schema_migrations does not exist).
func currentVersion(ctx context.Context, ex execer) (int, error) {
	var n int
	err := ex.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n)
	if err != nil || n == 0 {
		return 0, err
	}
	var v sql.NullInt64
	if err := ex.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, err
	}
	return int(v.Int64), nil
}

// Migrate applies the pending embedded migrations in order, each in its
// own transaction together with its schema_migrations row. It returns how
// many it applied and the resulting version; a database whose version is
// newer than the newest embedded migration yields store.ErrSchemaTooNew
// (and nothing is applied).
func (s *Store) Migrate(ctx context.Context) (applied int, version int, err error) {
	// A migration may rewrite anything, memberships included.
	defer s.membersChanged(true)
	if _, err := s.writer.ExecContext(ctx, createSchemaMigrations); err != nil {
		return 0, 0, fmt.Errorf("sqlite: migrate: %w", err)
	}
	cur, err := currentVersion(ctx, s.writer)
	if err != nil {
		return 0, 0, fmt.Errorf("sqlite: migrate: %w", err)
	}
	for _, m := range migrations {
		if cur > LatestVersion() {
			break
		}
		if m.Version <= cur {
			continue
		}
		done := false
		err := s.atomic(ctx, func(tx execer) error {
			// Re-read the version inside the (immediate) transaction so
			// concurrent migrators never apply a migration twice.
			v, err := currentVersion(ctx, tx)
			if err != nil {
				return fmt.Errorf("sqlite: migrate: %w", err)
			}
			if v >= m.Version {
				return nil
			}
			if _, err := unprepared(tx).ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("sqlite: migration %s: %w", m.Name, err)
			}
			if _, err := tx.ExecContext(ctx,
				`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
				m.Version, toMicros(time.Now())); err != nil {
				return fmt.Errorf("sqlite: migration %s: record: %w", m.Name, err)
			}
			done = true
			return nil
		})
		if err != nil {
			return applied, cur, err
		}
		if done {
			applied++
		}
	}
	version, err = currentVersion(ctx, s.writer)
	if err != nil {
		return applied, version, fmt.Errorf("sqlite: migrate: %w", err)
	}
	if version > LatestVersion() {
		return applied, version, fmt.Errorf("sqlite: database version %d, newest migration %d: %w", version, LatestVersion(), store.ErrSchemaTooNew)
	}
	return applied, version, nil
}

// SchemaVersion returns the recorded schema version and whether embedded
// migrations are pending. A database newer than this release returns its
// version, pending false and store.ErrSchemaTooNew.
func (s *Store) SchemaVersion(ctx context.Context) (version int, pending bool, err error) {
	version, err = currentVersion(ctx, s.readers)
	if err != nil {
		return 0, false, fmt.Errorf("sqlite: schema version: %w", err)
	}
	if version > LatestVersion() {
		return version, false, fmt.Errorf("sqlite: database version %d, newest migration %d: %w", version, LatestVersion(), store.ErrSchemaTooNew)
	}
	return version, version < LatestVersion(), nil
}
