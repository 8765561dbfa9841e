package sqlite

import (
	"context"
	"database/sql"
	"sync"
)

// Prepared statements.
//
// The driver (modernc.org/sqlite) keeps the compiled SQLite statement of a
// single-statement database/sql Stmt and only resets it between runs, so a
// cached *sql.Stmt saves the SQL parse (sqlite3Prepare) of every call; the
// relay profile showed parsing at ~10 % of the server's CPU.
//
// Every execer a queries value uses is a *pex, which runs each query text
// through a per-pool cache of *sql.Stmt (database/sql prepares a Stmt lazily
// on each connection of its pool and remembers it there). Query texts that
// vary without bound (multi-row inserts of any size) must bypass the cache:
// pass unprepared(ex) instead of ex.
//
// The writer pool has one connection. While a transaction holds it,
// preparing a new statement on the pool would wait for that very
// connection, so a statement first seen inside a transaction runs
// unprepared there and is prepared on the pool after the transaction ends
// (preparePending).

// maxStmts bounds the statements cached per pool; beyond it queries run
// unprepared. The package has fewer distinct fixed texts than that, plus the
// inbox chunk variants (≤ inboxChunk + idChunk).
const maxStmts = 512

// maxStmtText bounds the length of a cached query text.
const maxStmtText = 16 << 10

// stmtCache caches the prepared statements of one pool by query text.
type stmtCache struct {
	db      *sql.DB
	mu      sync.Mutex
	m       map[string]*sql.Stmt
	pending map[string]struct{} // seen inside a transaction, to prepare
	closed  bool
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, m: make(map[string]*sql.Stmt), pending: make(map[string]struct{})}
}

// lookup returns the cached statement or nil; a missing statement is
// recorded for preparePending when it is cacheable.
func (c *stmtCache) lookup(query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[query]; ok {
		return st
	}
	if !c.closed && len(query) <= maxStmtText && len(c.m)+len(c.pending) < maxStmts {
		c.pending[query] = struct{}{}
	}
	return nil
}

// get returns the cached statement, preparing it on the pool when missing.
// The caller must not hold a connection of the pool (see above). It
// returns nil (run unprepared) when the cache is full or closed, or when
// the prepare fails (the unprepared run then reports the error).
func (c *stmtCache) get(ctx context.Context, query string) *sql.Stmt {
	c.mu.Lock()
	st, ok := c.m[query]
	full := c.closed || len(query) > maxStmtText || len(c.m) >= maxStmts
	c.mu.Unlock()
	if ok {
		return st
	}
	if full {
		return nil
	}
	return c.prepare(ctx, query)
}

func (c *stmtCache) prepare(ctx context.Context, query string) *sql.Stmt {
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, query)
	if c.closed || len(c.m) >= maxStmts {
		st.Close()
		return nil
	}
	if old, ok := c.m[query]; ok {
		// Prepared concurrently by another caller.
		st.Close()
		return old
	}
	c.m[query] = st
	return st
}

// preparePending prepares the statements first seen inside a transaction.
// Call it only when the caller holds no connection of the pool.
func (c *stmtCache) preparePending(ctx context.Context) {
	c.mu.Lock()
	if len(c.pending) == 0 || c.closed {
		c.mu.Unlock()
		return
	}
	queries := make([]string, 0, len(c.pending))
	for q := range c.pending {
		queries = append(queries, q)
	}
	clear(c.pending)
	c.mu.Unlock()
	for _, q := range queries {
		if ctx.Err() != nil {
			return
		}
		c.prepare(ctx, q)
	}
}

// close closes every cached statement; later calls run unprepared.
func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var first error
	for q, st := range c.m {
		if err := st.Close(); err != nil && first == nil {
			first = err
		}
		delete(c.m, q)
	}
	clear(c.pending)
	return first
}

// pex is an execer that runs queries through prepared statements: on a
// pool (tx nil) or inside a transaction of the writer pool.
type pex struct {
	db *sql.DB // the pool, nil inside a transaction
	tx *sql.Tx // the transaction, nil on a pool
	c  *stmtCache
}

func poolExecer(db *sql.DB, c *stmtCache) *pex { return &pex{db: db, c: c} }

func txExecer(tx *sql.Tx, c *stmtCache) *pex { return &pex{tx: tx, c: c} }

// raw is the underlying *sql.DB or *sql.Tx.
func (p *pex) raw() execer {
	if p.tx != nil {
		return p.tx
	}
	return p.db
}

// stmt returns the statement to run query with, or nil to run it
// unprepared.
func (p *pex) stmt(ctx context.Context, query string) *sql.Stmt {
	if p.tx != nil {
		st := p.c.lookup(query)
		if st == nil {
			return nil
		}
		return p.tx.StmtContext(ctx, st)
	}
	return p.c.get(ctx, query)
}

func (p *pex) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := p.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return p.raw().ExecContext(ctx, query, args...)
}

func (p *pex) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return p.raw().QueryContext(ctx, query, args...)
}

func (p *pex) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return p.raw().QueryRowContext(ctx, query, args...)
}

// unprepared returns ex without the statement cache, for query texts that
// vary without bound or run once (migrations).
func unprepared(ex execer) execer {
	if p, ok := ex.(*pex); ok {
		return p.raw()
	}
	return ex
}
