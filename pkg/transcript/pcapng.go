package transcript

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/intransit/intransit/pkg/recording"
	"github.com/intransit/intransit/pkg/version"
)

// Synthesised TCP parameters.
const (
	mss        = 1448 // payload per segment: a 1500 MTU less IP, TCP and timestamps
	synMSS     = 1460
	winShift   = 7     // window scale: 65535<<7 = 8 MiB, so large bodies never fill the window
	window     = 65535 // scaled by winShift after the handshake
	ackEvery   = 4 << 20
	clientISN  = 0x1000_0000
	serverISN  = 0x5000_0000
	clientSide = 0
	serverSide = 1
)

var (
	clientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01} // locally administered
	serverMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
)

// PCAPNG writes the session as a pcapng capture of a synthesised TCP
// connection between Meta.Source and Meta.Destination: handshake at the
// session start, every recorded byte in time order, FIN exchange at the
// end. HTTP messages are re-serialised with Content-Length framing that
// matches the recorded (decoded, redacted) body so that Wireshark
// dissects them; raw segments are written as they are.
func PCAPNG(t *Transcript, w io.Writer) error {
	src, dst, err := endpoints(t.Meta)
	if err != nil {
		return fmt.Errorf("session %s: pcapng: %w", t.Meta.ID, err)
	}
	comment := fmt.Sprintf("intransit session %s (rule %s): %s -> %s via %s, recording %s; synthesised TCP, HTTP re-framed with Content-Length",
		t.Meta.ID, t.Meta.Rule, t.Meta.Source, t.Meta.Destination, t.Meta.Upstream, statusOrUnknown(t.Status))
	if t.Status != StatusSealed {
		comment += ": " + statusWarning(t.Status)
	}
	intf := pcapgo.DefaultNgInterface
	intf.Name = "intransit"
	intf.Description = "intransit session " + t.Meta.ID
	intf.Comment = comment
	intf.LinkType = layers.LinkTypeEthernet
	opts := pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{
		Application: "intransit " + version.Version,
		Comment:     comment,
	}}
	nw, err := pcapgo.NewNgWriterInterface(w, intf, opts)
	if err != nil {
		return fmt.Errorf("session %s: pcapng: %w", t.Meta.ID, err)
	}
	c := &tcpConn{w: nw, addr: [2]netip.AddrPort{src, dst}, buf: gopacket.NewSerializeBuffer()}
	if err := c.write(t); err != nil {
		return fmt.Errorf("session %s: pcapng: %w", t.Meta.ID, err)
	}
	if err := nw.Flush(); err != nil {
		return fmt.Errorf("session %s: pcapng: %w", t.Meta.ID, err)
	}
	return nil
}

// endpoints parses source and destination. v4-mapped addresses are IPv4;
// a v4/v6 mix (which no real connection has) becomes IPv6 on both ends.
func endpoints(m recording.Meta) (src, dst netip.AddrPort, err error) {
	src, err = netip.ParseAddrPort(m.Source)
	if err != nil {
		return src, dst, fmt.Errorf("source %q: %w", m.Source, err)
	}
	dst, err = netip.ParseAddrPort(m.Destination)
	if err != nil {
		return src, dst, fmt.Errorf("destination %q: %w", m.Destination, err)
	}
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	if sa.Is4() != da.Is4() {
		sa, da = netip.AddrFrom16(sa.As16()), netip.AddrFrom16(da.As16())
	}
	return netip.AddrPortFrom(sa, src.Port()), netip.AddrPortFrom(da, dst.Port()), nil
}

// tcpConn synthesises one TCP connection; side 0 is the client.
type tcpConn struct {
	w     *pcapgo.NgWriter
	addr  [2]netip.AddrPort
	next  [2]uint32 // next sequence number each side sends
	acked [2]uint32 // highest of each side's bytes the other side has acked
	ipID  [2]uint16
	last  time.Time
	buf   gopacket.SerializeBuffer
}

type tcpFlags struct{ syn, ack, psh, fin bool }

