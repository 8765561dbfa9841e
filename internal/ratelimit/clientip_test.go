package ratelimit

import (
	"net/netip"
	"testing"
)

func TestClientKey(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", "::/64"},
	} {
		if got := ClientKey(netip.MustParseAddr(c.in)); got != c.want {
			t.Errorf("ClientKey(%s) = %q, want %q", c.in, got, c.want)
		}
	}
	same1 := ClientKey(netip.MustParseAddr("2001:db8:aa:bb:1::1"))
	same2 := ClientKey(netip.MustParseAddr("2001:db8:aa:bb:ffff:ffff:ffff:ffff"))
	other := ClientKey(netip.MustParseAddr("2001:db8:aa:bc::1"))
	if same1 != same2 {
		t.Errorf("same /64 gave different keys %q, %q", same1, same2)
	}
	if same1 == other {
		t.Errorf("different /64 share key %q", other)
	}
	if ClientKey(netip.MustParseAddr("192.0.2.1")) == ClientKey(netip.MustParseAddr("192.0.2.2")) {
		t.Error("two IPv4 addresses share a key")
	}
	if got := ClientKey(netip.Addr{}); got != "" {
		t.Errorf("ClientKey(zero) = %q", got)
	}
}

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("2001:db8:ffff::/48"),
	}
	for _, c := range []struct {
		name    string
		remote  string
		xff     []string
		trusted []netip.Prefix
		want    string
	}{
		{"no proxy configured", "203.0.113.7:5555", []string{"198.51.100.1"}, nil, "203.0.113.7"},
		{"untrusted peer ignores header", "203.0.113.7:5555", []string{"198.51.100.1"}, trusted, "203.0.113.7"},
		{"untrusted v6 peer", "[2001:db8::1]:443", []string{"198.51.100.1"}, trusted, "2001:db8::1"},
		{"mapped peer unmapped", "[::ffff:203.0.113.7]:443", nil, trusted, "203.0.113.7"},
		{"trusted proxy, one entry", "10.0.0.1:443", []string{"198.51.100.1"}, trusted, "198.51.100.1"},
		{"trusted proxy, client-supplied entries to the left", "10.0.0.1:443", []string{"1.1.1.1, 198.51.100.1"}, trusted, "198.51.100.1"},
		{"chain of trusted proxies", "10.0.0.1:443", []string{"198.51.100.1, 10.1.1.1, 10.2.2.2"}, trusted, "198.51.100.1"},
		{"chain with v6 trusted proxy", "10.0.0.1:443", []string{"2001:db8:1::5, 2001:db8:ffff::1"}, trusted, "2001:db8:1::5"},
		{"all entries trusted: leftmost", "10.0.0.1:443", []string{"10.9.9.9, 10.1.1.1, 10.2.2.2"}, trusted, "10.9.9.9"},
		{"all trusted, garbage first: leftmost parsable", "10.0.0.1:443", []string{"unknown, 10.9.9.9, 10.1.1.1"}, trusted, "10.9.9.9"},
		{"garbage entries skipped", "10.0.0.1:443", []string{"198.51.100.1, not-an-ip, , 1.2.3.4:80, [2001:db8::1], 10.1.1.1"}, trusted, "198.51.100.1"},
		{"garbage rightmost skipped", "10.0.0.1:443", []string{"198.51.100.1, garbage"}, trusted, "198.51.100.1"},
		{"only garbage: peer", "10.0.0.1:443", []string{"garbage, , x"}, trusted, "10.0.0.1"},
		{"header missing: peer", "10.0.0.1:443", nil, trusted, "10.0.0.1"},
		{"empty header: peer", "10.0.0.1:443", []string{""}, trusted, "10.0.0.1"},
		{"multiple header lines joined in order", "10.0.0.1:443", []string{"1.1.1.1, 198.51.100.1", "203.0.113.9", "10.1.1.1"}, trusted, "203.0.113.9"},
		{"multiple lines all trusted: leftmost of first line", "10.0.0.1:443", []string{"garbage", "10.3.3.3, 10.4.4.4", "10.5.5.5"}, trusted, "10.3.3.3"},
		{"mapped entry unmapped", "10.0.0.1:443", []string{"::ffff:198.51.100.1"}, trusted, "198.51.100.1"},
		{"mapped trusted entry skipped", "10.0.0.1:443", []string{"198.51.100.1, ::ffff:10.1.1.1"}, trusted, "198.51.100.1"},
		{"tabs and spaces trimmed", "10.0.0.1:443", []string{"\t198.51.100.1 \t,10.1.1.1"}, trusted, "198.51.100.1"},
		{"v6 client behind proxy", "10.0.0.1:443", []string{"2001:db8:1:2::77"}, trusted, "2001:db8:1:2::77"},
		{"bare peer without port", "10.0.0.1", []string{"198.51.100.1"}, trusted, "198.51.100.1"},
		{"trusted v4-mapped prefix form", "10.0.0.1:443", []string{"198.51.100.1"}, []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}, "198.51.100.1"},
	} {
		got := ClientIP(c.remote, c.xff, c.trusted)
		if got.String() != c.want {
			t.Errorf("%s: ClientIP(%q, %q) = %v, want %s", c.name, c.remote, c.xff, got, c.want)
		}
	}
	if got := ClientIP("garbage", []string{"198.51.100.1"}, trusted); got.IsValid() {
		t.Errorf("unparsable peer: got %v, want zero Addr", got)
	}
}

func BenchmarkClientIP(b *testing.B) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	xff := []string{"198.51.100.1, 10.1.1.1, 10.2.2.2"}
	b.ReportAllocs()
	for b.Loop() {
		ClientIP("10.0.0.1:443", xff, trusted)
	}
}
