// Package testenv tells tests how to reach the external services some of
// them need, with one rule for all: a service that is not configured or
// not reachable skips the test, except under CI (environment CI=true),
// where it fails it, so a CI run can never pass by skipping silently.
//
//	dsn := testenv.PostgresDSN(t) // COMMUCAT_TEST_PG_DSN
//	url := testenv.RedisURL(t)    // COMMUCAT_TEST_REDIS_URL
package testenv

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"
)

// Environment variables.
const (
	// PostgresEnv holds a PostgreSQL DSN whose user may create and drop
	// databases, e.g.
	// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable.
	PostgresEnv = "COMMUCAT_TEST_PG_DSN"
	// RedisEnv holds a Redis URL, e.g. redis://127.0.0.1:6379/0.
	RedisEnv = "COMMUCAT_TEST_REDIS_URL"
	// CIEnv set to true (any strconv.ParseBool truth) makes a missing
	// service a failure.
	CIEnv = "CI"
)

// probeTimeout bounds the reachability check of a service.
const probeTimeout = 5 * time.Second

// CI reports whether the tests run under CI (CI=true).
func CI() bool {
	ok, _ := strconv.ParseBool(os.Getenv(CIEnv))
	return ok
}

// PostgresDSN returns the DSN of COMMUCAT_TEST_PG_DSN after checking that
// the server answers. Unset or unreachable: the test is skipped, or under
// CI=true fails.
func PostgresDSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv(PostgresEnv)
	if dsn == "" {
		unavailable(tb, "PostgreSQL", PostgresEnv+" is not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err == nil {
		err = conn.Ping(ctx)
		_ = conn.Close(ctx)
	}
	if err != nil {
		unavailable(tb, "PostgreSQL", fmt.Sprintf("PostgreSQL at %s is unreachable: %v", PostgresEnv, err))
	}
	return dsn
}

// RedisURL returns the URL of COMMUCAT_TEST_REDIS_URL after checking that
// the server answers PING. Unset or unreachable: the test is skipped, or
// under CI=true fails.
func RedisURL(tb testing.TB) string {
	tb.Helper()
	url := os.Getenv(RedisEnv)
	if url == "" {
		unavailable(tb, "Redis", RedisEnv+" is not set")
	}
	opts, err := goredis.ParseURL(url)
	if err != nil {
		unavailable(tb, "Redis", fmt.Sprintf("%s is not a Redis URL: %v", RedisEnv, err))
	}
	opts.DialTimeout = probeTimeout
	opts.MaxRetries = -1 // one attempt
	opts.DialerRetries = 1
	rdb := goredis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	err = rdb.Ping(ctx).Err()
	_ = rdb.Close()
	if err != nil {
		unavailable(tb, "Redis", fmt.Sprintf("Redis at %s is unreachable: %v", RedisEnv, err))
	}
	return url
}

// unavailable skips the test, or fails it under CI. It does not return.
func unavailable(tb testing.TB, service, reason string) {
	tb.Helper()
	if CI() {
		tb.Fatalf("%s; %s is required under CI=true", reason, service)
	}
	tb.Skip(reason + " (set it to run this test; under CI=true this is a failure)")
}
