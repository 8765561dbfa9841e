// Package client is the Go SDK for CommuCat servers: it speaks CCP-1
// (../shared/spec/CCP1.md) over the /connect stream and is used by the
// terminal client, the load tool and the end-to-end tests.
//
// # Layers
//
//   - Identity holds a device's long-term keys (Ed25519 device key seed,
//     X25519 Noise static key) and the last device certificate; it
//     marshals to JSON for a state file.
//   - FetchServerInfo reads GET /api/server-info (§8.4.1): domain, Noise
//     public key, device CA key, keepalive interval.
//   - Dial opens one /connect stream, runs the Noise XK or IK handshake
//     (§4) and returns a *Conn once the handshake ACK (§4.13) has arrived.
//     A Conn sends frames with the client sequence counter (§6.2), matches
//     ACK and ERROR answers to requests (Request), hands every other frame
//     to Recv, and in version 2 carries everything in encrypted records
//     (§5), with the PQ hybrid when requested.
//   - Client keeps a device connected: reconnects with capped, jittered
//     exponential backoff, acknowledges delivered durable frames so that
//     the server's inbox redelivery resumes after a reconnect (§6.7),
//     stores the device certificate, and reports Events.
//
// # Transports
//
// HTTP2 (default) streams POST /connect over HTTP/2, HTTP1 over HTTP/1.1
// with a chunked request body read while the response is written (§3.4),
// and WebSocket uses GET /connect with the subprotocol commucat.ccp1 and
// binary messages (§3.5). HTTP/2 and WebSocket pings are answered by the
// transport. A version 2 connection also sends ACK {"keepalive":t} at
// least every keepalive_interval (required on HTTP/1.1, done on every
// transport), drops the server's keepalive ACKs silently and treats three
// intervals without data as a dead connection.
//
// # Delivery
//
// Durable frames (MSG, KEY_UPDATE, GROUP_*) are delivered at least once:
// the server keeps them in the device's inbox until the device
// acknowledges their server sequence (Conn.AckDelivery; a Client does it
// for every durable frame once it has been queued on Events), and
// delivers unacknowledged ones again on the next connection. Applications
// should carry their own message ids in MSG payloads to drop duplicates.
// Client.SendMessage resends a message whose connection was lost before
// the server's ACK, so a peer may also see it twice.
//
// # Resources
//
// Each Conn runs one reader and one writer goroutine; both stop when the
// connection ends (Close, CloseAbruptly, a transport error or the server
// ending the stream), after which Done is closed. Queues are bounded: when
// the application stops calling Recv (or stops reading Client.Events), the
// reader stops reading the stream, and the server's writes stall under
// HTTP/2 or TCP flow control instead of growing memory here.
//
// Logs (Options.Logger) carry frame types, channels, sequences and
// lengths, never payloads or key material.
package client
