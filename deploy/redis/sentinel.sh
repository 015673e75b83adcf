#!/bin/sh
# One Redis Sentinel watching the master named `airclass` (docker-compose.yml, services
# sentinel1..3; also usable on a machine of its own). Usage: sentinel.sh PORT
#
# The configuration is written once into SENTINEL_DIR and kept there: Sentinel rewrites it
# with what it learns (the current master after a failover, the replicas, the other
# Sentinels), so a restarted Sentinel resumes from the current master instead of the
# first one. Environment:
#   REDIS_PASSWORD          the data nodes' requirepass/masterauth; also this Sentinel's
#                           requirepass and the password it gives the other Sentinels
#   REDIS_MASTER_HOST/PORT  the first master (default 127.0.0.1 6379)
#   SENTINEL_BIND           addresses to listen on (default 127.0.0.1; on a machine of
#                           its own: its LAN address, e.g. "10.0.0.6 127.0.0.1")
#   SENTINEL_ANNOUNCE_IP    the address other Sentinels and clients reach this one at
#                           (needed when it is not the address Sentinel would guess)
#   SENTINEL_QUORUM         Sentinels that must agree the master is down (default 2 of 3)
#   SENTINEL_DOWN_AFTER_MS  unanswered this long = down (default 2000)
#   SENTINEL_DIR            where the configuration lives (default /data)
set -eu
port="${1:?usage: sentinel.sh PORT}"
: "${REDIS_PASSWORD:?set REDIS_PASSWORD}"
dir="${SENTINEL_DIR:-/data}"
conf="$dir/sentinel-$port.conf"
if [ ! -s "$conf" ]; then
    umask 077
    {
        echo "port $port"
        echo "bind ${SENTINEL_BIND:-127.0.0.1}"
        echo "dir $dir"
        echo "requirepass \"$REDIS_PASSWORD\""
        echo "sentinel sentinel-pass \"$REDIS_PASSWORD\""
        if [ -n "${SENTINEL_ANNOUNCE_IP:-}" ]; then
            echo "sentinel announce-ip $SENTINEL_ANNOUNCE_IP"
        fi
        echo "sentinel monitor airclass ${REDIS_MASTER_HOST:-127.0.0.1} ${REDIS_MASTER_PORT:-6379} ${SENTINEL_QUORUM:-2}"
        echo "sentinel auth-pass airclass \"$REDIS_PASSWORD\""
        echo "sentinel down-after-milliseconds airclass ${SENTINEL_DOWN_AFTER_MS:-2000}"
        echo "sentinel failover-timeout airclass 10000"
        echo "sentinel parallel-syncs airclass 1"
    } >"$conf"
fi
exec redis-server "$conf" --sentinel