func (c *tcpConn) write(t *Transcript) error {
	start := t.Meta.Start
	if len(t.Events) > 0 && (start.IsZero() || t.Events[0].Time.Before(start)) {
		start = t.Events[0].Time
	}
	if start.IsZero() {
		start = time.Unix(0, 0)
	}
	c.last = start
	if err := c.handshake(start); err != nil {
		return err
	}
	end := c.last
	for _, ev := range t.Events {
		if ev.Time.After(end) {
			end = ev.Time
		}
		side := clientSide
		switch ev.Dir {
		case recording.DirClientToServer:
		case recording.DirServerToClient:
			side = serverSide
		default:
			continue
		}
		var data []byte
		var comment string
		switch ev.Kind {
		case EventHead:
			data = wireHead(ev.Exchange, ev.Message)
			comment = headComment(ev.Exchange, ev.Message)
		case EventBody:
			if bodyless(ev.Exchange, ev.Message) {
				continue // the framing written says there is none
			}
			data = ev.Data
		case EventData:
			data = ev.Data
		default:
			continue
		}
		if err := c.send(ev.Time, side, data, comment); err != nil {
			return err
		}
	}
	if t.End != nil && t.End.End.After(end) {
		end = t.End.End
	}
	return c.close(end)
}

func (c *tcpConn) handshake(ts time.Time) error {
	opts := []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionData: []byte{synMSS >> 8, synMSS & 0xff}},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{winShift}},
	}
	c.next = [2]uint32{clientISN, serverISN}
	if err := c.packet(ts, clientSide, tcpFlags{syn: true}, nil, opts, ""); err != nil {
		return err
	}
	c.next[clientSide]++
	if err := c.packet(ts, serverSide, tcpFlags{syn: true, ack: true}, nil, opts, ""); err != nil {
		return err
	}
	c.next[serverSide]++
	return c.packet(ts, clientSide, tcpFlags{ack: true}, nil, nil, "")
}

// send writes one write of side as segments of at most mss bytes, PSH on
// the last. Now and then the other side acknowledges, as a real peer
// would, so that analysers see no unacknowledged flood.
func (c *tcpConn) send(ts time.Time, side int, data []byte, comment string) error {
	for len(data) > 0 {
		n := min(len(data), mss)
		f := tcpFlags{ack: true, psh: n == len(data)}
		if err := c.packet(ts, side, f, data[:n], nil, comment); err != nil {
			return err
		}
		comment = ""
		c.next[side] += uint32(n)
		data = data[n:]
		if c.next[side]-c.acked[side] >= ackEvery {
			if err := c.packet(ts, 1-side, tcpFlags{ack: true}, nil, nil, ""); err != nil {
				return err
			}
		}
	}
	return nil
}

// close: the client sends FIN, the server answers FIN, the client acks.
func (c *tcpConn) close(ts time.Time) error {
	if err := c.packet(ts, clientSide, tcpFlags{fin: true, ack: true}, nil, nil, ""); err != nil {
		return err
	}
	c.next[clientSide]++
	if err := c.packet(ts, serverSide, tcpFlags{fin: true, ack: true}, nil, nil, ""); err != nil {
		return err
	}
	c.next[serverSide]++
	return c.packet(ts, clientSide, tcpFlags{ack: true}, nil, nil, "")
}

