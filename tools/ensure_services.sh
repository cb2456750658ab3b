#!/usr/bin/env bash
# Make sure local services are up. Usage: ensure_services.sh [rabbitmq] [management] [postgres]
#   rabbitmq    RabbitMQ's AMQP port (:5672): all `make run` needs
#   management  its management API (:15672, after rabbitmq), enabled if off: the tests make throwaway vhosts with it
#   postgres    PostgreSQL (:5432): the tests' PostgreSQL cases
# No argument: all three (what `make test` and .ci/run need). Idempotent: when everything already answers it only
# checks and returns (about a second). Starts services with the commands the machine's notes give; never stops
# anything. Timeouts can be changed with ENSURE_TIMEOUT (seconds, per service, default 60).
set -euo pipefail

HOST=127.0.0.1
AMQP_PORT=${AMQP_PORT:-5672}
MGMT_PORT=${RABBITMQ_MGMT_PORT:-15672}
PG_PORT=${PG_PORT:-5432}
TIMEOUT=${ENSURE_TIMEOUT:-60}
MGMT_USER=${RABBITMQ_MGMT_USER:-guest}
MGMT_PASS=${RABBITMQ_MGMT_PASS:-guest}

log() { echo "ensure_services: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# TCP check with Python (always present here; curl/nc may not be).
tcp_open() {
    python3 - "$1" "$2" <<'PY'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
except OSError:
    sys.exit(1)
PY
}

# AMQP is "up" only when the broker answers the protocol header with a Connection.Start frame (the port can be open
# while the node is still booting).
amqp_ready() {
    python3 - "$HOST" "$AMQP_PORT" <<'PY'
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
        s.settimeout(3)
        s.sendall(b"AMQP\x00\x00\x09\x01")
        frame = s.recv(7)
        sys.exit(0 if len(frame) == 7 and frame[0] == 1 else 1)
except OSError:
    sys.exit(1)
PY
}

mgmt_ready() {
    python3 - "http://$HOST:$MGMT_PORT/api/overview" "$MGMT_USER" "$MGMT_PASS" <<'PY'
import base64, sys, urllib.request
req = urllib.request.Request(sys.argv[1])
req.add_header("Authorization", "Basic " + base64.b64encode(f"{sys.argv[2]}:{sys.argv[3]}".encode()).decode())
try:
    with urllib.request.urlopen(req, timeout=3) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

pg_ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$HOST" -p "$PG_PORT" -t 2
    else
        tcp_open "$HOST" "$PG_PORT"
    fi
}

# wait_for NAME CHECK_FUNCTION: poll once a second until CHECK succeeds or TIMEOUT seconds have passed.
wait_for() {
    local name=$1 check=$2 deadline=$((SECONDS + TIMEOUT))
    until "$check"; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 1
    done
    log "$name is up"
}

ensure_amqp() {
    if amqp_ready; then
        log "RabbitMQ answers on $HOST:$AMQP_PORT"
    else
        command -v rabbitmq-server >/dev/null 2>&1 \
            || die "RabbitMQ is not answering on $HOST:$AMQP_PORT and rabbitmq-server is not installed"
        log "RabbitMQ not answering on $HOST:$AMQP_PORT: starting it (rabbitmq-server -detached)"
        rabbitmq-server -detached >/dev/null 2>&1 || log "rabbitmq-server -detached returned non-zero; waiting anyway"
        wait_for "RabbitMQ (AMQP)" amqp_ready \
            || die "RabbitMQ did not answer on $HOST:$AMQP_PORT within ${TIMEOUT}s (see /var/log/rabbitmq/)"
    fi
}

ensure_management() {
    if mgmt_ready; then
        log "RabbitMQ management API answers on $HOST:$MGMT_PORT"
        return
    fi
    command -v rabbitmq-plugins >/dev/null 2>&1 || die "rabbitmq-plugins not found: cannot enable rabbitmq_management"
    log "enabling rabbitmq_management"
    rabbitmq-plugins enable rabbitmq_management >/dev/null \
        || die "'rabbitmq-plugins enable rabbitmq_management' failed"
    wait_for "RabbitMQ management API" mgmt_ready \
        || die "RabbitMQ management API did not answer on http://$HOST:$MGMT_PORT/api/overview as $MGMT_USER within ${TIMEOUT}s"
}

ensure_postgres() {
    if pg_ready; then
        log "PostgreSQL answers on $HOST:$PG_PORT"
        return
    fi
    command -v pg_ctlcluster >/dev/null 2>&1 \
        || die "PostgreSQL is not answering on $HOST:$PG_PORT and pg_ctlcluster is not installed"
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    [ -n "$version" ] || die "PostgreSQL is not answering on $HOST:$PG_PORT and no cluster is configured in /etc/postgresql"
    log "PostgreSQL not answering on $HOST:$PG_PORT: starting cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start \
        || log "pg_ctlcluster $version main start returned non-zero; waiting anyway"
    wait_for "PostgreSQL" pg_ready \
        || die "PostgreSQL did not answer on $HOST:$PG_PORT within ${TIMEOUT}s (see /var/log/postgresql/)"
}

[ $# -gt 0 ] || set -- rabbitmq management postgres
for what in "$@"; do
    case $what in
        rabbitmq) ensure_amqp ;;
        management) ensure_management ;;
        postgres) ensure_postgres ;;
        *) die "unknown service '$what' (rabbitmq, management or postgres)" ;;
    esac
done
