package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// summarize reads a classic pcap stream of Ethernet frames and returns, in
// tcpdump's style, a line for each TCP segment to or from port clientPort.
func summarize(pcap []byte, clientPort string) []string {
	if len(pcap) < 24 {
		return nil
	}
	var lines []string
	for b := pcap[24:]; len(b) >= 16; {
		n := int(binary.LittleEndian.Uint32(b[8:12]))
		if len(b) < 16+n {
			break
		}
		frame := b[16 : 16+n]
		b = b[16+n:]
		if l, ok := tcpLine(frame); ok && strings.Contains(l, "."+clientPort+" ") {
			lines = append(lines, l)
		}
	}
	return lines
}

var flagNames = []struct {
	bit  byte
	name string
}{{0x02, "S"}, {0x01, "F"}, {0x04, "R"}, {0x08, "P"}}

// tcpLine formats an Ethernet frame carrying IPv4 TCP as tcpdump -n does,
// in short: "IP 192.168.2.104.52140 > 192.168.2.116.8080: Flags [S], length 0".
func tcpLine(f []byte) (string, bool) {
	if len(f) < 14+20 || f[12] != 0x08 || f[13] != 0x00 {
		return "", false
	}
	ip := f[14:]
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if ip[9] != 6 || ihl < 20 || len(ip) < ihl+20 || total < ihl+20 || total > len(ip) {
		return "", false
	}
	tcp := ip[ihl:total]
	src := netip.AddrFrom4([4]byte(ip[12:16]))
	dst := netip.AddrFrom4([4]byte(ip[16:20]))
	var flags strings.Builder
	for _, fl := range flagNames {
		if tcp[13]&fl.bit != 0 {
			flags.WriteString(fl.name)
		}
	}
	if tcp[13]&0x10 != 0 {
		flags.WriteString(".")
	}
	data := len(tcp) - int(tcp[12]>>4)*4
	return fmt.Sprintf("IP %s.%s > %s.%s: Flags [%s], length %d",
		src, strconv.Itoa(int(binary.BigEndian.Uint16(tcp[0:2]))),
		dst, strconv.Itoa(int(binary.BigEndian.Uint16(tcp[2:4]))),
		flags.String(), data), true
}