// packet serialises and writes one segment from side with seq next[side]
// and, with ACK, ack next[other side].
func (c *tcpConn) packet(ts time.Time, side int, f tcpFlags, payload []byte, opts []layers.TCPOption, comment string) error {
	// Timestamps never go backwards, whatever the recorded clock did.
	if ts.Before(c.last) {
		ts = c.last
	}
	c.last = ts
	from, to := c.addr[side], c.addr[1-side]
	eth := &layers.Ethernet{SrcMAC: clientMAC, DstMAC: serverMAC}
	if side == serverSide {
		eth.SrcMAC, eth.DstMAC = serverMAC, clientMAC
	}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(from.Port()),
		DstPort: layers.TCPPort(to.Port()),
		Seq:     c.next[side],
		SYN:     f.syn, ACK: f.ack, PSH: f.psh, FIN: f.fin,
		Window:  window,
		Options: opts,
	}
	if f.ack {
		tcp.Ack = c.next[1-side]
		c.acked[1-side] = c.next[1-side]
	}
	var ip gopacket.NetworkLayer
	if from.Addr().Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		c.ipID[side]++
		ip4 := &layers.IPv4{
			Version: 4, IHL: 5, TTL: 64, Id: c.ipID[side], Flags: layers.IPv4DontFragment,
			Protocol: layers.IPProtocolTCP,
			SrcIP:    from.Addr().AsSlice(), DstIP: to.Addr().AsSlice(),
		}
		ip = ip4
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip = &layers.IPv6{
			Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: from.Addr().AsSlice(), DstIP: to.Addr().AsSlice(),
		}
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		return fmt.Errorf("checksum: %w", err)
	}
	opt := gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}
	if err := gopacket.SerializeLayers(c.buf, opt, eth, ip.(gopacket.SerializableLayer), tcp, gopacket.Payload(payload)); err != nil {
		return fmt.Errorf("serialise: %w", err)
	}
	data := c.buf.Bytes()
	ci := gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(data), Length: len(data)}
	var po pcapgo.NgPacketOptions
	if comment != "" {
		po.Comments = []string{comment}
	}
	if err := c.w.WritePacketWithOptions(ci, data, po); err != nil {
		return fmt.Errorf("write packet: %w", err)
	}
	return nil
}

// wireHead re-serialises a message head as HTTP/1.x with framing that
// matches the recorded body: Transfer-Encoding and Content-Length give way
// to Content-Length: len(body). Messages without a body by definition keep
// none (and 1xx/204 no framing headers at all).
func wireHead(ex *Exchange, m *Message) []byte {
	h := m.Head
	var b bytes.Buffer
	proto := wireSafe(h.Proto)
	if proto == "" {
		proto = "HTTP/1.1"
	}
	if h.Request {
		fmt.Fprintf(&b, "%s %s %s\r\n", wireSafe(h.Method), wireSafe(h.Target), proto)
	} else {
		fmt.Fprintf(&b, "%s %03d %s\r\n", proto, h.Status, wireSafe(h.Reason))
	}
	noBody := bodyless(ex, m)
	framed := false // the original had framing headers
	for _, hd := range h.Headers {
		if isFraming(hd.Name) {
			framed = true
		}
	}
	// A request without framing has no body; a response without framing
	// would be read until close, so responses always get a length.
	withLength := !noBody && (len(m.Body) > 0 || framed || !h.Request)
	wrote := false
	for _, hd := range h.Headers {
		if isFraming(hd.Name) {
			switch {
			case withLength && !wrote:
				fmt.Fprintf(&b, "Content-Length: %d\r\n", len(m.Body))
				wrote = true
			case noBody && keepsLength(ex, m) && strings.EqualFold(hd.Name, "Content-Length"):
				// HEAD and 304 responses may state the representation's
				// length; it frames nothing.
				fmt.Fprintf(&b, "%s: %s\r\n", wireSafe(hd.Name), wireSafe(hd.Value))
			}
			continue
		}
		fmt.Fprintf(&b, "%s: %s\r\n", wireSafe(hd.Name), wireSafe(hd.Value))
	}
	if withLength && !wrote {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(m.Body))
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

func isFraming(name string) bool {
	return strings.EqualFold(name, "Content-Length") || strings.EqualFold(name, "Transfer-Encoding")
}

// keepsLength: bodyless responses whose Content-Length is informative.
func keepsLength(ex *Exchange, m *Message) bool {
	if m.Head.Status == 304 {
		return true
	}
	return m.Head.Status >= 200 && ex != nil && ex.Request != nil && ex.Request.Head.Method == "HEAD"
}

// wireSafe keeps a recorded field from breaking the message framing.
func wireSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
}

// headComment labels the first packet of each HTTP message.
func headComment(ex *Exchange, m *Message) string {
	what := "request"
	if !m.Head.Request {
		what = "response"
		if isInterim(m) {
			what = "interim response"
		}
	}
	s := "intransit exchange " + strconv.FormatUint(uint64(ex.N), 10) + " " + what
	if !m.Complete {
		s += " (incomplete in the recording)"
	}
	if int64(len(m.Body)) != m.BodySize {
		s += fmt.Sprintf(" (body: %d bytes recorded of %d on the wire)", len(m.Body), m.BodySize)
	}
	return s
}
