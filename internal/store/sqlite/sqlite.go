// Package sqlite is the embedded default storage backend (spec §9.1): one
// database file in WAL mode, opened with modernc.org/sqlite (no cgo).
//
// A Store holds two connection pools on the same file:
//
//   - the writer: exactly one connection, used for every write, for every
//     multi-statement operation and for Tx. Its transactions start with
//     BEGIN IMMEDIATE, so a transaction never has to upgrade a read lock to
//     a write lock (no SQLITE_BUSY deadlock between two writers).
//   - the readers: a small pool of read-only connections for single-statement
//     reads outside Tx; WAL lets them run beside the writer.
//
// Concurrent Tx calls share one transaction and one disk sync (group
// commit, groupcommit.go), each in its own savepoint.
//
// Tx holds the writer connection until fn returns, so fn must use only the
// Queries it is given: calling a write method of the Store itself from fn
// would wait for the writer connection fn holds (until ctx ends). Nested Tx
// is not supported (the Queries given to fn has no Tx method).
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/commucat/commucat/internal/store"
)

// busyTimeoutMS is the busy timeout of every connection (§9.1: 5 s).
const busyTimeoutMS = 5000

// maxReaders bounds the read pool.
const maxReaders = 4

// Store is the SQLite backend. It implements store.Store and
// store.Migrator. It is safe for concurrent use.
type Store struct {
	queries
	path    string
	writer  *sql.DB // one connection: every write, Tx
	readers *sql.DB // read-only connections
	sh      *shared
	gc      groupCommit // Tx (groupcommit.go)
}

// shared is the state every queries value of one Store uses.
type shared struct {
	wstmts  *stmtCache   // statements prepared on the writer
	rstmts  *stmtCache   // statements prepared on the readers
	members *memberCache // channel members (membercache.go)
}

var (
	_ store.Store    = (*Store)(nil)
	_ store.Migrator = (*Store)(nil)
)

// Open opens (creating it if missing, with its parent directory) the
// database file at path with WAL journal, synchronous = FULL, foreign keys
// on and a 5 s busy timeout. It does not migrate: call Migrate.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	if strings.ContainsRune(path, '?') || strings.HasPrefix(path, "file:") || path == ":memory:" {
		return nil, fmt.Errorf("sqlite: unsupported database path %q (a plain file path is required)", path)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("sqlite: create directory: %w", err)
		}
	}

	busy := fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeoutMS)
	// temp_store = MEMORY keeps the writer's statement journals (the
	// undo log of a statement or SAVEPOINT inside a transaction) in memory
	// instead of spilling them to a temporary file past 64 KiB: a group
	// commit of a few hundred inbox rows wrote ~7 % of the server's CPU
	// there. They only serve in-transaction rollback, never crash recovery
	// (that is the WAL's job), so durability is unchanged.
	wdsn := path + "?" + busy +
		"&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)&_pragma=temp_store(MEMORY)&_txlock=immediate"
	w, err := sql.Open("sqlite", wdsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open writer: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	// Open the writer first: it switches the file to WAL before any reader
	// connects.
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: journal mode is %q, not wal", path, mode)
	}

	rdsn := path + "?" + busy + "&_pragma=foreign_keys(1)&_pragma=query_only(1)"
	r, err := sql.Open("sqlite", rdsn)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open readers: %w", err)
	}
	n := min(runtime.GOMAXPROCS(0), maxReaders)
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	r.SetConnMaxLifetime(0)
	r.SetConnMaxIdleTime(0)
	if err := r.PingContext(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}

	sh := &shared{wstmts: newStmtCache(w), rstmts: newStmtCache(r), members: newMemberCache()}
	return &Store{
		queries: queries{w: poolExecer(w, sh.wstmts), r: poolExecer(r, sh.rstmts), db: w, sh: sh},
		path:    path,
		writer:  w,
		readers: r,
		sh:      sh,
	}, nil
}

// Path returns the database file path.
func (s *Store) Path() string { return s.path }

// Kind returns "sqlite".
func (s *Store) Kind() string { return "sqlite" }

// Ping runs SELECT 1 on a read connection.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.readers.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Close closes the prepared statements and both pools.
func (s *Store) Close() error {
	return errors.Join(s.sh.rstmts.close(), s.sh.wstmts.close(), s.readers.Close(), s.writer.Close())
}

