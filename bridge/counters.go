package bridge

import "sync/atomic"

// Counters are a port's traffic counters. Every frame the port reads is
// counted in RxFrames and then is either forwarded (to one port or
// flooded) or counted in exactly one of the Rx drop counters. Frames queued
// to the port for sending end up in TxFrames, DropQueueFull or
// DropTxError.
type Counters struct {
	RxFrames, RxBytes uint64 // frames read from the port, dropped ones included
	TxFrames, TxBytes uint64 // frames written to the port

	DropRunt      uint64 // rx: shorter than an Ethernet header (14 bytes)
	DropOversize  uint64 // rx: longer than the bridge's MTU allows
	DropInvalid   uint64 // rx: source MAC multicast or zero, or an Offload (checksum or GSO headers) that does not fit the frame
	DropFiltered  uint64 // rx: refused by port security
	DropSamePort  uint64 // rx: destination is behind the ingress port and hairpin is off
	DropLinkLocal uint64 // rx: to a reserved IEEE 802.1D group (01:80:C2:00:00:01-0F: pause, LACP, 802.1X, LLDP), which a bridge does not forward
	DropDetached  uint64 // rx: read while the port was being detached

	DropQueueFull uint64 // tx: the transmit queue was full
	DropTxError   uint64 // tx: WriteFrames failed to send them, or the port went away with them queued
}

// RxDropped is the sum of the receive-side drop counters.
func (c Counters) RxDropped() uint64 {
	return c.DropRunt + c.DropOversize + c.DropInvalid + c.DropFiltered + c.DropSamePort + c.DropLinkLocal + c.DropDetached
}

// counters is the live form of Counters. Each field is written by one
// goroutine (the port's receive or transmit loop, or, for dropQueueFull,
// any ingress port) and read by anyone.
type counters struct {
	rxFrames, rxBytes atomic.Uint64
	txFrames, txBytes atomic.Uint64
	dropRunt          atomic.Uint64
	dropOversize      atomic.Uint64
	dropInvalid       atomic.Uint64
	dropFiltered      atomic.Uint64
	dropSamePort      atomic.Uint64
	dropLinkLocal     atomic.Uint64
	dropDetached      atomic.Uint64
	dropQueueFull     atomic.Uint64
	dropTxError       atomic.Uint64
}

func (c *counters) snapshot() Counters {
	return Counters{
		RxFrames:      c.rxFrames.Load(),
		RxBytes:       c.rxBytes.Load(),
		TxFrames:      c.txFrames.Load(),
		TxBytes:       c.txBytes.Load(),
		DropRunt:      c.dropRunt.Load(),
		DropOversize:  c.dropOversize.Load(),
		DropInvalid:   c.dropInvalid.Load(),
		DropFiltered:  c.dropFiltered.Load(),
		DropSamePort:  c.dropSamePort.Load(),
		DropLinkLocal: c.dropLinkLocal.Load(),
		DropDetached:  c.dropDetached.Load(),
		DropQueueFull: c.dropQueueFull.Load(),
		DropTxError:   c.dropTxError.Load(),
	}
}
