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

	DropRunt     uint64 // rx: shorter than an Ethernet header (14 bytes)
	DropOversize uint64 // rx: longer than the bridge's MTU allows
	DropInvalid  uint64 // rx: source MAC multicast or zero
	DropFiltered uint64 // rx: refused by port security
	DropSamePort uint64 // rx: destination is behind the ingress port and hairpin is off

	DropQueueFull uint64 // tx: the transmit queue was full
	DropTxError   uint64 // tx: WriteFrames failed to send them
}

// RxDropped is the sum of the receive-side drop counters.
func (c Counters) RxDropped() uint64 {
	return c.DropRunt + c.DropOversize + c.DropInvalid + c.DropFiltered + c.DropSamePort
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
		DropQueueFull: c.dropQueueFull.Load(),
		DropTxError:   c.dropTxError.Load(),
	}
}
