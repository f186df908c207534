package transcript

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/intransit/intransit/pkg/recording"
)

// pkt is one decoded packet of a capture.
type pkt struct {
	ts       time.Time
	src, dst netip.AddrPort
	tcp      *layers.TCP
	payload  []byte
	comments []string
}

// readCapture parses a pcapng with pcapgo and checks what tshark would:
// decodable Ethernet/IP/TCP and valid IP and TCP checksums (verified here
// independently of gopacket, which computed them).
func readCapture(t *testing.T, data []byte) []pkt {
	t.Helper()
	r, err := pcapgo.NewNgReader(bytes.NewReader(data), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatalf("pcapng: %v", err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Fatalf("link type %v", r.LinkType())
	}
	var out []pkt
	for i := 1; ; i++ {
		d, ci, opts, err := r.ReadPacketDataWithOptions()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		p := gopacket.NewPacket(d, layers.LayerTypeEthernet, gopacket.Default)
		if el := p.ErrorLayer(); el != nil {
			t.Fatalf("packet %d: %v", i, el.Error())
		}
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if tcp == nil {
			t.Fatalf("packet %d: no TCP", i)
		}
		var src, dst netip.Addr
		var pseudo []byte
		switch ip := p.NetworkLayer().(type) {
		case *layers.IPv4:
			if fold(sum16(ip.Contents, 0)) != 0xffff {
				t.Errorf("packet %d: bad IPv4 header checksum", i)
			}
			src, _ = netip.AddrFromSlice(ip.SrcIP)
			dst, _ = netip.AddrFromSlice(ip.DstIP)
		case *layers.IPv6:
			src, _ = netip.AddrFromSlice(ip.SrcIP)
			dst, _ = netip.AddrFromSlice(ip.DstIP)
		default:
			t.Fatalf("packet %d: network layer %T", i, ip)
		}
		seg := append(append([]byte(nil), tcp.Contents...), tcp.Payload...)
		pseudo = append(append(pseudo, src.AsSlice()...), dst.AsSlice()...)
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(seg)))
		pseudo = append(pseudo, 0, 0, 0, byte(layers.IPProtocolTCP))
		if fold(sum16(seg, sum16(pseudo, 0))) != 0xffff {
			t.Errorf("packet %d: bad TCP checksum", i)
		}
		out = append(out, pkt{
			ts:  ci.Timestamp,
			src: netip.AddrPortFrom(src, uint16(tcp.SrcPort)), dst: netip.AddrPortFrom(dst, uint16(tcp.DstPort)),
			tcp: tcp, payload: tcp.Payload, comments: opts.Comments,
		})
	}
	return out
}

func sum16(b []byte, s uint32) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint32 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return s
}

// checkTCP checks the synthesised connection: handshake, sequence and
// acknowledgement numbers continuous per direction, segment sizes, PSH,
// monotonic time, FIN exchange. It returns each direction's bytes.
func checkTCP(t *testing.T, pkts []pkt) (client, server []byte) {
	t.Helper()
	if len(pkts) < 6 {
		t.Fatalf("%d packets", len(pkts))
	}
	syn, synack, ack := pkts[0].tcp, pkts[1].tcp, pkts[2].tcp
	if !syn.SYN || syn.ACK || !synack.SYN || !synack.ACK || ack.SYN || !ack.ACK {
		t.Fatalf("handshake flags: %+v %+v %+v", syn, synack, ack)
	}
	clientAddr := pkts[0].src
	var next [2]uint32
	var started [2]bool
	var streams [2][]byte
	for i, p := range pkts {
		side := 1
		if p.src == clientAddr {
			side = 0
		} else if p.dst != clientAddr {
			t.Fatalf("packet %d: %v -> %v is not this connection", i+1, p.src, p.dst)
		}
		if i > 0 && p.ts.Before(pkts[i-1].ts) {
			t.Errorf("packet %d: time goes backwards", i+1)
		}
		if !started[side] {
			started[side] = true
			next[side] = p.tcp.Seq
		}
		if p.tcp.Seq != next[side] {
			t.Fatalf("packet %d (side %d): seq %d, want %d", i+1, side, p.tcp.Seq, next[side])
		}
		if p.tcp.ACK && p.tcp.Ack != next[1-side] {
			t.Fatalf("packet %d (side %d): ack %d, want %d", i+1, side, p.tcp.Ack, next[1-side])
		}
		if len(p.payload) > 1448 {
			t.Errorf("packet %d: %d bytes of payload", i+1, len(p.payload))
		}
		if len(p.payload) == 0 && p.tcp.PSH {
			t.Errorf("packet %d: PSH without data", i+1)
		}
		next[side] += uint32(len(p.payload))
		if p.tcp.SYN || p.tcp.FIN {
			next[side]++
		}
		streams[side] = append(streams[side], p.payload...)
	}
	n := len(pkts)
	if !pkts[n-3].tcp.FIN || pkts[n-3].src != clientAddr || !pkts[n-2].tcp.FIN || pkts[n-2].src == clientAddr ||
		pkts[n-1].tcp.FIN || !pkts[n-1].tcp.ACK {
		t.Errorf("no FIN/ACK exchange at the end")
	}
	return streams[0], streams[1]
}

