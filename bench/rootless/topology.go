package main

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/internal/benchkit"
	"github.com/usernat/usernat/internal/netns"
	"github.com/usernat/usernat/internal/topo"
)

// The reference experiment's LAN (internal/topo's), and slirp4netns's default
// network, used only inside the namespaces made here.
var (
	clientAddr = topo.ClientAddr                         // the client on the LAN
	hostAddr   = topo.HostAddr                           // the host, where the network process runs
	routerAddr = netip.MustParsePrefix("192.168.2.1/24") // the host's default route, a second address of the client

	slirpGateway   = netip.MustParsePrefix("10.0.2.2/24")   // slirp4netns's gateway, and usernat's subnet
	slirpContainer = netip.MustParsePrefix("10.0.2.100/24") // slirp4netns's guest address

	publishedPort    = 8080 // TCP, to the container's containerPort
	containerPort    = 80
	publishedUDPPort = 5353 // UDP, to the container's containerUDPPort
	containerUDPPort = 53
	lanServerPort    = 5201 // the server in the client namespace the container connects out to

	published    = netip.AddrPortFrom(hostAddr.Addr(), uint16(publishedPort))
	publishedUDP = netip.AddrPortFrom(hostAddr.Addr(), uint16(publishedUDPPort))
	lanServer    = netip.AddrPortFrom(clientAddr.Addr(), uint16(lanServerPort))
)

const (
	eth0       = "eth0" // the LAN link of the host and the client
	tap0       = "tap0" // the container's link, as RootlessKit names it
	mtu        = 65520  // of the container's link: what RootlessKit gives slirp4netns
	portRange  = "1024 65535"
	nobodyID   = 65534 // the unprivileged user pasta and its container run as
	tunMajor   = 10
	tunMinor   = 200
	devNet     = "/dev/net"
	devNetTun  = "/dev/net/tun"
	procNetDir = "/proc/thread-self/net/" // the calling thread's namespace, inside Place.Do
)

// nsPath is a network namespace this process holds open at path: pasta's
// container, which another process created.
type nsPath string

var _ benchkit.Place = nsPath("")

func (p nsPath) Do(fn func() error) error { return netns.InPath(string(p), fn) }

// topology is the LAN — the host namespace, where the network process
// runs, with a veth pair to the client namespace — and a container
// namespace, empty but for loopback, that the network process gives its
// interface. Whatever a peer adds is undone by Close, in reverse order,
// before the namespaces are released.
type topology struct {
	host, client *netns.NS
	container    benchkit.Place
	proc         *benchkit.Proc // the network process
	undo         []func()
}

// newTopology makes the LAN: host eth0 192.168.2.116/24 with a default
// route via 192.168.2.1 (pasta wants one; it leads to the client, which
// holds that address too) and client eth0 192.168.2.104/24.
func newTopology() (*topology, error) {
	t := &topology{}
	for _, p := range []**netns.NS{&t.host, &t.client} {
		ns, err := netns.New()
		if err != nil {
			t.Close()
			return nil, err
		}
		*p = ns
	}
	if err := t.lan(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

func (t *topology) lan() error {
	if err := t.host.AddVeth(eth0, t.client, eth0); err != nil {
		return err
	}
	// The client's own address first: the kernel picks it, the primary,
	// as the source of every connection to the host.
	for _, s := range []struct {
		ns   *netns.NS
		addr netip.Prefix
	}{{t.host, hostAddr}, {t.client, clientAddr}, {t.client, routerAddr}} {
		if err := s.ns.SetLink(eth0, 0); err != nil {
			return err
		}
		if err := s.ns.AddAddr(eth0, s.addr); err != nil {
			return err
		}
	}
	if err := t.host.IP("route", "add", "default", "via", routerAddr.Addr().String(), "dev", eth0); err != nil {
		return err
	}
	return benchkit.Sysctl(t.client, "ipv4/ip_local_port_range", portRange)
}

func (t *topology) onClose(f func()) { t.undo = append(t.undo, f) }

// alive returns an error when the network process has exited.
func (t *topology) alive() error {
	if t.proc == nil {
		return nil
	}
	return t.proc.Alive()
}

// Close undoes the setup and releases the namespaces. Closing twice is
// harmless.
func (t *topology) Close() {
	for i := len(t.undo) - 1; i >= 0; i-- {
		t.undo[i]()
	}
	t.undo = nil
	for _, ns := range []*netns.NS{t.host, t.client} {
		if ns != nil {
			ns.Close()
		}
	}
}

// newContainer gives t a container namespace of this process's, empty but
// for loopback.
func (t *topology) newContainer() (*netns.NS, error) {
	ns, err := netns.New()
	if err != nil {
		return nil, err
	}
	t.onClose(func() { ns.Close() })
	t.container = ns
	return ns, nil
}

// privateTun mounts a tmpfs over /dev/net holding a tun node every user
// may open, as a rootless setup has: pasta runs as nobody and opens it.
// The mount namespace is this program's own (checkPrivate), so nothing
// outside sees it; the returned function unmounts it.
func privateTun() (func(), error) {
	if _, err := os.Stat(devNetTun); err != nil {
		return nil, fmt.Errorf("no tun device: %w", err)
	}
	if err := unix.Mount("tmpfs", devNet, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
		return nil, fmt.Errorf("mount tmpfs on %s: %w", devNet, err)
	}
	undo := func() { unix.Unmount(devNet, unix.MNT_DETACH) }
	err := unix.Mknod(devNetTun, unix.S_IFCHR|0o666, int(unix.Mkdev(tunMajor, tunMinor)))
	if err == nil {
		err = os.Chmod(devNetTun, 0o666) // past the umask
	}
	if err != nil {
		undo()
		return nil, fmt.Errorf("mknod %s: %w", devNetTun, err)
	}
	return undo, nil
}

// listening says whether a socket listens on port in the calling thread's
// namespace: a TCP listener, or any UDP socket bound to it. It reads
// /proc/thread-self/net/{tcp,udp}, whose columns are "sl local_address
// rem_address st ..." with the port in hex.
func listening(proto string, port int) (bool, error) {
	b, err := os.ReadFile(procNetDir + proto)
	if err != nil {
		return false, err
	}
	suffix := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasSuffix(f[1], suffix) {
			continue
		}
		if proto == "udp" || f[3] == "0A" { // TCP_LISTEN
			return true, nil
		}
	}
	return false, nil
}

func itoa(n int) string { return strconv.Itoa(n) }
