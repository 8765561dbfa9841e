package testenv

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
)

// fakeTB records Skip and Fatal and, like testing.T, ends the goroutine.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// call runs get with a fake TB on its own goroutine.
func call(t *testing.T, get func(testing.TB) string) (*fakeTB, string) {
	f := &fakeTB{TB: t}
	var got string
	done := make(chan struct{})
	go func() {
		defer close(done)
		got = get(f)
	}()
	<-done
	return f, got
}

func TestUnavailable(t *testing.T) {
	for _, c := range []struct {
		name    string
		get     func(testing.TB) string
		env     string
		value   string
		service string
	}{
		{"postgres unset", PostgresDSN, PostgresEnv, "", "PostgreSQL"},
		{"postgres unreachable", PostgresDSN, PostgresEnv, "postgres://nobody@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", "PostgreSQL"},
		{"postgres invalid", PostgresDSN, PostgresEnv, "postgres://[::1", "PostgreSQL"},
		{"redis unset", RedisURL, RedisEnv, "", "Redis"},
		{"redis unreachable", RedisURL, RedisEnv, "redis://127.0.0.1:1/0", "Redis"},
		{"redis invalid", RedisURL, RedisEnv, "http://example.com", "Redis"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(c.env, c.value)

			t.Setenv(CIEnv, "")
			f, _ := call(t, c.get)
			if !f.skipped || f.failed {
				t.Errorf("without CI: skipped %v, failed %v (%s); want a skip", f.skipped, f.failed, f.msg)
			}

			for _, ci := range []string{"true", "1"} {
				t.Setenv(CIEnv, ci)
				f, _ = call(t, c.get)
				if !f.failed || f.skipped {
					t.Errorf("CI=%s: skipped %v, failed %v (%s); want a failure", ci, f.skipped, f.failed, f.msg)
				}
				if !strings.Contains(f.msg, c.service+" is required under CI") {
					t.Errorf("CI=%s: message %q does not say %s is required under CI", ci, f.msg, c.service)
				}
			}

			t.Setenv(CIEnv, "false")
			if f, _ = call(t, c.get); !f.skipped {
				t.Errorf("CI=false: %s; want a skip", f.msg)
			}
		})
	}
}

// TestAvailable checks the happy path of each helper whose variable is set
// (packages that need a service enforce the CI rule themselves).
func TestAvailable(t *testing.T) {
	for _, c := range []struct {
		name, env string
		get       func(testing.TB) string
	}{
		{"postgres", PostgresEnv, PostgresDSN},
		{"redis", RedisEnv, RedisURL},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := os.Getenv(c.env)
			if want == "" {
				t.Skip(c.env + " is not set")
			}
			if got := c.get(t); got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}