func capture(t *testing.T, tr *Transcript) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := PCAPNG(tr, &buf); err != nil {
		t.Fatalf("PCAPNG: %v", err)
	}
	return buf.Bytes()
}

func TestPCAPNGStreams(t *testing.T) {
	tr := mustBuild(t, httpSession(t))
	data := capture(t, tr)
	pkts := readCapture(t, data)
	client, server := checkTCP(t, pkts)

	if pkts[0].src.String() != "10.1.2.3:40000" || pkts[0].dst.String() != "93.184.216.34:80" {
		t.Errorf("endpoints %v -> %v", pkts[0].src, pkts[0].dst)
	}
	if !pkts[0].ts.Equal(t0) || !pkts[len(pkts)-1].ts.Equal(t0.Add(time.Second)) {
		t.Errorf("handshake at %v, FIN at %v", pkts[0].ts, pkts[len(pkts)-1].ts)
	}
	wantClient := "GET /index.html?q=a%20b&x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n" +
		"Authorization: [REDACTED]\r\nCookie: session=[REDACTED]; theme=dark\r\n\r\n" +
		"POST /api/items HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/json\r\nContent-Length: 39\r\n" +
		"Expect: 100-continue\r\n\r\n" + postBody +
		"HEAD /big HTTP/1.1\r\nHost: example.com\r\n\r\n" +
		"GET /chat HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n" +
		"HELLO\r\n" + ansiRaw
	if string(client) != wantClient {
		t.Errorf("client stream:\n%q\nwant\n%q", client, wantClient)
	}
	wantServer := "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 25\r\n" +
		"Set-Cookie: id=[REDACTED]; Path=/; HttpOnly\r\n\r\n<html>hello world</html>\n" +
		"HTTP/1.1 100 Continue\r\n\r\n" +
		"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 8\r\nLocation: /api/items/7\r\n\r\n" + createdBody +
		"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 123456\r\n\r\n" +
		"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n" +
		"HELLO\r\n" + binaryRaw
	if string(server) != wantServer {
		t.Errorf("server stream:\n%q\nwant\n%q", server, wantServer)
	}
	if len(postBody) != 39 {
		t.Fatalf("fixture: post body is %d bytes", len(postBody))
	}

	// Each message's first packet says which exchange it is.
	var comments []string
	for _, p := range pkts {
		comments = append(comments, p.comments...)
	}
	if len(comments) != 9 || comments[0] != "intransit exchange 1 request" ||
		comments[2] != "intransit exchange 2 request (body: 39 bytes recorded of 44 on the wire)" ||
		comments[3] != "intransit exchange 2 interim response" {
		t.Errorf("packet comments %q", comments)
	}

	// The section and interface name the session.
	r, err := pcapgo.NewNgReader(bytes.NewReader(data), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	intf, err := r.Interface(0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.SectionInfo().Comment, "0123456789abcdef") || !strings.Contains(intf.Comment, "0123456789abcdef") {
		t.Errorf("section comment %q, interface comment %q", r.SectionInfo().Comment, intf.Comment)
	}
}

// largeSession has a 150 KiB upload in three chunks and a 200 KiB
// download in one.
func largeSession(t *testing.T) (Input, []byte, []byte) {
	r := &rec{tb: t}
	m := testMeta()
	r.meta(m)
	up := bytes.Repeat([]byte("0123456789abcdef"), 150*1024/16)
	down := make([]byte, 200*1024)
	for i := range down {
		down[i] = byte(i * 7)
	}
	ms := time.Millisecond
	r.request(0, 1, "POST", "/upload", "Host", "example.com", "Transfer-Encoding", "chunked", "Content-Type", "application/octet-stream")
	for i := 0; i < 3; i++ {
		r.add(time.Duration(i)*ms, recording.KindHTTPBody, c2s, 1, up[i*50*1024:(i+1)*50*1024])
	}
	r.end(2*ms, c2s, 1, int64(len(up)))
	r.response(10*ms, 1, 200, "OK", "Content-Type", "application/octet-stream", "Content-Length", "204800")
	r.add(20*ms, recording.KindHTTPBody, s2c, 1, down)
	r.end(20*ms, s2c, 1, int64(len(down)))
	return r.finish(m, 30*ms, int64(len(up)), int64(len(down))), up, down
}

func TestPCAPNGLargeBody(t *testing.T) {
	in, up, down := largeSession(t)
	pkts := readCapture(t, capture(t, mustBuild(t, in)))
	client, server := checkTCP(t, pkts)
	if !bytes.HasSuffix(client, up) || !bytes.Contains(client, []byte("Content-Length: 153600\r\n")) || bytes.Contains(client, []byte("chunked")) {
		t.Errorf("upload not re-framed (%d bytes)", len(client))
	}
	if !bytes.HasSuffix(server, down) {
		t.Errorf("download not carried whole (%d bytes)", len(server))
	}
	// A write is split into full segments, PSH only on its last one.
	var data, psh int
	for _, p := range pkts {
		if len(p.payload) > 0 {
			data++
			if p.tcp.PSH {
				psh++
			} else if len(p.payload) != 1448 {
				t.Errorf("non-final segment of %d bytes", len(p.payload))
			}
		}
	}
	if data < (len(up)+len(down))/1448 || psh != 6 { // 2 heads + 3 upload pieces + 1 download
		t.Errorf("%d data segments, %d with PSH", data, psh)
	}
}

func TestPCAPNGIPv6AndMapped(t *testing.T) {
	for _, tc := range []struct{ src, dst, wantSrc, wantDst string }{
		{"[2001:db8::1]:40000", "[2001:db8::2]:80", "[2001:db8::1]:40000", "[2001:db8::2]:80"},
		{"[::ffff:10.0.0.1]:5555", "[::ffff:10.0.0.2]:80", "10.0.0.1:5555", "10.0.0.2:80"},
		{"10.0.0.1:5555", "[2001:db8::2]:80", "[::ffff:10.0.0.1]:5555", "[2001:db8::2]:80"},
	} {
		in := httpSession(t)
		in.Meta.Source, in.Meta.Destination = tc.src, tc.dst
		pkts := readCapture(t, capture(t, mustBuild(t, in)))
		checkTCP(t, pkts)
		if pkts[0].src.String() != tc.wantSrc || pkts[0].dst.String() != tc.wantDst {
			t.Errorf("%s -> %s: capture has %v -> %v", tc.src, tc.dst, pkts[0].src, pkts[0].dst)
		}
	}
}

func TestPCAPNGBadAddress(t *testing.T) {
	in := httpSession(t)
	in.Meta.Destination = "tunnel://peer"
	var buf bytes.Buffer
	if err := PCAPNG(mustBuild(t, in), &buf); err == nil || !strings.Contains(err.Error(), "destination") {
		t.Errorf("err = %v", err)
	}
}

func rawSession(t *testing.T) Input {
	r := &rec{tb: t}
	m := testMeta()
	m.Destination = "192.0.2.10:6379"
	r.meta(m)
	r.note(0, c2s, "raw", "not HTTP")
	r.data(time.Millisecond, c2s, "*1\r\n$4\r\nPING\r\n")
	r.data(2*time.Millisecond, s2c, "+PONG\r\n")
	r.data(3*time.Millisecond, c2s, "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n")
	r.data(4*time.Millisecond, s2c, "$5\r\nvalue\r\n")
	return r.finish(m, 5*time.Millisecond, 37, 18)
}

func TestPCAPNGRaw(t *testing.T) {
	pkts := readCapture(t, capture(t, mustBuild(t, rawSession(t))))
	client, server := checkTCP(t, pkts)
	if string(client) != "*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n" || string(server) != "+PONG\r\n$5\r\nvalue\r\n" {
		t.Errorf("streams %q / %q", client, server)
	}
}

// Wireshark's own view of the captures.

func needTshark(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("tshark")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tshark is not on PATH and CI=true: CI must install it (apt-get install -y tshark) so that the pcapng export is checked by Wireshark's dissectors")
		}
		t.Skip("tshark not on PATH: skipping the Wireshark dissection checks (DEBIAN_FRONTEND=noninteractive apt-get install -y tshark)")
	}
	return path
}

