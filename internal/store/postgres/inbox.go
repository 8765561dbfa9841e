package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/commucat/commucat/internal/store"
)

// Table relay_queue (the inbox, §6.7).

// Chunks of one INSERT: at most inboxChunkRows entries and (beyond the
// first entry) inboxChunkBytes of payload, far below PostgreSQL's 1 GiB
// message limit.
const (
	inboxChunkRows  = 2000
	inboxChunkBytes = 64 << 20
)

const inboxColumns = `queue_id, envelope_id, recipient_device, sender_device, channel_id, frame_type, payload, created_at, expires_at`

// insertInbox inserts the rows of eight parallel arrays, in array order.
const insertInbox = `INSERT INTO relay_queue
	(envelope_id, recipient_device, sender_device, channel_id, frame_type, payload, created_at, expires_at)
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bytea[], $7::timestamptz[], $8::timestamptz[])
	RETURNING queue_id, envelope_id`

const enqueueSavepoint = `commucat_enqueue`

// EnqueueInbox inserts the entries with one multi-row INSERT … SELECT FROM
// unnest(…) RETURNING per chunk, all sent in one pgx batch (one round trip):
// outside Tx the batch is its own implicit transaction; inside Tx it runs
// under a savepoint, so a failure (duplicate envelope id → ErrConflict,
// unknown recipient) undoes every entry of the call and leaves the
// transaction usable. The batch starts with the enqueue advisory lock (see
// the package documentation), so queue ids, drawn from the identity
// sequence in array order, commit in increasing order. RETURNING rows are
// matched to the entries by envelope id.
func (q *queries) EnqueueInbox(ctx context.Context, entries []store.InboxEntry) ([]int64, error) {
	if len(entries) == 0 {
		return []int64{}, nil
	}
	b := &pgx.Batch{}
	inTx := q.inTx()
	if inTx {
		b.Queue(`SAVEPOINT ` + enqueueSavepoint)
	}
	b.Queue(`SELECT pg_advisory_xact_lock($1)`, enqueueLockKey)
	var chunks [][]store.InboxEntry
	for rest := entries; len(rest) > 0; {
		n, size := 0, 0
		for n < len(rest) && n < inboxChunkRows && (n == 0 || size+len(rest[n].Payload) <= inboxChunkBytes) {
			size += len(rest[n].Payload)
			n++
		}
		chunk := rest[:n]
		chunks = append(chunks, chunk)
		b.Queue(insertInbox, inboxArrays(chunk)...)
		rest = rest[n:]
	}
	if inTx {
		b.Queue(`RELEASE SAVEPOINT ` + enqueueSavepoint)
	}

	ids, err := runEnqueue(ctx, q.db.SendBatch(ctx, b), inTx, chunks, len(entries))
	if err != nil && inTx {
		// Undo the call and make the transaction usable again. If this
		// fails too (the connection is gone), the Tx fails at commit.
		_, _ = q.db.Exec(ctx, `ROLLBACK TO SAVEPOINT `+enqueueSavepoint+`; RELEASE SAVEPOINT `+enqueueSavepoint)
	}
	if err != nil {
		return nil, wrap("enqueue inbox", err)
	}
	return ids, nil
}

// inboxArrays returns the eight array arguments of insertInbox.
func inboxArrays(chunk []store.InboxEntry) []any {
	var (
		envs       = make([]string, len(chunk))
		recipients = make([]string, len(chunk))
		senders    = make([]string, len(chunk))
		channels   = make([]int64, len(chunk))
		types      = make([]int64, len(chunk))
		payloads   = make([][]byte, len(chunk))
		created    = make([]time.Time, len(chunk))
		expires    = make([]time.Time, len(chunk))
	)
	for i := range chunk {
		e := &chunk[i]
		envs[i], recipients[i], senders[i] = e.EnvelopeID, e.Recipient, e.Sender
		channels[i], types[i] = int64(e.Channel), int64(e.FrameType)
		payloads[i] = e.Payload
		if payloads[i] == nil {
			payloads[i] = []byte{} // NOT NULL: nil would bind NULL
		}
		created[i], expires[i] = e.CreatedAt, e.ExpiresAt
	}
	return []any{envs, recipients, senders, channels, types, payloads, created, expires}
}

