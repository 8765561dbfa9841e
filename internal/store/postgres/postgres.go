// Package postgres is the storage backend for several nodes (spec §9.1):
// PostgreSQL through a pgx v5 connection pool.
//
// It implements store.Store and store.Migrator with the behaviour of
// store/sqlite (one conformance suite, store/storetest, runs against both):
//
//   - Text columns are COLLATE "C", so every sorted result is in byte
//     order whatever the database's default collation.
//   - Times are TIMESTAMPTZ (microsecond precision, truncated like
//     time.Time.UnixMicro) and are returned in UTC.
//   - A unique violation is store.ErrConflict, a missing row
//     store.ErrNotFound.
//   - Every Queries call outside Tx is atomic: a single statement, or a
//     transaction of its own.
//
// Inside Tx a call that reports store.ErrConflict or store.ErrNotFound
// leaves the transaction usable, as on SQLite: conflicting inserts use
// ON CONFLICT DO NOTHING, and EnqueueInbox runs under a savepoint. Any
// other error (a foreign key or check violation, a lost connection)
// aborts the PostgreSQL transaction: fn must return it.
//
// Queue ids (relay_queue.queue_id) come from an identity sequence. So that
// a reader paging with ListInbox(after) never skips an entry committed
// late with a smaller id, EnqueueInbox holds a transaction-scoped advisory
// lock (one per database) from before its ids are drawn until its
// transaction ends: enqueue transactions commit in queue-id order, as they
// do on SQLite, whose writers are serialised. Keep transactions that call
// EnqueueInbox short.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/commucat/commucat/internal/store"
)

// DefaultMaxConns is the pool size unless the DSN sets pool_max_conns.
const DefaultMaxConns = 16

// defaultConnectTimeout bounds a connection attempt unless the DSN sets
// connect_timeout.
const defaultConnectTimeout = 10 * time.Second

// Advisory lock keys (pg_advisory_xact_lock; per database).
const (
	migrateLockKey int64 = 0x636f6d6d75636174 // "commucat"
	enqueueLockKey int64 = 0x636f6d6d71756575 // "commqueu"
)

// PostgreSQL error codes (SQLSTATE).
const (
	codeUniqueViolation = "23505"
)

// Store is the PostgreSQL backend. It implements store.Store and
// store.Migrator. It is safe for concurrent use.
type Store struct {
	queries
	pool *pgxpool.Pool
}

var (
	_ store.Store    = (*Store)(nil)
	_ store.Migrator = (*Store)(nil)
)

// Open connects to the database of dsn (a postgres:// URL or key=value
// string, as libpq accepts; pgxpool's pool_* settings are honoured) and
// checks the connection. The pool holds at most DefaultMaxConns
// connections unless the DSN sets pool_max_conns; a connection attempt
// times out after 10 s unless it sets connect_timeout. It does not
// migrate: call Migrate.
func Open(ctx context.Context, dsn string) (*Store, error) {
	if strings.TrimSpace(dsn) == "" {
		return nil, errors.New("postgres: empty DSN")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "commucat"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	return &Store{queries: queries{db: pool, pool: pool}, pool: pool}, nil
}

// Kind returns "postgres".
func (s *Store) Kind() string { return "postgres" }

// Ping runs SELECT 1.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Close closes the pool (waiting for connections in use to be released).
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Tx runs fn in one READ COMMITTED transaction with the semantics of
// pgx.BeginTxFunc: committed when fn returns nil, rolled back when it
// returns an error (returned unchanged) or panics. The Queries must not be
// used after fn returns, nor from several goroutines at once. Nested Tx is
// not supported (the Queries given to fn has no Tx method). Unlike on
// SQLite, fn may also use the Store itself (another connection), though
// it then does not see fn's uncommitted writes.
func (s *Store) Tx(ctx context.Context, fn func(q store.Queries) error) error {
	return runTx(ctx, s.pool, func(tx pgx.Tx) error { return fn(&queries{db: tx}) })
}

// runTx is pgx.BeginTxFunc, with errors of BEGIN and COMMIT wrapped and
// fn's error returned unchanged.
func runTx(ctx context.Context, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) error {
	var fnErr error
	err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{}, func(tx pgx.Tx) error {
		fnErr = fn(tx)
		return fnErr
	})
	if err != nil && fnErr == nil {
		return wrap("transaction", err)
	}
	return err
}

// querier is what *pgxpool.Pool and pgx.Tx have in common.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// queries implements store.Queries. Outside Tx, db and pool are the pool;
// inside Tx, db is the transaction and pool is nil.
type queries struct {
	db   querier
	pool *pgxpool.Pool
}

// inTx reports whether q runs inside Store.Tx.
func (q *queries) inTx() bool { return q.pool == nil }

// atomic runs fn in one transaction: the enclosing Tx, or a new one.
func (q *queries) atomic(ctx context.Context, fn func(db querier) error) error {
	if q.inTx() {
		return fn(q.db)
	}
	return runTx(ctx, q.pool, func(tx pgx.Tx) error { return fn(tx) })
}

// exec runs a write statement and returns the number of rows it changed.
func exec(ctx context.Context, db querier, op, sql string, args ...any) (int64, error) {
	tag, err := db.Exec(ctx, sql, args...)
	if err != nil {
		return 0, wrap(op, err)
	}
	return tag.RowsAffected(), nil
}

// execOne runs a write statement that must change a row (ErrNotFound
// otherwise).
func (q *queries) execOne(ctx context.Context, op, sql string, args ...any) error {
	n, err := exec(ctx, q.db, op, sql, args...)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("postgres: %s: %w", op, store.ErrNotFound)
	}
	return nil
}

// insertOne runs an INSERT … ON CONFLICT DO NOTHING of one row: no row
// inserted is ErrConflict (raised without an SQL error, so an enclosing
// transaction stays usable).
func insertOne(ctx context.Context, db querier, op, sql string, args ...any) error {
	n, err := exec(ctx, db, op, sql, args...)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("postgres: %s: %w", op, store.ErrConflict)
	}
	return nil
}

// wrap maps driver errors to the store errors: no rows → ErrNotFound, a
// unique violation → ErrConflict (the driver error stays in the chain).
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("postgres: %s: %w", op, store.ErrNotFound)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == codeUniqueViolation {
		return fmt.Errorf("postgres: %s: %w: %w", op, store.ErrConflict, err)
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// errorf formats an error of this package.
func errorf(op, format string, args ...any) error {
	return fmt.Errorf("postgres: "+op+": "+format, args...)
}

// Time mapping (§9.1): TIMESTAMPTZ, returned in UTC.

func utc(t time.Time) time.Time { return t.UTC() }

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// fixed copies a BYTEA into a fixed-size array, checking its length.
func fixed(dst []byte, b []byte, column string) error {
	if len(b) != len(dst) {
		return fmt.Errorf("postgres: column %s holds %d bytes, want %d", column, len(b), len(dst))
	}
	copy(dst, b)
	return nil
}

// strings runs a read query of one text column.
func (q *queries) strings(ctx context.Context, op, sql string, args ...any) ([]string, error) {
	rows, err := q.db.Query(ctx, sql, args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}
