package bridge

import (
	"time"

	"github.com/usernat/usernat/internal/busypoll"
)

// DefaultBusyPoll is the longest the process's event loops poll before
// they sleep, unless SetBusyPoll says otherwise: the default of the
// kernel's cpuidle-haltpoll (guest_halt_poll_ns). On Linux only.
const DefaultBusyPoll = busypoll.DefaultLimit

// SetBusyPoll sets the longest the event loops of this process (the TAP
// devices' readers, and nat/hostnet's poller of host sockets) poll before
// they sleep; 0 turns polling off. It applies to the whole process.
//
// A loop that sleeps in epoll_wait is woken by the next packet at the
// price of its CPU's wake-up, tens of microseconds in a virtual machine,
// paid twice by a request and its answer through the gateway. A loop
// that ran dry polls instead, for at most this long, and takes the packet
// at once. One loop polls at a time, for all: it serves the others'
// packets itself (the TAP devices', the host uplink's sockets', its
// datagram flows' too), so that no goroutine is woken between a packet's
// coming in and its going out, and gives way to the process's goroutines
// that can run and to the machine's other threads; what other goroutines wait for on Go's network
// poller (an API socket's client) waits for the poll to end, at most
// this long. The time it polls adapts, as
// haltpoll's does: it grows while packets come within the limit of a
// loop's going to sleep, and shrinks to nothing when they do not, so a
// trickle of packets costs next to no CPU and an idle network none.
func SetBusyPoll(d time.Duration) { busypoll.SetLimit(d) }

// BusyPoll returns the limit SetBusyPoll set, DefaultBusyPoll at first
// (0 where polling is off, as on systems other than Linux).
func BusyPoll() time.Duration { return busypoll.Limit() }
