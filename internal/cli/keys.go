package cli

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/commucat/commucat/client"
	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/ledger"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/store"
)

const rotateKeysUsage = "usage: commucat-cli rotate-keys (--user ID | --handle H) [--device ID | ID] [--identity-out FILE]"

// micro truncates t to the storage precision (§9.1), as the server does.
func micro(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// randomHex returns n random bytes in hex.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// errForeignDevice: the named device belongs to another user.
var errForeignDevice = errors.New("device belongs to another user")

// runRotateKeys implements `commucat-cli rotate-keys` (§12.2): a new
// device key from_seed(32 random bytes) for a device of the user (created
// active when it does not exist), a 30-day certificate, a device_key_events
// row and a ledger record with source "cli".
func runRotateKeys(env *Env, args []string) int {
	var userID, handle, deviceID, identityOut string
	pos, msg := parseArgs(args, map[string]*string{"--user": &userID, "--handle": &handle, "--device": &deviceID, "--identity-out": &identityOut}, nil)
	switch {
	case msg != "":
	case userID == "" && handle == "":
		msg = "--user or --handle is required"
	case userID != "" && handle != "":
		msg = "give --user or --handle, not both"
	case len(pos) > 1:
		msg = "unknown argument " + pos[1]
	case len(pos) == 1 && deviceID != "":
		msg = "give --device or a positional device id, not both"
	}
	if msg != "" {
		fmt.Fprintf(env.Stderr, "%s (%s)\n", rotateKeysUsage, msg)
		return ExitUsage
	}
	if len(pos) == 1 {
		deviceID = pos[0]
	}
	if deviceID == "" {
		// The one exception to the id format of §1.2 (see §12.2).
		deviceID = "device-" + strconv.FormatInt(time.Now().UnixMilli(), 10)
	}
	if !noiseconn.ValidDeviceID(deviceID) {
		env.errorf("invalid device id %s: 1-128 printable ASCII characters without '@'", strconv.Quote(deviceID))
		return ExitUsage
	}
	if handle != "" && !noiseconn.ValidHandle(handle) {
		env.errorf("invalid handle %s: 1-64 characters without control characters", strconv.Quote(handle))
		return ExitUsage
	}

	// --identity-out (an extension of §12.2): a Go SDK identity file
	// (client.Identity JSON, mode 0600) for the new key, so that the
	// device can connect with it (commucat-client --identity, or
	// json.Unmarshal into client.Identity). It is created before anything
	// is written and never overwritten: a rotated key that cannot be saved
	// would lock the device out.
	var idFile *os.File
	idWritten := false
	if identityOut != "" {
		f, err := os.OpenFile(identityOut, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			env.errorf("--identity-out: %v", err)
			return ExitFail
		}
		idFile = f
		defer func() {
			f.Close()
			if !idWritten {
				os.Remove(identityOut)
			}
		}()
	}

	ctx := context.Background()
	st, cfg, err := env.openMigrated(ctx)
	if err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	defer st.Close()
	ca, err := identity.DeviceCA(cfg.Crypto.FederationSeed)
	if err != nil {
		env.errorf("%v", err)
		return ExitFail
	}

	var user store.User
	if userID != "" {
		user, err = st.GetUser(ctx, userID)
	} else {
		user, err = st.GetUserByHandle(ctx, handle)
	}
	if errors.Is(err, store.ErrNotFound) {
		if userID != "" {
			env.errorf("no user with id %s", strconv.Quote(userID))
		} else {
			env.errorf("no user with handle %s", strconv.Quote(handle))
		}
		return ExitFail
	}
	if err != nil {
		env.errorf("%v", err)
		return ExitFail
	}

	// The device key: from_seed(32 random bytes) (§1.2).
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	priv, err := identity.FromSeed(seed[:])
	devSeed := seed // for --identity-out: the SDK keeps the seed itself
	defer clear(devSeed[:])
	clear(seed[:])
	if err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	pub := identity.PublicKey32(priv)
	var serialBytes [8]byte
	if _, err := rand.Read(serialBytes[:]); err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	eventID, err := randomHex(32)
	if err != nil {
		env.errorf("%v", err)
		return ExitFail
	}

	now := micro(time.Now())
	var action string
	err = st.Tx(ctx, func(q store.Queries) error {
		dev, err := q.GetDevice(ctx, deviceID)
		switch {
		case err == nil:
			if dev.UserID != user.ID {
				return errForeignDevice
			}
			if err := q.SetDeviceKey(ctx, deviceID, pub, now); err != nil {
				return err
			}
			if dev.Status != store.DeviceActive {
				if err := q.SetDeviceStatus(ctx, deviceID, store.DeviceActive, now); err != nil {
					return err
				}
			}
			action = store.KeyRotate
		case errors.Is(err, store.ErrNotFound):
			if err := q.CreateDevice(ctx, store.Device{
				ID: deviceID, UserID: user.ID, PublicKey: pub, Status: store.DeviceActive,
				CreatedAt: now, UpdatedAt: now,
			}); err != nil {
				return err
			}
			action = store.KeyRegister
		default:
			return err
		}
		return q.AddKeyEvent(ctx, store.KeyEvent{ID: eventID, DeviceID: deviceID, PublicKey: pub, Action: action, RecordedAt: now})
	})
	if errors.Is(err, errForeignDevice) {
		env.errorf("device %s belongs to another user", strconv.Quote(deviceID))
		return ExitFail
	}
	if err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	cert := identity.IssueCertificate(ca, binary.LittleEndian.Uint64(serialBytes[:]), user.ID, deviceID, pub, now.Unix())

	// The ledger record has the members of the handshake's key records
	// (§11.1) with source "cli". Ledger failures never fail the command
	// (§11.1); they are reported on stderr.
	env.recordLedger(ctx, cfg, pub, map[string]any{
		"action":                 action,
		"certificate_expires_at": cert.ExpiresAt,
		"certificate_issued_at":  cert.IssuedAt,
		"certificate_serial":     cert.Serial,
		"device":                 deviceID,
		"source":                 "cli",
		"user":                   user.ID,
	})

	caPub := identity.PublicKey32(ca)
	out := [][2]string{
		{"user_id", user.ID},
		{"device_id", deviceID},
		{"public_key", hex.EncodeToString(pub[:])},
		// The 32-byte Ed25519 secret key = BLAKE3(seed) (§1.2, §12.2).
		{"private_key", hex.EncodeToString(priv.Seed())},
		{"issuer_public", hex.EncodeToString(caPub[:])},
		{"certificate_serial", strconv.FormatUint(cert.Serial, 10)},
		{"certificate_expires_at", strconv.FormatInt(cert.ExpiresAt, 10)},
		{"certificate", string(cert.AppendCanonical(nil))},
	}
	clear(priv)
	var idErr error
	if idFile != nil {
		if idErr = writeIdentity(idFile, deviceID, devSeed, cert); idErr == nil {
			idWritten = true
			out = append(out, [2]string{"identity_file", identityOut})
		}
	}
	// The keys are printed even if the identity file failed: the device
	// key is already rotated.
	for _, kv := range out {
		fmt.Fprintf(env.Stdout, "%s=%s\n", kv[0], kv[1])
	}
	if idErr != nil {
		env.errorf("--identity-out: %v (the key is rotated; its private_key is printed above)", idErr)
		return ExitFail
	}
	return ExitOK
}

// writeIdentity writes a client.Identity (JSON) for the device key
// from_seed(seed), with a fresh X25519 static key and the certificate.
func writeIdentity(f *os.File, deviceID string, seed [32]byte, cert identity.Certificate) error {
	id := &client.Identity{DeviceID: deviceID, DeviceSeed: seed, Certificate: &cert}
	defer clear(id.DeviceSeed[:])
	if _, err := rand.Read(id.StaticKey[:]); err != nil {
		return err
	}
	defer clear(id.StaticKey[:])
	b, err := json.Marshal(id)
	if err != nil {
		return err
	}
	defer clear(b)
	if _, err := f.Write(append(b, '\n')); err != nil {
		return err
	}
	return f.Sync()
}

// recordLedger writes one ledger record in the configured mode (§11.1): in
// debug mode the record is logged on stderr, in file mode it is appended
// to ledger.target. A failure is reported as a warning.
//
// Note: a file ledger has one writer per file (ledger.File keeps the chain
// head in memory), so appending while a server writes the same file would
// fork the chain; operators should run key commands with ledger mode
// "file" while the node is stopped, or give the CLI its own target.
func (e *Env) recordLedger(ctx context.Context, cfg *config.Config, digest [32]byte, meta map[string]any) {
	log := slog.New(slog.NewTextHandler(e.Stderr, nil))
	lg, err := ledger.New(string(cfg.Ledger.Mode), cfg.Ledger.Target, nil, log)
	if err != nil {
		fmt.Fprintf(e.Stderr, "warning: ledger: %v\n", err)
		return
	}
	if err := lg.Record(ctx, digest, meta); err != nil {
		fmt.Fprintf(e.Stderr, "warning: ledger: %v\n", err)
	}
	if err := lg.Close(); err != nil {
		fmt.Fprintf(e.Stderr, "warning: ledger: %v\n", err)
	}
}

// runRotateNoise implements `commucat-cli rotate-noise` (§12.2, §13a.10):
// a fresh X25519 key and ML-KEM-768 seed become the newest noise_keys
// version at once, with the validity of config.RotationPolicy.Validity for
// rotation.noise (§10.4); as in the server's rotation tick, expired rows
// are deleted and only the newest max_versions are kept.
func runRotateNoise(env *Env, args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(env.Stderr, "usage: commucat-cli rotate-noise")
		return ExitUsage
	}
	ctx := context.Background()
	st, cfg, err := env.openMigrated(ctx)
	if err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	defer st.Close()
	var priv [32]byte
	if _, err := rand.Read(priv[:]); err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	defer clear(priv[:])
	pub, err := identity.X25519Public(priv)
	if err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	nk := store.NoiseKey{Private: priv, Public: pub}
	defer clear(nk.Private[:])
	defer clear(nk.KEMSeed[:])
	if _, err := rand.Read(nk.KEMSeed[:]); err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	policy := cfg.Rotation.Noise
	// A concurrent insert of the same version (a server's tick on
	// PostgreSQL) loses on the primary key: read the versions again.
	for attempt := 0; ; attempt++ {
		now := micro(time.Now())
		nk.CreatedAt = now
		nk.ValidAfter, nk.RotatesAt, nk.ExpiresAt = policy.Validity(now)
		err = st.Tx(ctx, func(q store.Queries) error {
			rows, err := q.ListNoiseKeys(ctx) // newest first
			if err != nil {
				return err
			}
			nk.Version = 1
			if len(rows) > 0 {
				nk.Version = rows[0].Version + 1
			}
			if err := q.InsertNoiseKey(ctx, nk); err != nil {
				return err
			}
			for i, r := range rows {
				if !policy.Keeps(i+1, r.ExpiresAt, now) { // rows: older than the new version
					if err := q.DeleteNoiseKey(ctx, r.Version); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if !errors.Is(err, store.ErrConflict) || attempt == 4 {
			break
		}
	}
	if err != nil {
		env.errorf("%v", err)
		return ExitFail
	}
	fmt.Fprintf(env.Stdout, "noise_key_version=%d\nnoise_public=%s\n", nk.Version, hex.EncodeToString(pub[:]))
	return ExitOK
}
