// Package store holds the domain types of CommuCat's persistent state (spec
// §9.2) and the small interfaces every storage backend implements. The
// embedded default is store/sqlite; store/postgres serves several nodes.
// store/storetest is one conformance suite run against every backend.
//
// All times are UTC with microsecond precision (what both backends store).
package store

import (
	"context"
	"errors"
	"time"
)

// Errors every backend returns (wrapped or not; compare with errors.Is).
var (
	// ErrNotFound: the row does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a unique key already exists (handle, version, id).
	ErrConflict = errors.New("store: conflict")
	// ErrSchemaTooNew: the database was migrated by a newer release.
	ErrSchemaTooNew = errors.New("store: database schema is newer than this release")
	// ErrPendingMigrations: migrations exist that were not applied.
	ErrPendingMigrations = errors.New("store: pending migrations")
)

// Device statuses (§9.2).
const (
	DeviceActive     = "active"
	DeviceRevoked    = "revoked"
	DeviceDiagnostic = "diagnostic"
)

// Key event actions (§9.2).
const (
	KeyRegister    = "register"
	KeyRotate      = "rotate"
	KeyCertificate = "certificate"
	KeyPair        = "pair"
	KeyRevoke      = "revoke"
)

// Group roles (§6.6.2), ordered owner > admin > member.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// RoleRank orders roles: owner 3, admin 2, member 1, anything else 0.
func RoleRank(role string) int {
	switch role {
	case RoleOwner:
		return 3
	case RoleAdmin:
		return 2
	case RoleMember:
		return 1
	}
	return 0
}

