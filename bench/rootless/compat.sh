#!/bin/sh
# compat.sh runs RootlessKit and Podman (Debian's) with usernat in
# slirp4netns's place, and with slirp4netns itself, side by side, as an
# unprivileged user, and prints what each container could do: its
# address and route, a connection out, DNS through 10.0.2.3, the host's
# loopback (off and on), a published port, a download. As root, from the
# repository:
#
#	sh bench/rootless/compat.sh            # installs what is missing
#	sh bench/rootless/compat.sh -install=false
#	sh bench/rootless/compat.sh -install=false -usernat-only
#
# -usernat-only leaves slirp4netns's runs out (cmd/usernat's
# TestIntegrationRootlessKitPodman runs it so, in CI).
#
# Everything runs inside a private network and mount namespace (unshare
# --net --mount): the "host" there has one address, 192.0.2.1 on a veth
# with no route out, a DNS responder on it that answers every name with
# 192.0.2.53, and /etc/resolv.conf bind-mounted to name it. Only the
# installation (apt-get), the build and the test user (useradd, with
# subordinate ids) touch the machine. It exits 1 if any check FAILED.
set -eu
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/../.."
root=$(pwd)
install=true
only=
for a in "$@"; do
	case $a in
	-install=false) install=false ;;
	-usernat-only) only=1 ;;
	*) echo "compat.sh: unknown argument $a (want -install=false, -usernat-only)" >&2; exit 2 ;;
	esac
done

if [ "${COMPAT_INNER:-}" = "" ]; then
	[ "$(id -u)" -eq 0 ] || { echo "compat.sh: run as root" >&2; exit 2; }
	if [ $install = true ]; then
		need=""
		for p in rootlesskit:rootlesskit podman:podman slirp4netns:slirp4netns uidmap:newuidmap \
			busybox-static:busybox socat:socat python3:python3 util-linux:unshare iproute2:ip; do
			command -v "${p#*:}" >/dev/null 2>&1 || need="$need ${p%%:*}"
		done
		if [ -n "$need" ]; then
			export DEBIAN_FRONTEND=noninteractive
			apt-get update -q >/dev/null
			# shellcheck disable=SC2086
			apt-get install -y -q --no-install-recommends $need >/dev/null
		fi
	fi
	work=$(mktemp -d /tmp/usernat-compat.XXXXXX)
	chmod 755 "$work"
	go build -o "$work/usernat" ./cmd/usernat
	id usernat-compat >/dev/null 2>&1 || useradd -m usernat-compat
	u=usernat-compat
	grep -q "^$u:" /etc/subuid || echo "$u:200000:65536" >>/etc/subuid
	grep -q "^$u:" /etc/subgid || echo "$u:200000:65536" >>/etc/subgid
	# The inner run's status, not tee's.
	(
		rc=0
		COMPAT_INNER=$work unshare --net --mount --fork sh "$self" "$@" || rc=$?
		echo $rc >"$work.rc"
	) | tee "$work.log"
	status=$(cat "$work.rc")
	grep -q FAILED "$work.log" && status=1
	# What the runs left (Podman's pause process, which it keeps for
	# the next run): the user is this script's alone.
	pkill -KILL -u "$u" 2>/dev/null || true
	sleep 0.5
	rm -rf "$work" "$work.log" "$work.rc"
	exit $status
fi

# Inside the private namespaces.
work=$COMPAT_INNER
user=usernat-compat
home=$(getent passwd $user | cut -d: -f6)
ip link set lo up
ip link add c0 type veth peer name c1
ip addr add 192.0.2.1/24 dev c0
ip link set c0 up
ip link set c1 up
echo "nameserver 192.0.2.1" >"$work/resolv.conf"
mount --bind "$work/resolv.conf" /etc/resolv.conf
# Podman's crun does not take a hybrid cgroup hierarchy; this mount
# namespace's view of it goes (the machine's stays as it is).
umount -l /sys/fs/cgroup/unified 2>/dev/null || true

cat >"$work/dns.py" <<'EOF'
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.1", 53))
while True:
    q, peer = s.recvfrom(2048)
    if len(q) < 12:
        continue
    i = 12
    while i < len(q) and q[i] != 0:
        i += q[i] + 1
    hdr = q[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0)
    ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("192.0.2.53")
    s.sendto(hdr + q[12:i + 5] + ans, peer)
EOF
python3 "$work/dns.py" &
pids=$!
socat TCP-LISTEN:9000,bind=192.0.2.1,fork,reuseaddr SYSTEM:'echo out-ok' &
pids="$pids $!"
socat TCP-LISTEN:9001,bind=127.0.0.1,fork,reuseaddr SYSTEM:'echo loopback-ok' &
pids="$pids $!"
head -c 1048576 /dev/urandom >"$work/1m"
socat TCP-LISTEN:9002,bind=192.0.2.1,fork,reuseaddr OPEN:"$work/1m" &
pids="$pids $!"
trap 'kill $pids 2>/dev/null' EXIT
sleep 0.5