type tsharkFile struct {
	t    *testing.T
	bin  string
	file string
}

func writeTshark(t *testing.T, tr *Transcript) tsharkFile {
	bin := needTshark(t)
	file := filepath.Join(t.TempDir(), "session.pcapng")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := PCAPNG(tr, f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return tsharkFile{t: t, bin: bin, file: file}
}

func (f tsharkFile) run(args ...string) string {
	f.t.Helper()
	cmd := exec.Command(f.bin, append([]string{"-r", f.file}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		f.t.Fatalf("tshark %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

// checksumOpts make tshark verify checksums (off by default, for offload).
var checksumOpts = []string{"-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"}

// fields runs tshark -T fields and returns the rows; each row ends with
// three more columns for checkClean: tcp.checksum.status,
// ip.checksum.status and _ws.expert.severity.
func (f tsharkFile) fields(names ...string) [][]string {
	f.t.Helper()
	args := append([]string{"-T", "fields"}, checksumOpts...)
	for _, n := range append(names, "tcp.checksum.status", "ip.checksum.status", "_ws.expert.severity") {
		args = append(args, "-e", n)
	}
	var rows [][]string
	for _, l := range strings.Split(strings.TrimSuffix(f.run(args...), "\n"), "\n") {
		rows = append(rows, strings.Split(l, "\t"))
	}
	return rows
}

// Expert info severities (epan/proto.h PI_WARN, PI_ERROR are above).
const expertWarn = 0x600000

// checkClean: Wireshark finds nothing wrong with the capture: no TCP
// analysis flag, nothing malformed, no expert warning or error, every
// checksum verified good. rows come from fields.
func (f tsharkFile) checkClean(rows [][]string) {
	f.t.Helper()
	summary := f.run()
	for _, bad := range []string{"ACKed unseen", "Malformed", "Previous segment", "Retransmission", "Out-Of-Order",
		"Dup ACK", "Window Full", "ZeroWindow", "Spurious", "Bad", "Unreassembled"} {
		if strings.Contains(summary, bad) {
			f.t.Errorf("tshark reports %q:\n%s", bad, summary)
		}
	}
	if got := f.run(append(checksumOpts, "-Y", "tcp.checksum.status==2 || ip.checksum.status==2")...); got != "" {
		f.t.Errorf("bad checksums:\n%s", got)
	}
	// The check is live: status 1 is "good". IPv6 has no header checksum:
	// then no frame has an IP status.
	ipv6 := rows[0][len(rows[0])-2] == ""
	for i, r := range rows {
		n := len(r)
		if r[n-3] != "1" || (r[n-2] != "1" && !(ipv6 && r[n-2] == "")) {
			f.t.Errorf("frame %d: checksum status tcp %q ip %q, want good", i+1, r[n-3], r[n-2])
		}
		for _, sev := range strings.Split(r[n-1], ",") {
			if v, err := strconv.Atoi(sev); err == nil && v >= expertWarn {
				f.t.Errorf("frame %d: expert info of severity %#x", i+1, v)
			}
		}
	}
}

// column collects a field's non-empty values, in frame order.
func column(rows [][]string, i int) []string {
	var out []string
	for _, r := range rows {
		if i < len(r) && r[i] != "" {
			out = append(out, r[i])
		}
	}
	return out
}

func equal(a, b []string) bool { return strings.Join(a, "|") == strings.Join(b, "|") }

func TestTsharkHTTP(t *testing.T) {
	t.Parallel()
	f := writeTshark(t, mustBuild(t, httpSession(t)))
	rows := f.fields("frame.number", "ip.src", "tcp.srcport", "ip.dst", "tcp.dstport", "tcp.flags.str",
		"http.request.method", "http.response.code", "http.request.uri")
	if len(rows) != 23 {
		t.Fatalf("%d frames: %q", len(rows), rows)
	}
	hs := [][]string{rows[0], rows[1], rows[2]}
	if !equal(hs[0][:5], []string{"1", "10.1.2.3", "40000", "93.184.216.34", "80"}) ||
		!equal(hs[1][:5], []string{"2", "93.184.216.34", "80", "10.1.2.3", "40000"}) ||
		!equal(hs[2][:5], []string{"3", "10.1.2.3", "40000", "93.184.216.34", "80"}) {
		t.Errorf("handshake endpoints %q", hs)
	}
	if fl := hs[0][5]; !strings.Contains(fl, "S") || strings.Contains(fl, "A") {
		t.Errorf("frame 1 flags %q, want SYN", fl)
	}
	if fl := hs[1][5]; !strings.Contains(fl, "S") || !strings.Contains(fl, "A") {
		t.Errorf("frame 2 flags %q, want SYN+ACK", fl)
	}
	if fl := hs[2][5]; strings.Contains(fl, "S") || !strings.Contains(fl, "A") {
		t.Errorf("frame 3 flags %q, want ACK", fl)
	}
	if got := column(rows, 6); !equal(got, []string{"GET", "POST", "HEAD", "GET"}) {
		t.Errorf("methods %q", got)
	}
	if got := column(rows, 7); !equal(got, []string{"200", "100", "201", "200", "101"}) {
		t.Errorf("status codes %q", got)
	}
	if got := column(rows, 8); !equal(got, []string{"/index.html?q=a%20b&x=1", "/api/items", "/big", "/chat"}) {
		t.Errorf("URIs %q", got)
	}
	// Bodies reassembled and dissected as the recorded, redacted text.
	bodies := f.fields("json.value.string", "http.content_length", "http.response_for.uri")
	if got := column(bodies, 0); !equal(got, []string{"widget,[REDACTED]"}) {
		t.Errorf("JSON strings %q", got)
	}
	if got := column(bodies, 1); !equal(got, []string{"25", "39", "8", "123456"}) {
		t.Errorf("content lengths %q", got)
	}
	follow := f.run("-q", "-z", "follow,tcp,ascii,0")
	for _, want := range []string{
		"Node 0: 10.1.2.3:40000", "Node 1: 93.184.216.34:80",
		"GET /index.html?q=a%20b&x=1 HTTP/1.1", "Authorization: [REDACTED]", "<html>hello ", "world</html>",
		"HTTP/1.1 100 Continue", `{"name":"widget","secret":"[REDACTED]"}`, "HTTP/1.1 201 Created",
		"HTTP/1.1 101 Switching Protocols", "HELLO", ".[31mred.[0m. bell",
	} {
		if !strings.Contains(follow, want) {
			t.Errorf("followed stream lacks %q:\n%s", want, follow)
		}
	}
	if strings.Contains(follow, "chunked") {
		t.Errorf("chunked framing left in the stream")
	}
	f.checkClean(rows)
}

func TestTsharkLargeBody(t *testing.T) {
	t.Parallel()
	in, _, _ := largeSession(t)
	f := writeTshark(t, mustBuild(t, in))
	rows := f.fields("frame.number", "http.request.method", "http.response.code", "http.content_length", "tcp.len")
	if got := column(rows, 1); !equal(got, []string{"POST"}) {
		t.Errorf("methods %q", got)
	}
	if got := column(rows, 2); !equal(got, []string{"200"}) {
		t.Errorf("codes %q", got)
	}
	if got := column(rows, 3); !equal(got, []string{"153600", "204800"}) {
		t.Errorf("content lengths %q", got)
	}
	if n := len(column(rows, 4)); n < 250 {
		t.Errorf("only %d frames", n)
	}
	f.checkClean(rows)
}

func TestTsharkIPv6(t *testing.T) {
	t.Parallel()
	in := httpSession(t)
	in.Meta.Source, in.Meta.Destination = "[2001:db8::1]:40000", "[2001:db8::2]:80"
	f := writeTshark(t, mustBuild(t, in))
	rows := f.fields("ipv6.src", "ipv6.dst", "tcp.dstport", "http.request.method", "http.response.code")
	if !equal(rows[0][:3], []string{"2001:db8::1", "2001:db8::2", "80"}) || !equal(rows[1][:2], []string{"2001:db8::2", "2001:db8::1"}) {
		t.Errorf("addresses %q %q", rows[0], rows[1])
	}
	if got := column(rows, 3); !equal(got, []string{"GET", "POST", "HEAD", "GET"}) {
		t.Errorf("methods %q", got)
	}
	if got := column(rows, 4); !equal(got, []string{"200", "100", "201", "200", "101"}) {
		t.Errorf("codes %q", got)
	}
	f.checkClean(rows)
}

func TestTsharkRaw(t *testing.T) {
	t.Parallel()
	f := writeTshark(t, mustBuild(t, rawSession(t)))
	rows := f.fields("ip.src", "tcp.dstport", "tcp.len")
	if len(rows) != 10 || !equal(rows[0][:2], []string{"10.1.2.3", "6379"}) {
		t.Errorf("frames %q", rows)
	}
	follow := f.run("-q", "-z", "follow,tcp,ascii,0")
	for _, want := range []string{"Node 1: 192.0.2.10:6379", "PING", "+PONG", "key", "value"} {
		if !strings.Contains(follow, want) {
			t.Errorf("followed stream lacks %q:\n%s", want, follow)
		}
	}
	f.checkClean(rows)
}
