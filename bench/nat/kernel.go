package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/usernat/usernat/internal/benchkit"
)

// kernelNATTool returns the program the kernel setup writes its rules
// with: nft when installed, else iptables.
func kernelNATTool() (string, error) {
	for _, tool := range []string{"nft", "iptables"} {
		if _, err := exec.LookPath(tool); err == nil {
			return tool, nil
		}
	}
	return "", errNoNATTool
}

// nftRules are Docker's published-port DNAT and bridge masquerade in
// nftables form. Docker matches a local destination address (ADDRTYPE
// LOCAL); the host has exactly one on the LAN, so the rule names it.
var nftRules = fmt.Sprintf(`table ip usernat_bench {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname %q ip daddr %s tcp dport %d dnat to %s:%d
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr %s oifname %q masquerade
	}
}
`, eth0, hostAddr.Addr(), publishedPort, containerAddr.Addr(), containerPort, containerAddr.Masked(), eth0)

// iptablesRules are the same rules for iptables.
var iptablesRules = [][]string{
	{"-t", "nat", "-A", "PREROUTING", "-i", eth0, "-d", hostAddr.Addr().String(), "-p", "tcp", "--dport", itoa(publishedPort),
		"-j", "DNAT", "--to-destination", fmt.Sprintf("%s:%d", containerAddr.Addr(), containerPort)},
	{"-t", "nat", "-A", "POSTROUTING", "-s", containerAddr.Masked().String(), "-o", eth0, "-j", "MASQUERADE"},
}

// buildKernel makes the reference experiment the way Docker does on a
// host: the client and the host joined by a veth pair on the LAN; in the
// host a bridge docker0 with the gateway address and a veth pair to the
// container; forwarding on; DNAT for the published port and MASQUERADE
// for the bridge subnet out of the LAN, written with tool (nft or
// iptables); the kernel's conntrack under both.
func buildKernel(tool string, mtu int) (*topology, error) {
	t, err := newTopology()
	if err != nil {
		return nil, err
	}
	if err := kernelSetup(t, tool, mtu); err != nil {
		t.Close()
		return nil, fmt.Errorf("kernel setup: %w", err)
	}
	return t, nil
}

func kernelSetup(t *topology, tool string, mtu int) error {
	m := itoa(mtu)
	if err := t.client.AddVeth(eth0, t.host, eth0); err != nil {
		return err
	}
	if err := t.host.AddVeth(hostVeth, t.container, eth0); err != nil {
		return err
	}
	if err := steps(t.host,
		[]string{"link", "set", eth0, "mtu", m, "up"},
		[]string{"addr", "add", hostAddr.String(), "dev", eth0},
		[]string{"link", "add", docker0, "type", "bridge"},
		[]string{"link", "set", hostVeth, "mtu", m, "master", docker0, "up"},
		[]string{"link", "set", docker0, "mtu", m, "up"},
		[]string{"addr", "add", gatewayAddr.String(), "dev", docker0},
	); err != nil {
		return err
	}
	if err := steps(t.container,
		[]string{"link", "set", eth0, "mtu", m, "up"},
		[]string{"addr", "add", containerAddr.String(), "dev", eth0},
		[]string{"route", "add", "default", "via", gatewayAddr.Addr().String()},
	); err != nil {
		return err
	}
	if err := configureEnds(t, mtu); err != nil {
		return err
	}
	if err := benchkit.Sysctl(t.host, "ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if tool == "nft" {
		return t.host.Do(func() error {
			cmd := exec.Command("nft", "-f", "-")
			cmd.Stdin = strings.NewReader(nftRules)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("nft -f -: %w: %s", err, strings.TrimSpace(string(out)))
			}
			return nil
		})
	}
	for _, args := range iptablesRules {
		if _, err := t.host.Run(context.Background(), "iptables", args...); err != nil {
			return err
		}
	}
	return nil
}
