#!/bin/sh
# Start a sub node in a container on host networking (docker-compose.yml, service `sub`).
#
# Each replica takes the first free slot N (1-99), so `docker compose up --scale sub=K`
# works without per-replica configuration:
#   HTTP/WHEP  8100+N/tcp       (public URL http://$AIRCLASS_PUBLIC_HOST:8100+N)
#   WebRTC     40000+200N .. 40000+200N+199/udp
#   RTMP       19350+N/tcp      (unused on a sub; every node listens)
# Set AIRCLASS_SLOT to pin a slot. Extra arguments go to `airclass serve`.
set -eu
: "${AIRCLASS_PUBLIC_HOST:?set AIRCLASS_PUBLIC_HOST to the address students reach this host at}"

port_free() {
    python -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("0.0.0.0", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

slot="${AIRCLASS_SLOT:-}"
if [ -z "$slot" ]; then
    # Replicas start together: a random pause makes two of them rarely pick the same slot
    # (the loser fails to bind, exits, and `restart:` brings it back on the next slot).
    python -c 'import random, time; time.sleep(random.uniform(0, 3))'
    for n in $(seq 1 99); do
        if port_free $((8100 + n)); then slot=$n; break; fi
    done
fi
[ -n "$slot" ] || { echo "docker-sub: no free slot in 8101-8199" >&2; exit 1; }

http=$((8100 + slot))
udp=$((40000 + 200 * slot))
echo "docker-sub: slot $slot: http $http, udp $udp-$((udp + 199))"
exec airclass serve --role sub \
    --http-port "$http" \
    --rtmp-port $((19350 + slot)) \
    --udp-ports "$udp-$((udp + 199))" \
    --ice-host "$AIRCLASS_PUBLIC_HOST" \
    --public-url "http://$AIRCLASS_PUBLIC_HOST:$http" \
    "$@"
