#!/usr/bin/env bash
# Run a command in a private network namespace: only `lo` and a veth pair carrying the
# test address 10.77.0.1/24 with a default route, so WebRTC peers (Chromium gathers no
# loopback candidates) can connect while no packet can reach a real interface.
# Usage: scripts/in-netns.sh COMMAND [ARGS...]   (needs root or user namespaces)
set -euo pipefail
ADDR="${AIRCLASS_NETNS_ADDR:-10.77.0.1}"
if [ "${AIRCLASS_IN_NETNS:-}" != "1" ]; then
  exec unshare -n env AIRCLASS_IN_NETNS=1 "$0" "$@"
fi
ip link set lo up
ip link add airclass0 type veth peer name airclass1
ip addr add "$ADDR/24" dev airclass0
ip link set airclass1 up
ip link set airclass0 up
ip route add default dev airclass0
export AIRCLASS_TEST_HOST="$ADDR"
exec "$@"
