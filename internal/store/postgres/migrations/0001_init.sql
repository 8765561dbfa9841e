-- CommuCat schema version 1 (PostgreSQL): every table of spec §9.2, the
-- same logical schema as the SQLite migration of the same version.
-- Times are TIMESTAMPTZ (microseconds), bools BOOLEAN, bytes BYTEA, ints
-- BIGINT. Every text column is COLLATE "C": sorted results are in byte
-- order, as on SQLite, whatever the database's default collation.
-- Foreign keys cascade on delete unless noted.

CREATE TABLE users (
    user_id      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    handle       TEXT COLLATE "C" NOT NULL UNIQUE,
    display_name TEXT COLLATE "C",
    avatar_url   TEXT COLLATE "C",
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE devices (
    device_id   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    user_id     TEXT COLLATE "C" NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    public_key  BYTEA       NOT NULL CHECK (octet_length(public_key) = 32),
    status      TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'revoked', 'diagnostic')),
    device_name TEXT COLLATE "C",
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX devices_user_created ON devices (user_id, created_at);

CREATE TABLE sessions (
    session_id     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    user_id        TEXT COLLATE "C" NOT NULL,
    device_id      TEXT COLLATE "C" NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    node_id        TEXT COLLATE "C" NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    last_active_at TIMESTAMPTZ NOT NULL,
    closed_at      TIMESTAMPTZ
);
CREATE INDEX sessions_device ON sessions (device_id);
CREATE INDEX sessions_closed ON sessions (closed_at);

-- queue_id comes from an identity sequence: assigned in insertion order,
-- never reused.
CREATE TABLE relay_queue (
    queue_id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    envelope_id      TEXT COLLATE "C" NOT NULL UNIQUE,
    recipient_device TEXT COLLATE "C" NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    sender_device    TEXT COLLATE "C" NOT NULL,
    channel_id       BIGINT      NOT NULL,
    frame_type       BIGINT      NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL,
    payload          BYTEA       NOT NULL
);
CREATE INDEX relay_queue_recipient ON relay_queue (recipient_device, queue_id);
CREATE INDEX relay_queue_expires ON relay_queue (expires_at);

CREATE TABLE groups (
    group_id     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    owner_device TEXT COLLATE "C" NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE group_members (
    group_id  TEXT COLLATE "C" NOT NULL REFERENCES groups (group_id) ON DELETE CASCADE,
    device_id TEXT COLLATE "C" NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    role      TEXT COLLATE "C" NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_id, device_id)
);
CREATE INDEX group_members_device ON group_members (device_id);

CREATE TABLE channels (
    channel_id BIGINT      NOT NULL PRIMARY KEY CHECK (channel_id BETWEEN 0 AND 4294967295),
    group_id   TEXT COLLATE "C" REFERENCES groups (group_id) ON DELETE SET NULL,
    relay      BOOLEAN     NOT NULL DEFAULT false,
    created_by TEXT COLLATE "C" NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX channels_group ON channels (group_id);

-- member is a local device id or a remote device@domain: not a foreign key.
CREATE TABLE channel_members (
    channel_id BIGINT      NOT NULL REFERENCES channels (channel_id) ON DELETE CASCADE,
    member     TEXT COLLATE "C" NOT NULL,
    joined_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (channel_id, member)
);
CREATE INDEX channel_members_member ON channel_members (member);

CREATE TABLE pairing_codes (
    pair_code          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    user_id            TEXT COLLATE "C" NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    issuer_device_id   TEXT COLLATE "C" NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    issued_at          TIMESTAMPTZ NOT NULL,
    expires_at         TIMESTAMPTZ NOT NULL,
    redeemed_at        TIMESTAMPTZ,
    redeemed_device_id TEXT COLLATE "C" REFERENCES devices (device_id) ON DELETE SET NULL,
    public_key         BYTEA CHECK (octet_length(public_key) = 32),
    attempts           BIGINT      NOT NULL DEFAULT 0
);
CREATE INDEX pairing_codes_user ON pairing_codes (user_id);
CREATE INDEX pairing_codes_issuer ON pairing_codes (issuer_device_id);
CREATE INDEX pairing_codes_redeemed ON pairing_codes (redeemed_device_id);
CREATE INDEX pairing_codes_expires ON pairing_codes (expires_at);

-- device_id is plain text: events outlive their device. event_seq (not in
-- the logical schema) orders events recorded at the same time by insertion,
-- like SQLite's rowid.
CREATE TABLE device_key_events (
    event_id    TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    device_id   TEXT COLLATE "C" NOT NULL,
    public_key  BYTEA       NOT NULL CHECK (octet_length(public_key) = 32),
    action      TEXT COLLATE "C" NOT NULL CHECK (action IN ('register', 'rotate', 'certificate', 'pair', 'revoke')),
    recorded_at TIMESTAMPTZ NOT NULL,
    event_seq   BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX device_key_events_device ON device_key_events (device_id);

CREATE TABLE admin_tokens (
    version     BIGINT      NOT NULL PRIMARY KEY,
    token_hash  BYTEA       NOT NULL CHECK (octet_length(token_hash) = 32),
    salt        BYTEA       NOT NULL CHECK (octet_length(salt) = 16),
    valid_after TIMESTAMPTZ NOT NULL,
    rotates_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE noise_keys (
    version     BIGINT      NOT NULL PRIMARY KEY,
    private_key BYTEA       NOT NULL CHECK (octet_length(private_key) = 32),
    public_key  BYTEA       NOT NULL CHECK (octet_length(public_key) = 32),
    kem_seed    BYTEA       NOT NULL CHECK (octet_length(kem_seed) = 64),
    valid_after TIMESTAMPTZ NOT NULL,
    rotates_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE noise_config (
    id          BIGINT      NOT NULL PRIMARY KEY CHECK (id = 1),
    public_key  BYTEA       NOT NULL CHECK (octet_length(public_key) = 32),
    recorded_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE federation_peers (
    domain     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    endpoint   TEXT COLLATE "C" NOT NULL,
    public_key BYTEA       NOT NULL CHECK (octet_length(public_key) = 32),
    status     TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'pending', 'blocked')),
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE federation_outbox (
    event_id        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    target_domain   TEXT COLLATE "C" NOT NULL,
    origin          TEXT COLLATE "C" NOT NULL,
    scope           TEXT COLLATE "C" NOT NULL,
    created_at_ns   BIGINT      NOT NULL,
    payload         TEXT COLLATE "C" NOT NULL,
    signature       BYTEA       NOT NULL CHECK (octet_length(signature) = 64),
    status          TEXT COLLATE "C" NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT      NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT COLLATE "C"
);
CREATE INDEX federation_outbox_status_next ON federation_outbox (status, next_attempt_at);

CREATE TABLE user_blobs (
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    key        TEXT COLLATE "C" NOT NULL,
    payload    TEXT COLLATE "C" NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, key)
);
