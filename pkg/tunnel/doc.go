// Package tunnel carries TCP connections between intransit agents as HTTP/2
// CONNECT streams over TLS 1.3, like Istio's HBONE (ztunnel): one stream per
// client connection, multiplexed over a few pooled connections per peer, so a
// new client connection costs one stream, not one handshake.
//
// The package is transport only. The caller passes tls.Configs, the CONNECT
// headers (Authorization, identity) and, on the server, a Handler that
// authorizes each stream and serves it (typically with pkg/relay).
//
// # Streams
//
// A stream is a net.Conn with CloseWrite. CloseWrite ends the sending
// direction with END_STREAM; Close after both directions ended cleanly
// releases the stream, any other Close resets it (RST_STREAM), so the peer
// sees a truncated stream as an error, never as a clean end.
//
// HTTP/2 bodies cannot be interrupted without resetting the stream, so an
// expired deadline (SetDeadline, SetReadDeadline, SetWriteDeadline) resets
// the stream: pending and later I/O fails with an error wrapping
// os.ErrDeadlineExceeded (a net.Error with Timeout() true) and moving the
// deadline afterwards does not revive it. Deadlines that do not expire cost a
// timer and nothing else.
//
// Server half-close: golang.org/x/net/http2's server can only end a response
// (END_STREAM) by returning from the handler, which also closes the request
// body and makes it reset the client's upload with RST_STREAM(NO_ERROR)
// (RFC 9113 section 8.1). So a server stream's CloseWrite while its read side
// is still open ends both directions: the client reads everything sent and
// then EOF, its further writes fail, and the server's further reads fail with
// ErrServerHalfClose. Nothing is silently truncated: whichever side still had
// bytes to move gets an error. CloseWrite after the read side reached EOF (the
// client finished first) is an ordinary clean end. ztunnel's Rust h2 stack
// does not have this limitation.
//
// # Limits (threat T14)
//
//   - Streams per connection: SETTINGS_MAX_CONCURRENT_STREAMS (default 250;
//     ztunnel's server uses 200). Extra streams from a well-behaved client
//     queue on its side; from a misbehaving one they are refused.
//   - Rapid reset (CVE-2023-44487, golang/go#63417) and MadeYouReset
//     (CVE-2025-8671): x/net runs at most MaxConcurrentStreams handlers per
//     connection, reset streams included, queues at most 4x that many more and
//     closes the connection with ENHANCE_YOUR_CALM beyond. On top of that a
//     connection whose client resets more than resetBurst streams before they
//     were answered, refilled at resetRate per second, is closed.
//   - Header size: MaxHeaderBytes (default 16 KiB) becomes
//     SETTINGS_MAX_HEADER_LIST_SIZE; bigger requests get 431, and x/net stops
//     decoding and closes the connection once a header block runs far past it,
//     which ends CONTINUATION floods (CVE-2023-45288, golang/go#65051).
//   - Frames: 1 MiB maximum frame size each way (ztunnel's frame_size).
//   - TLS handshake timeout (10 s), idle connection timeout with GOAWAY, PING
//     health checks and a write timeout on both sides.
//
// # Flow control
//
// Receive windows are 4 MiB per stream and 16 MiB per connection on both
// sides (ztunnel's window_size and connection_window_size). The server sets
// them with http2.Server.MaxUploadBufferPerStream/PerConnection. The x/net
// Transport has no such fields; they are set through the net/http.Transport
// it is linked to (http2.ConfigureTransports reads HTTP2Config's
// MaxReceiveBufferPerStream/PerConnection), which is the only reason one is
// created. A connection window much larger than one stream's lets a few slow
// readers stall the others less; 16 MiB also bounds what one connection can
// buffer.
package tunnel