# The container's checks, the same for RootlessKit's child and Podman's
# container (busybox), one line each: NAME ok|FAILED.
cat >"$work/checks.sh" <<'EOF'
#!/bin/sh
check() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "  $name ok"; else echo "  $name FAILED"; fi; }
check "address 10.0.2.100/24" sh -c 'ip addr | grep -q "inet 10.0.2.100/24"'
check "default route via 10.0.2.2" sh -c 'ip route | grep -q "default via 10.0.2.2"'
check "loopback up" sh -c 'ip addr show lo | grep -q "inet 127.0.0.1"'
check "connection out" sh -c 'nc 192.0.2.1 9000 </dev/null | grep -q out-ok'
check "DNS via 10.0.2.3" sh -c 'nslookup name.example 10.0.2.3 | grep -q 192.0.2.53'
if [ "${LOOPBACK:-}" = on ]; then
	check "host loopback at 10.0.2.2" sh -c 'nc 10.0.2.2 9001 </dev/null | grep -q loopback-ok'
else
	check "host loopback refused" sh -c '! (nc 10.0.2.2 9001 </dev/null | grep -q loopback-ok)'
fi
check "1 MiB download" sh -c '[ "$(nc 192.0.2.1 9002 </dev/null | wc -c)" -eq 1048576 ]'
httpd -f -p 80 -h "${WWW:-/www}" & # in the foreground, to be stopped: daemonized, it outlived the run
web=$!
touch "$READY"
# Serve until the host has fetched the page (it says so), 20 s at most.
i=0
while [ ! -e "$READY.done" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
kill $web
EOF
chmod 755 "$work/checks.sh"

# A busybox root for Podman's container (no registry is needed).
rootfs=$work/rootfs
mkdir -p "$rootfs/bin" "$rootfs/www" "$rootfs/etc" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/tmp" "$rootfs/run"
cp "$(command -v busybox)" "$rootfs/bin/busybox"
for a in sh ip nc nslookup grep wc httpd sleep touch echo mkdir; do ln -sf busybox "$rootfs/bin/$a"; done
cp "$work/checks.sh" "$rootfs/checks.sh"
echo published-ok >"$rootfs/www/index.html"
chown -R $user "$work"

as_user() {
	setpriv --reuid=$user --regid=$user --init-groups env -i HOME="$home" XDG_RUNTIME_DIR="$work/xdg-$user" \
		PATH=/usr/sbin:/usr/bin:/sbin:/bin USER=$user "$@"
}
mkdir -p "$work/xdg-$user" && chown $user "$work/xdg-$user" && chmod 700 "$work/xdg-$user"

# published waits for the container's READY file, then fetches its page
# (busybox's nc: Debian installs no nc by default), trying again for 10 s
# while the port is not forwarded yet, and tells the container it is done.
published() {
	for _ in $(seq 100); do [ -e "$1" ] && break; sleep 0.1; done
	got=
	for _ in $(seq 20); do
		if (echo "GET / HTTP/1.0"; echo) | timeout 5 busybox nc 127.0.0.1 8080 | grep -q published-ok; then
			got=1
			break
		fi
		sleep 0.5
	done
	touch "$1.done"
	if [ -n "$got" ]; then
		echo "  published port ok"
	else
		echo "  published port FAILED"
	fi
}

bins=$work/usernat
[ -n "$only" ] || bins="$bins $(command -v slirp4netns)"
for bin in $bins; do
	for loopback in off on; do
		flag=--disable-host-loopback
		[ $loopback = on ] && flag=
		echo "RootlessKit $(rootlesskit --version 2>/dev/null | head -1), $bin, host loopback $loopback:"
		ready=$work/rk-ready
		rm -f "$ready" "$ready.done"
		published "$ready" >"$work/published" &
		pub=$!
		# shellcheck disable=SC2086
		(cd "$home" && as_user env READY="$ready" LOOPBACK=$loopback WWW="$rootfs/www" rootlesskit --state-dir="$work/rk-state" \
			--net=slirp4netns --slirp4netns-binary="$bin" --copy-up=/etc --port-driver=slirp4netns \
			-p 127.0.0.1:8080:80/tcp $flag sh -c "PATH=$rootfs/bin:\$PATH $work/checks.sh") 2>"$work/rk.err" ||
			echo "  rootlesskit FAILED: $(tail -3 "$work/rk.err")"
		wait $pub
		cat "$work/published"
		rm -rf "$work/rk-state"

		opts=
		[ $loopback = on ] && opts=:allow_host_loopback=true
		echo "Podman $(podman --version 2>/dev/null | cut -d' ' -f3), $bin, host loopback $loopback:"
		ready=$rootfs/tmp/ready
		rm -f "$ready" "$ready.done"
		published "$ready" >"$work/published" &
		pub=$!
		(cd "$home" && as_user podman --network-cmd-path="$bin" run --rm --cgroups=disabled \
			--network "slirp4netns$opts" -p 127.0.0.1:8080:80 -e READY=/tmp/ready -e LOOPBACK=$loopback \
			--rootfs "$rootfs" /checks.sh) 2>"$work/podman.err" ||
			echo "  podman FAILED: $(tail -3 "$work/podman.err")"
		wait $pub
		cat "$work/published"
		pause=$work/xdg-$user/libpod/tmp/pause.pid
		[ -f "$pause" ] && kill "$(cat "$pause")" 2>/dev/null || true
	done
done
