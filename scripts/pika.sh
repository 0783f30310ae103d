#!/usr/bin/env bash
# pika.sh makes sure /usr/bin/python3 can import pika (Debian's
# python3-pika), the non-warren Python client of the interop tests.
# Idempotent. Exits non-zero with a message saying why when it cannot.
set -euo pipefail

log() { echo "pika.sh: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
    log "need root to run: $*"; return 1
  fi
}

if /usr/bin/python3 -c 'import pika' >/dev/null 2>&1; then
  exit 0
fi
log "installing Debian's python3-pika"
export DEBIAN_FRONTEND=noninteractive
as_root apt-get install -y -q python3-pika >/dev/null 2>&1 || {
  as_root apt-get update -q >/dev/null 2>&1
  as_root apt-get install -y -q python3-pika >/dev/null
}
/usr/bin/python3 -c 'import pika' || { log "python3-pika installed, but /usr/bin/python3 cannot import it"; exit 1; }
log "pika $(/usr/bin/python3 -c 'import pika; print(pika.__version__)')"
