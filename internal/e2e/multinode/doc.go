// Package multinode holds end-to-end tests and benchmarks of a CommuCat
// cluster: the real commucat-server binary, built once per test run, runs
// as two (or more) processes on 127.0.0.1 that share one PostgreSQL
// database and one Redis (spec §9.4), and devices talk to them with the Go
// SDK (package client) over real TLS, protocol version 2.
//
// The tests need COMMUCAT_TEST_PG_DSN and COMMUCAT_TEST_REDIS_URL (see
// internal/testenv). Each test creates its own database and Redis key
// prefix and kills every process it started.
//
//	go test -race ./internal/e2e/multinode/
//	go test -run '^$' -bench . ./internal/e2e/multinode/
//
// Knobs: COMMUCAT_MN_VERBOSE=1 prints the servers' stderr even when a test
// passes; COMMUCAT_MN_LOG_LEVEL sets their log.level (default info);
// COMMUCAT_MN_RACE=1 builds the server binary with -race.
package multinode
