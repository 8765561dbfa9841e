-- CommuCat schema version 1: every table of spec §9.2.
-- Times are INTEGER Unix microseconds UTC, bools INTEGER 0/1, bytes BLOB.
-- Foreign keys cascade on delete unless noted.

CREATE TABLE users (
    user_id      TEXT    NOT NULL PRIMARY KEY,
    handle       TEXT    NOT NULL UNIQUE,
    display_name TEXT,
    avatar_url   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE devices (
    device_id   TEXT    NOT NULL PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    public_key  BLOB    NOT NULL CHECK (length(public_key) = 32),
    status      TEXT    NOT NULL CHECK (status IN ('active', 'revoked', 'diagnostic')),
    device_name TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX devices_user_created ON devices (user_id, created_at);

CREATE TABLE sessions (
    session_id     TEXT    NOT NULL PRIMARY KEY,
    user_id        TEXT    NOT NULL,
    device_id      TEXT    NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    node_id        TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    last_active_at INTEGER NOT NULL,
    closed_at      INTEGER
);
CREATE INDEX sessions_device ON sessions (device_id);
CREATE INDEX sessions_closed ON sessions (closed_at);

CREATE TABLE relay_queue (
    queue_id         INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id      TEXT    NOT NULL UNIQUE,
    recipient_device TEXT    NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    sender_device    TEXT    NOT NULL,
    channel_id       INTEGER NOT NULL,
    frame_type       INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    -- Last, so that reading the other columns never walks overflow pages.
    payload          BLOB    NOT NULL
);
CREATE INDEX relay_queue_recipient ON relay_queue (recipient_device, queue_id);
CREATE INDEX relay_queue_expires ON relay_queue (expires_at);

CREATE TABLE groups (
    group_id     TEXT    NOT NULL PRIMARY KEY,
    owner_device TEXT    NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE group_members (
    group_id  TEXT    NOT NULL REFERENCES groups (group_id) ON DELETE CASCADE,
    device_id TEXT    NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    role      TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, device_id)
);
CREATE INDEX group_members_device ON group_members (device_id);

CREATE TABLE channels (
    channel_id INTEGER NOT NULL PRIMARY KEY CHECK (channel_id BETWEEN 0 AND 4294967295),
    group_id   TEXT    REFERENCES groups (group_id) ON DELETE SET NULL,
    relay      INTEGER NOT NULL DEFAULT 0 CHECK (relay IN (0, 1)),
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX channels_group ON channels (group_id);

-- member is a local device id or a remote device@domain: not a foreign key.
CREATE TABLE channel_members (
    channel_id INTEGER NOT NULL REFERENCES channels (channel_id) ON DELETE CASCADE,
    member     TEXT    NOT NULL,
    joined_at  INTEGER NOT NULL,
    PRIMARY KEY (channel_id, member)
);
CREATE INDEX channel_members_member ON channel_members (member);

CREATE TABLE pairing_codes (
    pair_code          TEXT    NOT NULL PRIMARY KEY,
    user_id            TEXT    NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    issuer_device_id   TEXT    NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    issued_at          INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    redeemed_at        INTEGER,
    redeemed_device_id TEXT    REFERENCES devices (device_id) ON DELETE SET NULL,
    public_key         BLOB,
    attempts           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX pairing_codes_user ON pairing_codes (user_id);
CREATE INDEX pairing_codes_issuer ON pairing_codes (issuer_device_id);
CREATE INDEX pairing_codes_redeemed ON pairing_codes (redeemed_device_id);
CREATE INDEX pairing_codes_expires ON pairing_codes (expires_at);

-- device_id is plain text: events outlive their device.
CREATE TABLE device_key_events (
    event_id    TEXT    NOT NULL PRIMARY KEY,
    device_id   TEXT    NOT NULL,
    public_key  BLOB    NOT NULL CHECK (length(public_key) = 32),
    action      TEXT    NOT NULL CHECK (action IN ('register', 'rotate', 'certificate', 'pair', 'revoke')),
    recorded_at INTEGER NOT NULL
);
CREATE INDEX device_key_events_device ON device_key_events (device_id);

CREATE TABLE admin_tokens (
    version     INTEGER NOT NULL PRIMARY KEY,
    token_hash  BLOB    NOT NULL CHECK (length(token_hash) = 32),
    salt        BLOB    NOT NULL CHECK (length(salt) = 16),
    valid_after INTEGER NOT NULL,
    rotates_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE noise_keys (
    version     INTEGER NOT NULL PRIMARY KEY,
    private_key BLOB    NOT NULL CHECK (length(private_key) = 32),
    public_key  BLOB    NOT NULL CHECK (length(public_key) = 32),
    kem_seed    BLOB    NOT NULL CHECK (length(kem_seed) = 64),
    valid_after INTEGER NOT NULL,
    rotates_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE noise_config (
    id          INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    public_key  BLOB    NOT NULL CHECK (length(public_key) = 32),
    recorded_at INTEGER NOT NULL
);

CREATE TABLE federation_peers (
    domain     TEXT    NOT NULL PRIMARY KEY,
    endpoint   TEXT    NOT NULL,
    public_key BLOB    NOT NULL CHECK (length(public_key) = 32),
    status     TEXT    NOT NULL CHECK (status IN ('active', 'pending', 'blocked')),
    updated_at INTEGER NOT NULL
);

CREATE TABLE federation_outbox (
    event_id        TEXT    NOT NULL PRIMARY KEY,
    target_domain   TEXT    NOT NULL,
    origin          TEXT    NOT NULL,
    scope           TEXT    NOT NULL,
    created_at_ns   INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    signature       BLOB    NOT NULL CHECK (length(signature) = 64),
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT
);
CREATE INDEX federation_outbox_status_next ON federation_outbox (status, next_attempt_at);

CREATE TABLE user_blobs (
    user_id    TEXT    NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    key        TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
);