// User is a row of `users`.
type User struct {
	ID          string
	Handle      string
	DisplayName *string
	AvatarURL   *string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Device is a row of `devices`.
type Device struct {
	ID        string
	UserID    string
	PublicKey [32]byte
	Status    string
	Name      *string
	CreatedAt time.Time
	UpdatedAt time.Time
	RevokedAt *time.Time
}

// KeyEvent is a row of `device_key_events`.
type KeyEvent struct {
	ID         string
	DeviceID   string
	PublicKey  [32]byte
	Action     string
	RecordedAt time.Time
}

// Session is a row of `sessions`.
type Session struct {
	ID           string
	UserID       string
	DeviceID     string
	NodeID       string
	CreatedAt    time.Time
	LastActiveAt time.Time
	ClosedAt     *time.Time
}

// Channel is a row of `channels`.
type Channel struct {
	ID        uint32
	GroupID   *string
	Relay     bool
	CreatedBy string
	CreatedAt time.Time
}

// Group is a row of `groups`.
type Group struct {
	ID          string
	OwnerDevice string
	CreatedAt   time.Time
}

// GroupMember is a row of `group_members`.
type GroupMember struct {
	GroupID  string
	DeviceID string
	Role     string
	JoinedAt time.Time
}

// InboxEntry is a row of `relay_queue` (§6.7). QueueID is assigned by the
// backend on insert and increases with insertion order.
type InboxEntry struct {
	QueueID    int64
	EnvelopeID string
	Recipient  string
	Sender     string
	Channel    uint32
	FrameType  uint8
	Payload    []byte
	CreatedAt  time.Time
	ExpiresAt  time.Time
}

// InboxUsage is what a device's inbox holds: its entries and the bytes of
// their payloads (table inbox_usage, kept by the backends' triggers).
type InboxUsage struct {
	Entries int64
	Bytes   int64
}

// NoiseKey is a row of `noise_keys` (§10.4).
type NoiseKey struct {
	Version    int
	Private    [32]byte
	Public     [32]byte
	KEMSeed    [64]byte
	ValidAfter time.Time
	RotatesAt  time.Time
	ExpiresAt  time.Time
	CreatedAt  time.Time
}

// PairingCode is a row of `pairing_codes` (§8.4.2, §8.4.3).
type PairingCode struct {
	Code             string
	UserID           string
	IssuerDeviceID   string
	IssuedAt         time.Time
	ExpiresAt        time.Time
	RedeemedAt       *time.Time
	RedeemedDeviceID *string
	PublicKey        *[32]byte
	Attempts         int
}

// AdminToken is a row of `admin_tokens` (§10.4): only a salted hash of the
// token is stored.
type AdminToken struct {
	Version    int
	TokenHash  [32]byte
	Salt       [16]byte
	ValidAfter time.Time
	RotatesAt  time.Time
	ExpiresAt  time.Time
	CreatedAt  time.Time
}

// Queries is the set of operations on the state. A Store runs each call
// in its own transaction; inside Store.Tx the same calls share one.
type Queries interface {
	// Users.
	CreateUser(ctx context.Context, u User) error // ErrConflict on an existing id or handle
	GetUser(ctx context.Context, id string) (User, error)
	GetUserByHandle(ctx context.Context, handle string) (User, error)
	// UpdateUserProfile sets display_name and avatar_url (nil leaves a
	// field unchanged) and updated_at.
	UpdateUserProfile(ctx context.Context, id string, displayName, avatarURL *string, now time.Time) error
	CountUsers(ctx context.Context) (int, error)

	// Devices.
	CreateDevice(ctx context.Context, d Device) error // ErrConflict on an existing id
	GetDevice(ctx context.Context, id string) (Device, error)
	ListDevices(ctx context.Context, userID string) ([]Device, error) // ordered by created_at, then id
	SetDeviceKey(ctx context.Context, id string, key [32]byte, now time.Time) error
	// SetDeviceStatus sets the status; revoked_at is set when the status
	// becomes revoked.
	SetDeviceStatus(ctx context.Context, id, status string, now time.Time) error
	CountActiveDevices(ctx context.Context, userID string) (int, error)
	CountAllActiveDevices(ctx context.Context) (int, error)

	// Key events.
	AddKeyEvent(ctx context.Context, e KeyEvent) error
	// LatestKeyEvent returns the newest event of the device whose action
	// is one of actions (ErrNotFound when there is none).
	LatestKeyEvent(ctx context.Context, deviceID string, actions []string) (KeyEvent, error)

	// Sessions.
	CreateSession(ctx context.Context, s Session) error
	GetSession(ctx context.Context, id string) (Session, error)
	// TouchSession raises last_active_at to t (never lowers it).
	TouchSession(ctx context.Context, id string, t time.Time) error
	CloseSession(ctx context.Context, id string, t time.Time) error
	// DeleteClosedSessions deletes sessions closed before cutoff.
	DeleteClosedSessions(ctx context.Context, cutoff time.Time) (int64, error)

	// Channels.
	GetChannel(ctx context.Context, id uint32) (Channel, error)
	// CreateChannel creates the channel with its initial members
	// (ErrConflict when it exists).
	CreateChannel(ctx context.Context, c Channel, members []string, now time.Time) error
	// AddChannelMembers adds members that are not members yet.
	AddChannelMembers(ctx context.Context, id uint32, members []string, now time.Time) error
	// RemoveChannelMember removes one member; ErrNotFound when it was not
	// a member.
	RemoveChannelMember(ctx context.Context, id uint32, member string) error
	DeleteChannel(ctx context.Context, id uint32) error
	SetChannelGroup(ctx context.Context, id uint32, groupID string) error
	ChannelMembers(ctx context.Context, id uint32) ([]string, error) // sorted
	IsChannelMember(ctx context.Context, id uint32, member string) (bool, error)
	// ChannelsOf returns the channels the member belongs to, ascending.
	ChannelsOf(ctx context.Context, member string) ([]uint32, error)
	// CoMembers returns the distinct other members of every channel the
	// member belongs to, sorted.
	CoMembers(ctx context.Context, member string) ([]string, error)

	// Groups.
	CreateGroup(ctx context.Context, g Group) error // ErrConflict when it exists
	GetGroup(ctx context.Context, id string) (Group, error)
	// UpsertGroupMember inserts the membership or raises its role; it never
	// lowers an existing role (RoleRank).
	UpsertGroupMember(ctx context.Context, m GroupMember) error
	GetGroupMember(ctx context.Context, groupID, deviceID string) (GroupMember, error)
	GroupMembers(ctx context.Context, groupID string) ([]GroupMember, error) // sorted by device id

	// Inbox (§6.7).
	// EnqueueInbox inserts the entries in order (one multi-row insert where
	// the backend can) and returns their queue ids in the same order.
	EnqueueInbox(ctx context.Context, entries []InboxEntry) ([]int64, error)
	// ListInbox returns up to limit unexpired entries (expires_at > now) of
	// the recipient with queue_id > after, ascending.
	ListInbox(ctx context.Context, recipient string, after int64, now time.Time, limit int) ([]InboxEntry, error)
	// DeleteInbox deletes the recipient's entries with these queue ids.
	DeleteInbox(ctx context.Context, recipient string, queueIDs []int64) error
	// DeleteInboxOf deletes every entry of the recipient.
	DeleteInboxOf(ctx context.Context, recipient string) error
	// PurgeExpiredInbox deletes entries with expires_at <= now.
	PurgeExpiredInbox(ctx context.Context, now time.Time) (int64, error)
	// InboxUsage returns the usage of each recipient's inbox; a recipient
	// with an empty inbox may be missing from the map.
	InboxUsage(ctx context.Context, recipients []string) (map[string]InboxUsage, error)
	// InboxStats returns the number of entries and the created_at of the
	// oldest (zero time when empty).
	InboxStats(ctx context.Context) (count int64, oldest time.Time, err error)

	// Noise keys (§10.4).
	ListNoiseKeys(ctx context.Context) ([]NoiseKey, error) // every row, newest version first
	InsertNoiseKey(ctx context.Context, k NoiseKey) error  // ErrConflict on an existing version
	DeleteNoiseKey(ctx context.Context, version int) error
	// NoiseConfig returns the configured public key last inserted
	// (ErrNotFound when none was recorded).
	NoiseConfig(ctx context.Context) ([32]byte, error)
	SetNoiseConfig(ctx context.Context, public [32]byte, now time.Time) error

	// Memberships (§6.11).
	// RemoveDeviceMemberships removes the device from every channel
	// (deleting channels left without members) and from every group.
	RemoveDeviceMemberships(ctx context.Context, deviceID string) error

	// Pairing codes (§8.4.2, §8.4.3).
	CreatePairingCode(ctx context.Context, p PairingCode) error // ErrConflict on an existing code
	GetPairingCode(ctx context.Context, code string) (PairingCode, error)
	// IncrementPairingAttempts adds one attempt and returns the new count.
	IncrementPairingAttempts(ctx context.Context, code string) (int, error)
	// RedeemPairingCode marks the code redeemed by the device with the
	// key at the given time and adds one attempt; ErrConflict when it was
	// already redeemed.
	RedeemPairingCode(ctx context.Context, code, deviceID string, key [32]byte, at time.Time) error
	// DeletePairingCodesExpiredBefore deletes codes with expires_at < cutoff.
	DeletePairingCodesExpiredBefore(ctx context.Context, cutoff time.Time) (int64, error)

	// Admin tokens (§10.4).
	ListAdminTokens(ctx context.Context) ([]AdminToken, error) // newest version first
	InsertAdminToken(ctx context.Context, t AdminToken) error  // ErrConflict on an existing version
	DeleteAdminToken(ctx context.Context, version int) error   // nil when missing

	// User blobs (§8.4.6).
	GetUserBlob(ctx context.Context, userID, key string) (string, error) // ErrNotFound when unset
	PutUserBlob(ctx context.Context, userID, key, payload string, now time.Time) error
}

// Store is a storage backend.
type Store interface {
	Queries
	// Tx runs fn in one read-write transaction: committed when fn returns
	// nil, rolled back otherwise (fn's error is returned).
	Tx(ctx context.Context, fn func(q Queries) error) error
	// Ping runs a trivial query (readiness, §3.7).
	Ping(ctx context.Context) error
	// Kind names the backend: "sqlite" or "postgres".
	Kind() string
	Close() error
}

// Migrator applies the embedded schema migrations (§9.1).
type Migrator interface {
	// Migrate applies pending migrations in order and returns how many it
	// applied and the resulting schema version. It refuses (ErrSchemaTooNew)
	// a database whose version is newer than the newest migration.
	Migrate(ctx context.Context) (applied int, version int, err error)
	// SchemaVersion returns the current version and whether migrations are
	// pending.
	SchemaVersion(ctx context.Context) (version int, pending bool, err error)
}
