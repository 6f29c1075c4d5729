package rtnl

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// message builds one netlink request: a header, a fixed part and
// attributes, each padded to 4 bytes as NLMSG_ALIGN and RTA_ALIGN want.
type message struct {
	b     []byte
	typ   uint16
	flags uint16
}

func newMessage(typ, flags uint16) *message {
	return &message{b: make([]byte, unix.SizeofNlMsghdr, 128), typ: typ, flags: flags | unix.NLM_F_REQUEST}
}

func (m *message) ifInfo(family byte, index int32, flags, change uint32) {
	var h [unix.SizeofIfInfomsg]byte
	h[0] = family
	binary.NativeEndian.PutUint32(h[4:], uint32(index))
	binary.NativeEndian.PutUint32(h[8:], flags)
	binary.NativeEndian.PutUint32(h[12:], change)
	m.b = append(m.b, h[:]...)
}

func (m *message) ifAddr(family, prefixLen byte, index uint32) {
	var h [unix.SizeofIfAddrmsg]byte
	h[0] = family
	h[1] = prefixLen
	h[3] = unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(h[4:], index)
	m.b = append(m.b, h[:]...)
}

func (m *message) rtMsg(family, dstLen, table, proto, scope, typ byte) {
	var h [unix.SizeofRtMsg]byte
	h[0] = family
	h[1] = dstLen
	h[4] = table
	h[5] = proto
	h[6] = scope
	h[7] = typ
	m.b = append(m.b, h[:]...)
}

func (m *message) attr(typ uint16, data []byte) {
	var h [unix.SizeofRtAttr]byte
	binary.NativeEndian.PutUint16(h[0:], uint16(unix.SizeofRtAttr+len(data)))
	binary.NativeEndian.PutUint16(h[2:], typ)
	m.b = append(m.b, h[:]...)
	m.b = append(m.b, data...)
	for len(m.b)%4 != 0 {
		m.b = append(m.b, 0)
	}
}

// finish fills in the header and returns the message.
func (m *message) finish(seq uint32) []byte {
	binary.NativeEndian.PutUint32(m.b[0:], uint32(len(m.b)))
	binary.NativeEndian.PutUint16(m.b[4:], m.typ)
	binary.NativeEndian.PutUint16(m.b[6:], m.flags)
	binary.NativeEndian.PutUint32(m.b[8:], seq)
	binary.NativeEndian.PutUint32(m.b[12:], 0) // the kernel fills in our port id
	return m.b
}
