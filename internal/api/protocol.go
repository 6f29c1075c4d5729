package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// The commands a Server answers.
const (
	CmdAddHostFwd     = "add_hostfwd"
	CmdListHostFwd    = "list_hostfwd"
	CmdRemoveHostFwd  = "remove_hostfwd"
	CmdConntrackList  = "conntrack_list"
	CmdConntrackFlush = "conntrack_flush"
	CmdNATList        = "nat_list"
	CmdFDBList        = "fdb_list"
	CmdStats          = "stats"
)

// Request is one request on the socket.
type Request struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
}

// Response is the answer to a Request: exactly one of Return and Error is
// set, and with list_hostfwd's Return, Entries too.
type Response struct {
	Return json.RawMessage `json:"return,omitempty"`
	Error  *Error          `json:"error,omitempty"`
	// Entries are list_hostfwd's entries again, at the top level, where
	// slirp4netns 1.2.0 puts them (its manual has them under "return",
	// where they are too). A client reads either; slirp4netns itself
	// sends this alone.
	Entries json.RawMessage `json:"entries,omitempty"`
}

// Error is an error the server answered with. Client methods return it as
// is, so callers can tell a refused request from a failed connection.
type Error struct {
	Desc string `json:"desc"`
}

func (e *Error) Error() string { return e.Desc }

// HostFwd is a published port, which slirp4netns calls a host forward:
// traffic of Proto to HostAddr:HostPort goes to GuestAddr:GuestPort.
//
// HostAddr 0.0.0.0 (or ::) means every address of the host; a request
// without host_addr means 0.0.0.0. A request without guest_addr leaves
// GuestAddr invalid, for the Backend to choose or refuse. A request's
// proto may also be tcp4 or udp4 (IPv4 alone, as proposed for
// slirp4netns, whose 1.2 refuses them), taken as tcp or udp.
//
// HostPortEnd and GuestPortEnd, when not zero, make the forward a range of
// ports HostPort..HostPortEnd to GuestPort..GuestPortEnd, which is as long
// or a single port (every host port to the one guest port, as Docker's
// -p 8000-8009:80); zero means a single port.
type HostFwd struct {
	ID           int        `json:"id,omitempty"`
	Proto        string     `json:"proto"`
	HostAddr     netip.Addr `json:"host_addr"`
	HostPort     int        `json:"host_port"`
	HostPortEnd  int        `json:"host_port_end,omitempty"`
	GuestAddr    netip.Addr `json:"guest_addr"`
	GuestPort    int        `json:"guest_port"`
	GuestPortEnd int        `json:"guest_port_end,omitempty"`
}

// Check reports what is wrong with f as a request to add it, irrespective
// of the backend: the protocol, the port numbers and ranges.
func (f HostFwd) Check() error {
	if f.Proto != "tcp" && f.Proto != "udp" {
		return fmt.Errorf("proto %q: want tcp or udp", f.Proto)
	}
	if !f.HostAddr.IsValid() {
		return errors.New("host_addr is not an IP address")
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"host_port", f.HostPort}, {"guest_port", f.GuestPort}} {
		if p.v < 1 || p.v > 65535 {
			return fmt.Errorf("%s %d: want 1 to 65535", p.name, p.v)
		}
	}
	hn, gn := f.HostPorts(), f.GuestPorts()
	switch {
	case f.HostPortEnd != 0 && (f.HostPortEnd < f.HostPort || f.HostPortEnd > 65535):
		return fmt.Errorf("host ports %d-%d: not a range", f.HostPort, f.HostPortEnd)
	case f.GuestPortEnd != 0 && (f.GuestPortEnd < f.GuestPort || f.GuestPortEnd > 65535):
		return fmt.Errorf("guest ports %d-%d: not a range", f.GuestPort, f.GuestPortEnd)
	case gn != 1 && hn != gn:
		return fmt.Errorf("host ports %d-%d and guest ports %d-%d: ranges of different lengths",
			f.HostPort, f.HostPort+hn-1, f.GuestPort, f.GuestPort+gn-1)
	}
	return nil
}

// HostPorts returns the number of host ports.
func (f HostFwd) HostPorts() int {
	if f.HostPortEnd == 0 {
		return 1
	}
	return f.HostPortEnd - f.HostPort + 1
}

// GuestPorts returns the number of guest ports.
func (f HostFwd) GuestPorts() int {
	if f.GuestPortEnd == 0 {
		return 1
	}
	return f.GuestPortEnd - f.GuestPort + 1
}

// Backend carries out the slirp4netns commands.
type Backend interface {
	// AddHostFwd adds a forward that passed HostFwd.Check and returns its
	// id, a positive number unique among the forwards in place.
	AddHostFwd(f HostFwd) (id int, err error)
	// ListHostFwd lists the forwards with their ids.
	ListHostFwd() ([]HostFwd, error)
	// RemoveHostFwd removes the forward with the id.
	RemoveHostFwd(id int) error
}

// Inspector carries out usernat's own commands. A Server whose Backend is
// not an Inspector answers them with an error.
type Inspector interface {
	// ConntrackList writes the connection-tracking table, one entry a line
	// as `conntrack -L` prints it.
	ConntrackList(w io.Writer) error
	// ConntrackFlush deletes every entry and returns how many there were.
	ConntrackFlush() (int, error)
	// NATList writes the NAT rules as `iptables -t nat -L -n` lists them.
	NATList(w io.Writer) error
	// FDBList writes the forwarding database as `bridge fdb show` does.
	FDBList(w io.Writer) error
	// Stats returns counters by name, such as "gateway.forwarded".
	Stats() (map[string]uint64, error)
}

// Results of the commands, as the "return" member carries them.
type (
	// AddResult is what add_hostfwd returns.
	AddResult struct {
		ID int `json:"id"`
	}
	// ListResult is what list_hostfwd returns.
	ListResult struct {
		Entries []HostFwd `json:"entries"`
	}
	// RemoveArgs are the arguments of remove_hostfwd.
	RemoveArgs struct {
		ID int `json:"id"`
	}
	// TextResult is what conntrack_list, nat_list and fdb_list return.
	TextResult struct {
		Text string `json:"text"`
	}
	// FlushResult is what conntrack_flush returns.
	FlushResult struct {
		Deleted int `json:"deleted"`
	}
	// StatsResult is what stats returns.
	StatsResult struct {
		Counters map[string]uint64 `json:"counters"`
	}
)
