#!/usr/bin/env bash
# broker.sh makes sure a RabbitMQ broker answers on 127.0.0.1:5672 (guest/guest).
#
#   - one answers: use it (nothing is changed);
#   - rabbitmq-server is installed but not running: start it detached and wait;
#   - not installed: install Debian's rabbitmq-server, start it, wait.
#
# Idempotent. Exits non-zero with a message saying why when it cannot.
set -euo pipefail

HOST=127.0.0.1
PORT=${WARREN_BROKER_PORT:-5672}
WAIT_SECONDS=${WARREN_BROKER_WAIT:-120}

log() { echo "broker.sh: $*" >&2; }

answers() {
  # A TCP accept on the AMQP port is only the first sign of life; the listener
  # opens late in RabbitMQ's boot, after the vhosts and users are loaded.
  (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

wait_for_broker() {
  local deadline=$((SECONDS + WAIT_SECONDS))
  while ((SECONDS < deadline)); do
    if answers; then
      log "RabbitMQ answers on $HOST:$PORT"
      return 0
    fi
    sleep 1
  done
  log "RabbitMQ did not answer on $HOST:$PORT within ${WAIT_SECONDS}s"
  for f in /var/log/rabbitmq/startup_err /var/log/rabbitmq/startup_log; do
    [ -s "$f" ] && { log "last lines of $f:"; tail -n 20 "$f" >&2; }
  done
  return 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
    log "need root to run: $*"; return 1
  fi
}

if answers; then
  log "RabbitMQ already answers on $HOST:$PORT"
  exit 0
fi

if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    log "rabbitmq-server is not installed and apt-get is not available; install RabbitMQ 3.10+ yourself"
    exit 1
  fi
  log "installing Debian's rabbitmq-server"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  # The package's postinst may try to start the service through an init system
  # that containers do not have; we start it ourselves below either way.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rabbitmq-server >&2 || true
  if [ ! -x /usr/sbin/rabbitmq-server ]; then
    log "installing rabbitmq-server failed"
    exit 1
  fi
  # Give the node a deterministic name and keep it on loopback, like the
  # machines this project is developed on.
  if [ ! -s /etc/rabbitmq/rabbitmq-env.conf ] || ! grep -q '^NODENAME=' /etc/rabbitmq/rabbitmq-env.conf; then
    printf 'NODENAME=rabbit@localhost\n' | as_root tee -a /etc/rabbitmq/rabbitmq-env.conf >/dev/null
  fi
fi

if answers; then exit 0; fi

log "starting rabbitmq-server (detached)"
PATH="$PATH:/usr/sbin" as_root rabbitmq-server -detached >&2 || log "rabbitmq-server -detached returned non-zero; waiting anyway"
wait_for_broker
