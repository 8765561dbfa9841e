package noiseconn

// Capability strings of §1.5, in the order of its table.
const (
	CapNoise    = "noise"
	CapV2       = "ccp.v2"
	CapPQ       = "pq.mlkem768"
	CapOpus     = "media.opus"
	CapVP8      = "media.vp8"
	CapRawAudio = "media.raw-audio"
	CapRawVideo = "media.raw-video"
	CapPresence = "presence.push"
	CapAck      = "delivery.ack"
)

// capabilityOrder is the table order of §1.5.
var capabilityOrder = []string{CapNoise, CapV2, CapPQ, CapOpus, CapVP8, CapRawAudio, CapRawVideo, CapPresence, CapAck}

// ServerFeatures is what this server build and configuration can do.
type ServerFeatures struct {
	V2   bool // version 2 enabled (always true for a CCP-1 server)
	Opus bool // the build has Opus and media.transcode is on
	VP8  bool // the build has VP8 and media.transcode is on
}

func (f ServerFeatures) supports(c string) bool {
	switch c {
	case CapNoise, CapPQ, CapPresence, CapAck:
		return true
	case CapV2:
		return f.V2
	case CapOpus, CapRawAudio:
		return f.Opus
	case CapVP8, CapRawVideo:
		return f.VP8
	}
	return false
}

// SupportedCapabilities returns the capabilities the server supports, in
// table order (published by GET /api/server-info).
func (f ServerFeatures) SupportedCapabilities() []string {
	out := make([]string, 0, len(capabilityOrder))
	for _, c := range capabilityOrder {
		if f.supports(c) {
			out = append(out, c)
		}
	}
	return out
}

// AcceptCapabilities computes accepted_capabilities (§1.5) for a peer that
// offered offered, negotiated version, and has PQ in effect or not. Unknown
// strings are ignored; the result is in table order.
func (f ServerFeatures) AcceptCapabilities(offered []string, version int, pq bool) []string {
	has := func(c string) bool {
		for _, o := range offered {
			if o == c {
				return true
			}
		}
		return false
	}
	out := make([]string, 0, len(capabilityOrder))
	for _, c := range capabilityOrder {
		var ok bool
		switch c {
		case CapNoise:
			ok = true
		case CapV2:
			ok = version == 2
		case CapPQ:
			ok = pq
		case CapOpus, CapVP8, CapRawAudio, CapRawVideo:
			ok = has(c) && f.supports(c)
		case CapPresence:
			ok = version == 1 || has(c)
		case CapAck:
			ok = version == 2 || has(c)
		}
		if ok {
			out = append(out, c)
		}
	}
	return out
}

// HasCapability reports whether list contains c.
func HasCapability(list []string, c string) bool {
	for _, x := range list {
		if x == c {
			return true
		}
	}
	return false
}
