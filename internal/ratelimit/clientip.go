package ratelimit

import (
	"net"
	"net/netip"
	"strings"
)

// ClientKey returns the limiter key of a client address (§8.3): an IPv4
// address (or an IPv4-mapped IPv6 address) is keyed by the IPv4 address in
// dotted form, e.g. "192.0.2.1"; an IPv6 address by its /64 prefix, e.g.
// "2001:db8:1:2::/64". IPv6 zones are ignored. The zero Addr yields "" (all
// unknown addresses share one key, which errs on the side of limiting).
func ClientKey(ip netip.Addr) string {
	if !ip.IsValid() {
		return ""
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return ip.String()
	}
	p, err := ip.Prefix(64)
	if err != nil { // unreachable for a valid IPv6 address
		return ip.String()
	}
	return p.String()
}

// ClientIP returns the client IP of a request (§3.2).
//
// remoteAddr is the TCP peer ("host:port", as in http.Request.RemoteAddr; a
// bare address is accepted too), xff the X-Forwarded-For header lines in
// order (http.Header.Values), trusted the CIDR ranges of
// server.trusted_proxies.
//
//   - When the peer is not in a trusted range, it is the client.
//   - Otherwise the header lines are joined in order into one
//     comma-separated list; each entry, stripped of surrounding spaces and
//     tabs, must parse as a bare IP address (netip.ParseAddr; an entry with
//     a port or brackets does not parse) or is skipped. The rightmost
//     parsable entry not in a trusted range is the client.
//   - If every parsable entry is trusted, the leftmost parsable entry is the
//     client; with no parsable entry at all, the peer.
//
// IPv4-mapped IPv6 addresses are unmapped (both when matching trusted
// ranges and in the result) and zones are dropped. An unparsable peer yields
// the zero Addr (it is in no trusted range, so the header is not consulted).
func ClientIP(remoteAddr string, xff []string, trusted []netip.Prefix) netip.Addr {
	peer := ParsePeer(remoteAddr)
	if !peer.IsValid() || !InTrusted(peer, trusted) {
		return peer
	}
	// Rightmost parsable entry outside the trusted ranges.
	for i := len(xff) - 1; i >= 0; i-- {
		line := xff[i]
		for line != "" {
			var item string
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				item, line = line[j+1:], line[:j]
			} else {
				item, line = line, ""
			}
			if a, ok := parseEntry(item); ok && !InTrusted(a, trusted) {
				return a
			}
		}
	}
	// None: the leftmost parsable entry, else the peer.
	for _, line := range xff {
		for item := range strings.SplitSeq(line, ",") {
			if a, ok := parseEntry(item); ok {
				return a
			}
		}
	}
	return peer
}

// ParsePeer parses a connection's remote address (host:port, or a bare
// address) like ClientIP does: unmapped, without zone; the zero Addr when
// it does not parse.
func ParsePeer(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return normalize(ap.Addr())
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return normalize(a)
	}
	// Forms ParseAddrPort rejects but net.SplitHostPort accepts, e.g. a
	// port name or "[::1%zone]:443".
	if host, _, err := net.SplitHostPort(s); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			return normalize(a)
		}
	}
	return netip.Addr{}
}

func parseEntry(s string) (netip.Addr, bool) {
	s = strings.Trim(s, " \t")
	if s == "" {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return normalize(a), true
}

func normalize(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}

// InTrusted reports whether a (already unmapped, e.g. from ParsePeer) lies
// in one of the prefixes. An IPv4 address also matches a prefix written in IPv4-mapped
// IPv6 form (e.g. ::ffff:10.0.0.0/104).
func InTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	var mapped netip.Addr
	if a.Is4() {
		mapped = netip.AddrFrom16(a.As16())
	}
	for _, p := range trusted {
		if p.Contains(a) || (mapped.IsValid() && p.Contains(mapped)) {
			return true
		}
	}
	return false
}
