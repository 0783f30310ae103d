#!/usr/bin/env bash
# postgres.sh makes sure PostgreSQL answers on 127.0.0.1:5432 as user postgres
# without a password (trust), for the tests of the outbox and inbox.
#
#   - one answers: use it (nothing is changed);
#   - a cluster is installed but down: start it (pg_ctlcluster) and wait;
#   - none is installed: install Debian's postgresql, let the new cluster
#     trust local connections (127.0.0.1 and the socket: it is a test
#     machine's own cluster), start it, wait.
#
# Idempotent. Exits non-zero with a message saying why when it cannot.
set -euo pipefail

HOST=127.0.0.1
PORT=${WARREN_PG_PORT:-5432}
WAIT_SECONDS=${WARREN_PG_WAIT:-60}

log() { echo "postgres.sh: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
    log "need root to run: $*"; return 1
  fi
}

answers() {
  command -v psql >/dev/null 2>&1 && psql -h "$HOST" -p "$PORT" -U postgres -d postgres -w -Atqc 'select 1' >/dev/null 2>&1
}

wait_for_postgres() {
  local deadline=$((SECONDS + WAIT_SECONDS))
  while ((SECONDS < deadline)); do
    if answers; then
      log "PostgreSQL answers on $HOST:$PORT"
      return 0
    fi
    sleep 1
  done
  log "PostgreSQL did not answer on $HOST:$PORT as postgres without a password within ${WAIT_SECONDS}s"
  return 1
}

if answers; then
  log "PostgreSQL already answers on $HOST:$PORT"
  exit 0
fi

fresh=0
if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    log "PostgreSQL is not installed and apt-get is not available; install PostgreSQL 13+ yourself"
    exit 1
  fi
  log "installing Debian's postgresql"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >&2
  fresh=1
fi

read -r version cluster _ < <(pg_lsclusters -h | head -n 1)
if [ "$fresh" = 1 ]; then
  hba="/etc/postgresql/$version/$cluster/pg_hba.conf"
  log "letting the new cluster $version/$cluster trust local connections ($hba)"
  as_root sh -c "printf 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' > '$hba'"
fi
log "starting cluster $version/$cluster"
as_root pg_ctlcluster "$version" "$cluster" start >&2 || as_root pg_ctlcluster "$version" "$cluster" reload >&2 || true
wait_for_postgres