// runEnqueue reads the results of EnqueueInbox's batch and closes it.
func runEnqueue(ctx context.Context, br pgx.BatchResults, inTx bool, chunks [][]store.InboxEntry, total int) (ids []int64, err error) {
	defer func() {
		if cerr := br.Close(); err == nil {
			err = cerr
		}
	}()
	if inTx {
		if _, err := br.Exec(); err != nil {
			return nil, err
		}
	}
	if _, err := br.Exec(); err != nil { // the lock
		return nil, err
	}
	ids = make([]int64, 0, total)
	for _, chunk := range chunks {
		rows, err := br.Query()
		if err != nil {
			return nil, err
		}
		start := len(ids)
		var envs []string
		for rows.Next() {
			var (
				id  int64
				env string
			)
			if err := rows.Scan(&id, &env); err != nil {
				rows.Close()
				return nil, err
			}
			ids = append(ids, id)
			envs = append(envs, env)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		if err := matchReturning(chunk, ids[start:], envs); err != nil {
			return nil, err
		}
	}
	if inTx {
		if _, err := br.Exec(); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// matchReturning puts the RETURNING ids of one chunk in entry order: ids[i]
// belongs to envelope envs[i]. RETURNING follows insertion order in
// practice, which is checked first.
func matchReturning(chunk []store.InboxEntry, ids []int64, envs []string) error {
	if len(ids) != len(chunk) {
		return errShortReturning
	}
	inOrder := true
	for i := range chunk {
		if envs[i] != chunk[i].EnvelopeID {
			inOrder = false
			break
		}
	}
	if inOrder {
		return nil
	}
	byEnv := make(map[string]int64, len(ids))
	for i, env := range envs {
		byEnv[env] = ids[i]
	}
	for i := range chunk {
		id, ok := byEnv[chunk[i].EnvelopeID]
		if !ok {
			return errShortReturning
		}
		ids[i] = id
	}
	return nil
}

var errShortReturning = errors.New("RETURNING does not match the rows inserted")

// ListInbox returns every matching entry when limit <= 0.
func (q *queries) ListInbox(ctx context.Context, recipient string, after int64, now time.Time, limit int) ([]store.InboxEntry, error) {
	var lim any // NULL: no limit
	if limit > 0 {
		lim = int64(limit)
	}
	rows, err := q.db.Query(ctx,
		`SELECT `+inboxColumns+` FROM relay_queue
		WHERE recipient_device = $1 AND queue_id > $2 AND expires_at > $3
		ORDER BY queue_id
		LIMIT $4::bigint`, recipient, after, now, lim)
	if err != nil {
		return nil, wrap("list inbox", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.InboxEntry, error) {
		var (
			e                  store.InboxEntry
			channel, frameType int64
		)
		if err := r.Scan(&e.QueueID, &e.EnvelopeID, &e.Recipient, &e.Sender, &channel, &frameType,
			&e.Payload, &e.CreatedAt, &e.ExpiresAt); err != nil {
			return e, err
		}
		if e.Payload == nil {
			e.Payload = []byte{}
		}
		e.Channel, e.FrameType = uint32(channel), uint8(frameType)
		e.CreatedAt, e.ExpiresAt = utc(e.CreatedAt), utc(e.ExpiresAt)
		return e, nil
	})
	if err != nil {
		return nil, wrap("list inbox", err)
	}
	return out, nil
}

func (q *queries) DeleteInbox(ctx context.Context, recipient string, queueIDs []int64) error {
	if len(queueIDs) == 0 {
		return nil
	}
	_, err := exec(ctx, q.db, "delete inbox",
		`DELETE FROM relay_queue WHERE recipient_device = $1 AND queue_id = ANY ($2::bigint[])`, recipient, queueIDs)
	return err
}

func (q *queries) DeleteInboxOf(ctx context.Context, recipient string) error {
	_, err := exec(ctx, q.db, "delete inbox of", `DELETE FROM relay_queue WHERE recipient_device = $1`, recipient)
	return err
}

func (q *queries) PurgeExpiredInbox(ctx context.Context, now time.Time) (int64, error) {
	n, err := exec(ctx, q.db, "purge expired inbox", `DELETE FROM relay_queue WHERE expires_at <= $1`, now)
	if err != nil {
		return n, err
	}
	// Fold the usage deltas (0002_inbox_usage.sql) into one row per
	// device. Rows inserted meanwhile are not in the statement's snapshot
	// and stay; a concurrent fold on another node waits for this one's
	// row locks and then skips the rows it deleted.
	_, err = exec(ctx, q.db, "fold inbox usage", `WITH folded AS (
			DELETE FROM inbox_usage WHERE recipient_device IN
				(SELECT recipient_device FROM inbox_usage GROUP BY recipient_device HAVING count(*) > 1)
			RETURNING *)
		INSERT INTO inbox_usage (recipient_device, entries, bytes)
		SELECT recipient_device, sum(entries), sum(bytes) FROM folded GROUP BY recipient_device
		HAVING sum(entries) <> 0 OR sum(bytes) <> 0`)
	return n, err
}

func (q *queries) InboxUsage(ctx context.Context, recipients []string) (map[string]store.InboxUsage, error) {
	out := make(map[string]store.InboxUsage, len(recipients))
	if len(recipients) == 0 {
		return out, nil
	}
	rows, err := q.db.Query(ctx,
		`SELECT recipient_device, sum(entries)::bigint, sum(bytes)::bigint FROM inbox_usage
		WHERE recipient_device = ANY ($1::text[]) GROUP BY recipient_device`, recipients)
	if err != nil {
		return nil, wrap("inbox usage", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r string
		var u store.InboxUsage
		if err := rows.Scan(&r, &u.Entries, &u.Bytes); err != nil {
			return nil, wrap("inbox usage", err)
		}
		out[r] = u
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("inbox usage", err)
	}
	return out, nil
}

func (q *queries) InboxStats(ctx context.Context) (count int64, oldest time.Time, err error) {
	var created *time.Time
	err = q.db.QueryRow(ctx, `SELECT count(*), min(created_at) FROM relay_queue`).Scan(&count, &created)
	if err != nil {
		return 0, time.Time{}, wrap("inbox stats", err)
	}
	if count == 0 || created == nil {
		return 0, time.Time{}, nil
	}
	return count, utc(*created), nil
}
