// Command usernat runs Docker's bridge network in userspace — a bridge with
// a TAP device in each container namespace, a gateway that publishes ports
// (DNAT) and masquerades the subnet (SNAT) with every flow in a conntrack
// table, and an uplink — and inspects it while it runs. No iptables,
// nftables or kernel NAT is involved.
//
// The uplink is by default this process's own sockets (--uplink host), as
// slirp4netns and pasta do it, for a process without privileges on the
// host's network: containers' connections go out from the host's
// addresses, and published ports listen on them, keeping each client's
// address:
//
//	usernat gateway --subnet 10.0.2.2/24 --port /proc/PID/ns/net:tap0=10.0.2.100/24 \
//	    --mtu 65520 -p 8080:10.0.2.100:80
//
// With --uplink tap:NETNS:IFNAME it is a TAP device on the outside network
// instead, on which the gateway answers at its own address, as the
// kernel's NAT would. The Docker experiment, as root, with namespaces made
// by `ip netns add web` and `ip netns add lan`:
//
//	usernat gateway --subnet 172.17.0.1/16 --port web:eth0=172.17.0.4/16 \
//	    --uplink tap:lan:eth0 --uplink-addr 192.168.2.116/24 -p 8080:172.17.0.4:80
//
// creates eth0 in web with 172.17.0.4/16 and a default route via
// 172.17.0.1, and eth0 in lan on which 192.168.2.116 answers; once lan's
// eth0 has a client address (`ip -n lan addr add 192.168.2.104/24 dev
// eth0`), a client in lan reaches the container at 192.168.2.116:8080. The gateway runs until
// SIGINT or SIGTERM and then removes the devices it made and its socket.
//
// While it runs, these talk to it over its API socket:
//
//	usernat conntrack -L     the conntrack table, as conntrack -L prints it
//	usernat conntrack -F     empty the table
//	usernat nat -L           the rules, as iptables -t nat -L -n lists them
//	usernat fdb              the bridge's FDB, as bridge fdb show prints it
//	usernat publish SPEC     publish a port (-p syntax); prints its id
//	usernat publish --list   the published ports with their ids
//	usernat unpublish ID     remove a published port
//	usernat stats            counters, one "name value" a line
//
// The API socket is --api-socket PATH on every command; by default
// /run/usernat.sock for root and $XDG_RUNTIME_DIR/usernat.sock for anyone
// else. It has mode 0600, and speaks the JSON protocol of the slirp4netns
// API socket (add_hostfwd, list_hostfwd, remove_hostfwd) plus usernat's
// own commands; see internal/api.
//
// As slirp4netns: usernat also takes slirp4netns's command line, so that
// RootlessKit and Podman run it in slirp4netns's place:
//
//	usernat [OPTION]... PID|PATH [TAPNAME]
//
// with slirp4netns's network (10.0.2.0/24 by default: the gateway at .2,
// DNS at .3, the container at .100 with --configure), carried as by
// usernat gateway --uplink host. `usernat --help` lists the options.
//
// `usernat gateway --help` lists every flag. --ready-fd N writes "1" to
// file descriptor N once the gateway is ready, as slirp4netns -r does.
package main