// execer is what *sql.DB and *sql.Tx have in common.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// queries implements store.Queries. Outside Tx, w is the writer pool, r the
// read pool and db the writer pool (for operations of several statements);
// inside Tx, w and r are the transaction, db is nil and tc records the
// membership writes. w and r run their queries as prepared statements
// (prepared.go).
type queries struct {
	w, r execer
	db   *sql.DB
	sh   *shared
	tc   *txChanges // inside Tx only
}

// membersChanged invalidates the cached members of the channels (of every
// channel when all): at once outside Tx, where the write has committed when
// this is called, and when the transaction ends inside Tx.
func (q *queries) membersChanged(all bool, ids ...uint32) {
	if q.tc != nil {
		if all {
			q.tc.all = true
		} else {
			q.tc.ids = append(q.tc.ids, ids...)
		}
		return
	}
	q.sh.members.invalidate(all, ids...)
}

// atomic runs fn in one transaction: a new transaction on the writer, or
// inside Tx a savepoint of the enclosing transaction, so that a call that
// fails leaves no partial writes behind in either case.
func (q *queries) atomic(ctx context.Context, fn func(ex execer) error) error {
	if q.db == nil {
		if _, err := q.w.ExecContext(ctx, `SAVEPOINT commucat_call`); err != nil {
			return wrap("savepoint", err)
		}
		if err := fn(q.w); err != nil {
			_, _ = q.w.ExecContext(ctx, `ROLLBACK TO commucat_call`)
			_, _ = q.w.ExecContext(ctx, `RELEASE commucat_call`)
			return err
		}
		if _, err := q.w.ExecContext(ctx, `RELEASE commucat_call`); err != nil {
			return wrap("release savepoint", err)
		}
		return nil
	}
	tx, err := q.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	err = fn(txExecer(tx, q.sh.wstmts))
	if err != nil {
		_ = tx.Rollback()
	} else if err = tx.Commit(); err != nil {
		err = fmt.Errorf("sqlite: commit: %w", err)
	}
	q.sh.wstmts.preparePending(ctx)
	return err
}

// exec runs a write statement and returns the number of rows it changed.
func (q *queries) exec(ctx context.Context, ex execer, op, query string, args ...any) (int64, error) {
	res, err := ex.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, wrap(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, wrap(op, err)
	}
	return n, nil
}

// execOne runs a write statement that must change a row (ErrNotFound
// otherwise).
func (q *queries) execOne(ctx context.Context, op, query string, args ...any) error {
	n, err := q.exec(ctx, q.w, op, query, args...)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("sqlite: %s: %w", op, store.ErrNotFound)
	}
	return nil
}

// wrap maps driver errors to the store errors: no rows → ErrNotFound, a
// unique or primary key violation → ErrConflict (the driver error stays in
// the chain).
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("sqlite: %s: %w", op, store.ErrNotFound)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_ROWID:
			return fmt.Errorf("sqlite: %s: %w: %w", op, store.ErrConflict, err)
		}
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

// scanner is *sql.Row or *sql.Rows.
type scanner interface {
	Scan(dest ...any) error
}

// Time mapping (§9.1): INTEGER Unix microseconds, UTC.

func toMicros(t time.Time) int64 { return t.UTC().UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func toNullMicros(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: toMicros(*t), Valid: true}
}

func fromNullMicros(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMicros(v.Int64)
	return &t
}

func toNullString(s *string) sql.NullString {
	if s == nil {
		return sql.NullString{}
	}
	return sql.NullString{String: *s, Valid: true}
}

func fromNullString(v sql.NullString) *string {
	if !v.Valid {
		return nil
	}
	s := v.String
	return &s
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fixed copies a BLOB into a fixed-size array, checking its length.
func fixed(dst []byte, b []byte, column string) error {
	if len(b) != len(dst) {
		return fmt.Errorf("sqlite: column %s holds %d bytes, want %d", column, len(b), len(dst))
	}
	copy(dst, b)
	return nil
}

// placeholders returns "(?,?,…),(?,?,…)…": rows groups of cols markers.
func placeholders(rows, cols int) string {
	var b strings.Builder
	b.Grow(rows * (2*cols + 2))
	for i := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		for j := range cols {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteByte('?')
		}
		b.WriteByte(')')
	}
	return b.String()
}

// list returns "?,?,…" with n markers.
func list(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?,", n-1) + "?"
}
