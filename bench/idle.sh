#!/bin/sh
# idle.sh measures what an idle gateway costs: context switches and CPU
# time of a usernat gateway (host uplink, one container, one published
# port, no traffic) over 10 s, inside a private network namespace. As
# root. Usage: sh bench/idle.sh [USERNAT-BINARY]
set -eu
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
	bin=/tmp/usernat-idle
	go build -o "$bin" ./cmd/usernat
fi
ns=usernat-idle-$$
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
unshare --net sh -c '
ip link set lo up
"$1" gateway --uplink host --subnet 10.0.2.2/24 --port "/run/netns/$2:tap0=10.0.2.100/24" \
	-p 18080:10.0.2.100:80/tcp --api-socket "/tmp/$2.sock" >/dev/null 2>&1 &
P=$!
sleep 2
switches() { cat /proc/$P/task/*/status | awk "/voluntary_ctxt_switches/ {s += \$2} END {print s}"; }
ticks() { awk "{print \$14 + \$15}" /proc/$P/stat; }
a=$(switches); c=$(ticks)
sleep 10
b=$(switches); d=$(ticks)
echo "idle gateway over 10 s: $((b - a)) context switches, $(((d - c) * 10)) ms of CPU"
kill $P
wait $P 2>/dev/null || true
' sh "$bin" "$ns"
