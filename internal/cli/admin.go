package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/server"
	"github.com/commucat/commucat/internal/store"
)

// loadConfig loads the configuration named by --config, COMMUCAT_CONFIG or
// ./commucat.toml (§10.1).
func (e *Env) loadConfig() (*config.Config, error) {
	path, explicit := config.Resolve(e.ConfigPath, os.LookupEnv)
	return config.Load(path, explicit, os.LookupEnv)
}

// openStore opens the configured storage.
func (e *Env) openStore(ctx context.Context) (interface {
	store.Store
	store.Migrator
}, *config.Config, error) {
	cfg, err := e.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	st, err := server.OpenStore(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return st, cfg, nil
}

// openMigrated is openStore followed by the pending migrations, as the
// commands that write (register-user, rotate-keys, rotate-noise) need.
func (e *Env) openMigrated(ctx context.Context) (interface {
	store.Store
	store.Migrator
}, *config.Config, error) {
	st, cfg, err := e.openStore(ctx)
	if err != nil {
		return nil, nil, err
	}
	if _, _, err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, nil, err
	}
	return st, cfg, nil
}

// runMigrate applies pending migrations (§12.2 migrate).
func runMigrate(env *Env, args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(env.Stderr, "usage: commucat-cli migrate")
		return ExitUsage
	}
	ctx := context.Background()
	st, _, err := env.openStore(ctx)
	if err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	defer st.Close()
	applied, version, err := st.Migrate(ctx)
	if err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	fmt.Fprintf(env.Stdout, "migrations_applied=%d\nschema_version=%d\n", applied, version)
	return ExitOK
}

// runRegisterUser creates a user (§12.2 register-user).
func runRegisterUser(env *Env, args []string) int {
	if len(args) < 1 || len(args) > 3 {
		fmt.Fprintln(env.Stderr, "usage: commucat-cli register-user <handle> [display_name] [avatar_url]")
		return ExitUsage
	}
	handle := args[0]
	if !noiseconn.ValidHandle(handle) {
		env.errorf("invalid handle %q: 1-64 characters without control characters", handle)
		return ExitFail
	}
	ctx := context.Background()
	st, _, err := env.openMigrated(ctx)
	if err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	defer st.Close()
	var id [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	now := time.Now().UTC()
	u := store.User{ID: hex.EncodeToString(id[:]), Handle: handle, CreatedAt: now, UpdatedAt: now}
	if len(args) > 1 {
		u.DisplayName = &args[1]
	}
	if len(args) > 2 {
		u.AvatarURL = &args[2]
	}
	if err := st.CreateUser(ctx, u); err != nil {
		if errors.Is(err, store.ErrConflict) {
			env.errorf("handle %q is already taken", handle)
			return ExitFail
		}
		env.errorf("%v", err)
		return ExitFail
	}
	fmt.Fprintf(env.Stdout, "user_id=%s\nhandle=%s\n", u.ID, u.Handle)
	if u.DisplayName != nil {
		fmt.Fprintf(env.Stdout, "display_name=%s\n", *u.DisplayName)
	}
	if u.AvatarURL != nil {
		fmt.Fprintf(env.Stdout, "avatar_url=%s\n", *u.AvatarURL)
	}
	return ExitOK
}
