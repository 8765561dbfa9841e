package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"time"

	"github.com/commucat/commucat/internal/store"
)

// Table relay_queue (the inbox, §6.7).

// inboxChunk bounds the rows of one multi-row insert. Each chunk size
// 1…inboxChunk is a distinct statement text, kept prepared (prepared.go),
// so the bound also bounds the cached statements; a group commit of the
// router's Writer is mostly far smaller.
const inboxChunk = 64

// idChunk bounds the ids of one DELETE … IN (…) (prepared likewise).
const idChunk = 64

const inboxColumns = `queue_id, envelope_id, recipient_device, sender_device, channel_id, frame_type, payload, created_at, expires_at`

const insertInbox = `INSERT INTO relay_queue
	(envelope_id, recipient_device, sender_device, channel_id, frame_type, payload, created_at, expires_at)
	VALUES `

// EnqueueInbox inserts the entries with one multi-row INSERT … RETURNING
// per chunk of inboxChunk entries, all in one transaction (a single chunk
// is one statement, atomic by itself). The queue ids come from
// AUTOINCREMENT, so they are assigned in VALUES order and never reused;
// RETURNING emits rows in no promised order, hence the sort.
func (q *queries) EnqueueInbox(ctx context.Context, entries []store.InboxEntry) ([]int64, error) {
	if len(entries) == 0 {
		return []int64{}, nil
	}
	ids := make([]int64, 0, len(entries))
	args := make([]any, 0, 8*min(len(entries), inboxChunk))
	insert := func(ex execer) error {
		for rest := entries; len(rest) > 0; {
			n := min(len(rest), inboxChunk)
			args = args[:0]
			for i := range rest[:n] {
				e := &rest[i]
				payload := e.Payload
				if payload == nil {
					payload = []byte{} // NOT NULL: nil would bind NULL
				}
				args = append(args, e.EnvelopeID, e.Recipient, e.Sender, int64(e.Channel), int64(e.FrameType),
					payload, toMicros(e.CreatedAt), toMicros(e.ExpiresAt))
			}
			rows, err := ex.QueryContext(ctx, insertInboxSQL(n), args...)
			if err != nil {
				return wrap("enqueue inbox", err)
			}
			start := len(ids)
			for rows.Next() {
				var id int64
				if err := rows.Scan(&id); err != nil {
					rows.Close()
					return wrap("enqueue inbox", err)
				}
				ids = append(ids, id)
			}
			if err := rows.Close(); err != nil {
				return wrap("enqueue inbox", err)
			}
			if err := rows.Err(); err != nil {
				return wrap("enqueue inbox", err)
			}
			if got := len(ids) - start; got != n {
				return wrap("enqueue inbox", errShortReturning)
			}
			slices.Sort(ids[start:])
			rest = rest[n:]
		}
		return nil
	}
	var err error
	if len(entries) <= inboxChunk {
		err = insert(q.w)
	} else {
		err = q.atomic(ctx, insert)
	}
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// insertInboxTexts and deleteInboxTexts hold the statement texts by chunk
// size (index n-1), built once.
var (
	insertInboxTexts = func() (t [inboxChunk]string) {
		for i := range t {
			t[i] = insertInbox + placeholders(i+1, 8) + ` RETURNING queue_id`
		}
		return t
	}()
	deleteInboxTexts = func() (t [idChunk]string) {
		for i := range t {
			t[i] = `DELETE FROM relay_queue WHERE recipient_device = ? AND queue_id IN (` + list(i+1) + `)`
		}
		return t
	}()
)

func insertInboxSQL(n int) string { return insertInboxTexts[n-1] }

func deleteInboxSQL(n int) string { return deleteInboxTexts[n-1] }

// ListInbox returns every matching entry when limit <= 0.
func (q *queries) ListInbox(ctx context.Context, recipient string, after int64, now time.Time, limit int) ([]store.InboxEntry, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := q.r.QueryContext(ctx,
		`SELECT `+inboxColumns+` FROM relay_queue
		WHERE recipient_device = ? AND queue_id > ? AND expires_at > ?
		ORDER BY queue_id
		LIMIT ?`, recipient, after, toMicros(now), limit)
	if err != nil {
		return nil, wrap("list inbox", err)
	}
	defer rows.Close()
	var out []store.InboxEntry
	for rows.Next() {
		var (
			e                store.InboxEntry
			channel          int64
			frameType        int64
			created, expires int64
		)
		if err := rows.Scan(&e.QueueID, &e.EnvelopeID, &e.Recipient, &e.Sender, &channel, &frameType,
			&e.Payload, &created, &expires); err != nil {
			return nil, wrap("list inbox", err)
		}
		if e.Payload == nil {
			e.Payload = []byte{}
		}
		e.Channel = uint32(channel)
		e.FrameType = uint8(frameType)
		e.CreatedAt = fromMicros(created)
		e.ExpiresAt = fromMicros(expires)
		out = append(out, e)
	}
	return out, wrap("list inbox", rows.Err())
}

// DeleteInbox runs one DELETE … IN (…) per chunk of idChunk ids, in one
// transaction when there are several.
func (q *queries) DeleteInbox(ctx context.Context, recipient string, queueIDs []int64) error {
	if len(queueIDs) == 0 {
		return nil
	}
	args := make([]any, 0, 1+min(len(queueIDs), idChunk))
	del := func(ex execer) error {
		for rest := queueIDs; len(rest) > 0; {
			n := min(len(rest), idChunk)
			args = append(args[:0], recipient)
			for _, id := range rest[:n] {
				args = append(args, id)
			}
			if _, err := q.exec(ctx, ex, "delete inbox", deleteInboxSQL(n), args...); err != nil {
				return err
			}
			rest = rest[n:]
		}
		return nil
	}
	if len(queueIDs) <= idChunk {
		return del(q.w)
	}
	return q.atomic(ctx, del)
}

func (q *queries) DeleteInboxOf(ctx context.Context, recipient string) error {
	_, err := q.exec(ctx, q.w, "delete inbox of",
		`DELETE FROM relay_queue WHERE recipient_device = ?`, recipient)
	return err
}

func (q *queries) PurgeExpiredInbox(ctx context.Context, now time.Time) (int64, error) {
	return q.exec(ctx, q.w, "purge expired inbox",
		`DELETE FROM relay_queue WHERE expires_at <= ?`, toMicros(now))
}

func (q *queries) InboxUsage(ctx context.Context, recipients []string) (map[string]store.InboxUsage, error) {
	out := make(map[string]store.InboxUsage, len(recipients))
	args := make([]any, 0, min(len(recipients), idChunk))
	for rest := recipients; len(rest) > 0; {
		n := min(len(rest), idChunk)
		args = args[:0]
		for _, r := range rest[:n] {
			args = append(args, r)
		}
		rest = rest[n:]
		rows, err := q.r.QueryContext(ctx,
			`SELECT recipient_device, entries, bytes FROM inbox_usage WHERE recipient_device IN (`+list(n)+`)`, args...)
		if err != nil {
			return nil, wrap("inbox usage", err)
		}
		for rows.Next() {
			var r string
			var u store.InboxUsage
			if err := rows.Scan(&r, &u.Entries, &u.Bytes); err != nil {
				rows.Close()
				return nil, wrap("inbox usage", err)
			}
			out[r] = u
		}
		if err := rows.Close(); err != nil {
			return nil, wrap("inbox usage", err)
		}
		if err := rows.Err(); err != nil {
			return nil, wrap("inbox usage", err)
		}
	}
	return out, nil
}

func (q *queries) InboxStats(ctx context.Context) (count int64, oldest time.Time, err error) {
	var created sql.NullInt64
	err = q.r.QueryRowContext(ctx, `SELECT count(*), min(created_at) FROM relay_queue`).Scan(&count, &created)
	if err != nil {
		return 0, time.Time{}, wrap("inbox stats", err)
	}
	if count == 0 || !created.Valid {
		return 0, time.Time{}, nil
	}
	return count, fromMicros(created.Int64), nil
}

var errShortReturning = errors.New("RETURNING gave fewer ids than rows inserted")
