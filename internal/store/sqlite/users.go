package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/commucat/commucat/internal/store"
)

// Table users.

const userColumns = `user_id, handle, display_name, avatar_url, created_at, updated_at`

func scanUser(sc scanner) (store.User, error) {
	var (
		u                store.User
		name, avatar     sql.NullString
		created, updated int64
	)
	if err := sc.Scan(&u.ID, &u.Handle, &name, &avatar, &created, &updated); err != nil {
		return store.User{}, err
	}
	u.DisplayName = fromNullString(name)
	u.AvatarURL = fromNullString(avatar)
	u.CreatedAt = fromMicros(created)
	u.UpdatedAt = fromMicros(updated)
	return u, nil
}

func (q *queries) CreateUser(ctx context.Context, u store.User) error {
	_, err := q.exec(ctx, q.w, "create user",
		`INSERT INTO users (`+userColumns+`) VALUES (?, ?, ?, ?, ?, ?)`,
		u.ID, u.Handle, toNullString(u.DisplayName), toNullString(u.AvatarURL),
		toMicros(u.CreatedAt), toMicros(u.UpdatedAt))
	return err
}

func (q *queries) GetUser(ctx context.Context, id string) (store.User, error) {
	u, err := scanUser(q.r.QueryRowContext(ctx,
		`SELECT `+userColumns+` FROM users WHERE user_id = ?`, id))
	return u, wrap("get user", err)
}

func (q *queries) GetUserByHandle(ctx context.Context, handle string) (store.User, error) {
	u, err := scanUser(q.r.QueryRowContext(ctx,
		`SELECT `+userColumns+` FROM users WHERE handle = ?`, handle))
	return u, wrap("get user by handle", err)
}

func (q *queries) UpdateUserProfile(ctx context.Context, id string, displayName, avatarURL *string, now time.Time) error {
	return q.execOne(ctx, "update user profile",
		`UPDATE users SET
			display_name = coalesce(?, display_name),
			avatar_url = coalesce(?, avatar_url),
			updated_at = ?
		WHERE user_id = ?`,
		toNullString(displayName), toNullString(avatarURL), toMicros(now), id)
}

func (q *queries) CountUsers(ctx context.Context) (int, error) {
	var n int
	err := q.r.QueryRowContext(ctx, `SELECT count(*) FROM users`).Scan(&n)
	return n, wrap("count users", err)
}
