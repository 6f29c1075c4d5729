package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/internal/rtnl"
)

// A rootless container's network namespace belongs to a user namespace of
// its own. Opening a TAP device there takes CAP_NET_ADMIN in it, which a
// process has once it joins that user namespace; a Go program cannot join
// one (setns refuses a process with threads). So a helper does: this
// binary again, run by nsenter(1) inside both namespaces, opens (and with
// an address, configures) the device and passes it back over a unix
// socket, as slirp4netns's own child does.

// tapHelperCmd is the helper's hidden command name.
const tapHelperCmd = "__tap-helper"

// openTAPVia opens the TAP device of p, whose namespace is in the user
// namespace p.UserNS, through the helper, and makes a TAP of it with tc's
// options; with p.Addr, the helper also gives the device its address, a
// default route via gw, and brings it up.
func openTAPVia(p portSpec, tc bridge.TAPConfig, gw netip.Addr) (*bridge.TAP, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	defer unix.Close(fds[0])
	theirs := os.NewFile(uintptr(fds[1]), "tap-helper")
	defer theirs.Close()
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	// nsenter gets the namespaces as descriptors of this process's, its
	// fds 4 and 5, not as paths: it would read a path in its own
	// descriptor table, where a caller's /proc/self/fd/3 (as slirp4netns,
	// whose child shares its descriptors, takes a namespace) is the
	// socket.
	netNS, err := os.Open(p.NetNS)
	if err != nil {
		return nil, err
	}
	defer netNS.Close()
	userNS, err := os.Open(p.UserNS)
	if err != nil {
		return nil, err
	}
	defer userNS.Close()
	args := []string{"--user=/proc/self/fd/5", "--net=/proc/self/fd/4", "--preserve-credentials", "--",
		exe, tapHelperCmd, p.IfName, strconv.Itoa(tc.MTU), strconv.FormatBool(tc.Offload)}
	if p.Addr.IsValid() {
		args = append(args, p.Addr.String(), gw.String())
	}
	cmd := exec.Command("nsenter", args...)
	cmd.ExtraFiles = []*os.File{theirs, netNS, userNS} // its fds 3, 4 and 5
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	theirs.Close()
	if err != nil {
		return nil, fmt.Errorf("opening it inside user namespace %s (nsenter, from util-linux): %v: %s", p.UserNS, err, strings.TrimSpace(out.String()))
	}
	fd, err := recvFD(fds[0])
	if err != nil {
		return nil, fmt.Errorf("from the helper inside user namespace %s: %w", p.UserNS, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), p.IfName)
	tap, err := bridge.TAPFromFile(f, tc)
	if err != nil {
		f.Close()
		return nil, err
	}
	return tap, nil
}

// recvFD takes the one descriptor a message on the socket fd carries,
// already there.
func recvFD(fd int) (int, error) {
	var b [1]byte
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(fd, b[:], oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return -1, os.NewSyscallError("recvmsg", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return -1, errors.New("no descriptor passed")
	}
	rights, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(rights) != 1 {
		for _, r := range rights {
			unix.Close(r)
		}
		return -1, errors.New("not one descriptor passed")
	}
	return rights[0], nil
}

// runTAPHelper is the helper, inside the namespaces: args are IFNAME MTU
// OFFLOAD [ADDR/PREFIX GATEWAY]; the device goes back over fd 3.
func runTAPHelper(args []string) error {
	if len(args) != 3 && len(args) != 5 {
		return usagef("%s IFNAME MTU OFFLOAD [ADDR/PREFIX GATEWAY]: got %d arguments", tapHelperCmd, len(args))
	}
	mtu, err := strconv.Atoi(args[1])
	if err != nil {
		return usagef("MTU %q", args[1])
	}
	offload, err := strconv.ParseBool(args[2])
	if err != nil {
		return usagef("OFFLOAD %q", args[2])
	}
	f, err := bridge.OpenTAPFile(bridge.TAPConfig{Name: args[0], MTU: mtu, Offload: offload})
	if err != nil {
		return err
	}
	defer f.Close()
	if len(args) == 5 {
		addr, err := netip.ParsePrefix(args[3])
		if err != nil {
			return usagef("ADDR/PREFIX %q", args[3])
		}
		gw, err := netip.ParseAddr(args[4])
		if err != nil {
			return usagef("GATEWAY %q", args[4])
		}
		if err := rtnl.ConfigureLink("", args[0], addr, gw); err != nil {
			return err
		}
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.Sendmsg(3, []byte{0}, unix.UnixRights(int(fd)), nil, 0)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("passing the device back: %w", os.NewSyscallError("sendmsg", serr))
	}
	return nil
}
