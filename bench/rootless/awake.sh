#!/bin/sh
# awake.sh runs bench/rootless with every CPU kept from halting by a busy
# loop at nice 19, so that a wake-up finds its CPU awake. On a VM whose
# kernel does no guest halt polling, waking a halted CPU costs tens of
# microseconds and dominates a round trip; this shows the forwarders' own
# cost. Arguments go to benchrootless, for example
#
#	sh bench/rootless/awake.sh -peers pasta,usernat \
#		-metrics latency,latency-out,conns,conns-out -rounds 3
set -eu
cd "$(dirname "$0")/../.."
go build -o /tmp/benchrootless ./bench/rootless
pids=""
for _ in $(seq "$(nproc)"); do
	nice -n 19 sh -c 'while :; do :; done' &
	pids="$pids $!"
done
# Ctrl-C or SIGTERM must not leave the loops spinning: they ignore SIGINT
# (a script's background jobs do), and dash runs no EXIT trap on a signal
# it does not trap.
trap 'kill $pids 2>/dev/null' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
/tmp/benchrootless "$@"
