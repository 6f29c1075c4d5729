#!/bin/sh
# idle.sh measures what an idle gateway costs: context switches
# (voluntary and not) and CPU time of a usernat gateway (host uplink, one
# container, one published port, no traffic) over 10 s, inside a private
# network namespace; the container's is held by a process of its own,
# so nothing is left behind in /run/netns. As root.
# Usage: sh bench/idle.sh [USERNAT-BINARY]
set -eu
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
	bin=/tmp/usernat-idle
	go build -o "$bin" ./cmd/usernat
fi
unshare --net sh -c '
ip link set lo up
unshare --net sleep 60 &
H=$!
sleep 0.2
"$1" gateway --uplink host --subnet 10.0.2.2/24 --port "/proc/$H/ns/net:tap0=10.0.2.100/24" \
	-p 18080:10.0.2.100:80/tcp --api-socket "/tmp/usernat-idle-$$.sock" >/dev/null 2>&1 &
P=$!
trap "kill $P $H 2>/dev/null || true" EXIT
sleep 2
if ! kill -0 $P 2>/dev/null; then
	echo "idle.sh: usernat did not start (run it by hand to see why)" >&2
	exit 1
fi
switches() { cat /proc/$P/task/*/status | awk "/voluntary_ctxt_switches/ {s += \$2} END {print s}"; } # nonvoluntary_ too
ticks() { awk "{print \$14 + \$15}" /proc/$P/stat; }
a=$(switches); c=$(ticks)
sleep 10
b=$(switches); d=$(ticks)
echo "idle gateway over 10 s: $((b - a)) context switches, $(((d - c) * 10)) ms of CPU"
' sh "$bin"
