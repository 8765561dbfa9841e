package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/noiseconn"
)

// NoiseKeyInfo is one entry of a Noise key catalog (§4.13, §8.4.1).
type NoiseKeyInfo = noiseconn.NoiseKeyInfo

// ServerInfo is the answer of GET /api/server-info (§8.4.1): what a client
// needs to know before the handshake.
type ServerInfo struct {
	Domain            string   // server.domain, bound into the device-key proof
	NoisePublic       [32]byte // the newest Noise static key (the handshake's responder key)
	DeviceCAPublic    [32]byte // the device CA key that signs device certificates
	SupportedVersions []int
	SupportedPatterns []string
	Capabilities      []string
	KeepaliveInterval int // session.keepalive_interval (K of §3.6), seconds
	SessionTTL        int // session.ttl_seconds
	PresenceTTL       int // presence.ttl_seconds
	NoiseKeys         []NoiseKeyInfo
	Pairing           PairingInfo

	// Raw is the whole response body, for members this type does not name.
	Raw json.RawMessage
}

// PairingInfo is the `pairing` member of server-info.
type PairingInfo struct {
	AutoApprove    bool `json:"auto_approve"`
	MaxAutoDevices int  `json:"max_auto_devices"`
	PairingTTL     int  `json:"pairing_ttl"`
}

// maxServerInfo bounds the server-info body.
const maxServerInfo = 1 << 20

// FetchServerInfo performs GET {baseURL}/api/server-info. httpClient nil
// means http.DefaultClient.
func FetchServerInfo(ctx context.Context, httpClient *http.Client, baseURL string) (*ServerInfo, error) {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(baseURL, "/")+"/api/server-info", nil)
	if err != nil {
		return nil, fmt.Errorf("client: server-info: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: server-info: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxServerInfo+1))
	if err != nil {
		return nil, fmt.Errorf("client: server-info: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &HTTPError{Op: "server-info", StatusCode: resp.StatusCode, Body: truncate(body, 4096), RetryAfter: retryAfterHeader(resp.Header)}
	}
	if len(body) > maxServerInfo {
		return nil, errors.New("client: server-info: response too large")
	}
	return ParseServerInfo(body)
}

// ParseServerInfo parses a server-info JSON document (§8.4.1).
func ParseServerInfo(body []byte) (*ServerInfo, error) {
	var j struct {
		Capabilities   []string       `json:"capabilities"`
		DeviceCAPublic string         `json:"device_ca_public"`
		Domain         string         `json:"domain"`
		NoiseKeys      []NoiseKeyInfo `json:"noise_keys"`
		NoisePublic    string         `json:"noise_public"`
		Pairing        PairingInfo    `json:"pairing"`
		Presence       struct {
			TTLSeconds int `json:"ttl_seconds"`
		} `json:"presence"`
		Session struct {
			KeepaliveInterval int `json:"keepalive_interval"`
			TTLSeconds        int `json:"ttl_seconds"`
		} `json:"session"`
		SupportedPatterns []string `json:"supported_patterns"`
		SupportedVersions []int    `json:"supported_versions"`
	}
	if err := json.Unmarshal(body, &j); err != nil {
		return nil, fmt.Errorf("client: server-info: %w", err)
	}
	info := &ServerInfo{
		Domain:            j.Domain,
		SupportedVersions: j.SupportedVersions,
		SupportedPatterns: j.SupportedPatterns,
		Capabilities:      j.Capabilities,
		KeepaliveInterval: j.Session.KeepaliveInterval,
		SessionTTL:        j.Session.TTLSeconds,
		PresenceTTL:       j.Presence.TTLSeconds,
		NoiseKeys:         j.NoiseKeys,
		Pairing:           j.Pairing,
		Raw:               json.RawMessage(append([]byte(nil), body...)),
	}
	var err error
	if info.NoisePublic, err = identity.DecodeHex32(j.NoisePublic); err != nil {
		return nil, fmt.Errorf("client: server-info: noise_public: %w", err)
	}
	if info.DeviceCAPublic, err = identity.DecodeHex32(j.DeviceCAPublic); err != nil {
		return nil, fmt.Errorf("client: server-info: device_ca_public: %w", err)
	}
	if info.Domain == "" {
		return nil, errors.New("client: server-info: empty domain")
	}
	return info, nil
}

func (s *ServerInfo) clone() *ServerInfo {
	c := *s
	return &c
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		b = b[:n]
	}
	return b
}
