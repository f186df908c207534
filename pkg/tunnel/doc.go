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
// A stream is a net.Conn with CloseWrite, as pkg/relay wants. CloseWrite
// ends the sending direction with END_STREAM. Close without CloseWrite resets
// the stream (RST_STREAM), so the peer sees a truncated stream as an error,
// never as a clean end; on the client, Close also resets a stream whose
// response was not read to EOF (the caller gave up on it). After a clean end
// Close only releases the stream. The caller must Close every stream: that
// is what frees its slot in the pool.
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
// ErrServerHalfClose, so an executor behind a relay sees a reset rather than
// an upload that merely looks complete. CloseWrite after the read side
// reached EOF (the client finished first) is an ordinary clean end. For
// request/response protocols where the server closes first (HTTP/1.0,
// "Connection: close") the relay on the server side therefore ends with
// ErrServerHalfClose although nothing was lost; callers may report that
// error as a normal end. ztunnel's Rust h2 stack has no such limitation.
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
//     SETTINGS_MAX_HEADER_LIST_SIZE; bigger requests get 431 before any
//     Handler runs. A single field longer than the whole limit, or a header
//     block running far past it, makes x/net stop decoding and close the
//     connection, which ends CONTINUATION floods (CVE-2023-45288,
//     golang/go#65051). The HPACK table stays at the default 4 KiB.
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
// created; x/net's own client default would be 4 MiB and 1 GiB. A
// connection window several times a stream's keeps one slow reader from
// stalling the others, and 16 MiB bounds what one connection can make its
// receiver buffer.
//
// # Goroutines
//
// The server runs each Handler on its own goroutine next to x/net's
// ServeHTTP one (see conn.ServeHTTP for why), so a relayed stream costs the
// server three goroutines with pkg/relay's own, the client one in x/net
// besides the relay's.
package tunnel
