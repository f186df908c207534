package redirect

import (
	"encoding/binary"
	"net/netip"
)

// htons turns a host-order port into the value whose in-memory bytes are in
// network order, which is how the programs store ports.
func htons(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func ntohs(p uint16) uint16 { return htons(p) }

// addrFrom16 turns the programs' 16-byte form back into an address, unmapping
// IPv4.
func addrFrom16(b [16]byte) netip.Addr {
	return netip.AddrFrom16(b).Unmap()
}

func htonl(v uint32) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return binary.NativeEndian.Uint32(b[:])
}
