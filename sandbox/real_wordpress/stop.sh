#!/usr/bin/env bash
# Stop what start.sh started: the PHP server, and MariaDB only if start.sh had to start it.
# Packages, the database, the config and the site stay, so the next start is quick.
set -euo pipefail
STATE_DIR=${CMSUSER_WP_STATE:-/tmp/cmsuser-real-wp}
STATE_FILE="$STATE_DIR/state.json"
log() { echo "[real-wordpress] $*" >&2; }

state_field() {
  [ -f "$STATE_FILE" ] || return 0
  php -r '$s = json_decode(file_get_contents($argv[1]), true); echo $s[$argv[2]] ?? "";' "$STATE_FILE" "$1"
}

if [ -f "$STATE_DIR/php-server.pid" ]; then
  pid=$(cat "$STATE_DIR/php-server.pid")
  if kill -0 "$pid" 2>/dev/null; then
    # The server runs in its own process group (setsid); end it with its workers.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "stopped the PHP server (pid $pid)"
  fi
  rm -f "$STATE_DIR/php-server.pid"
fi

if [ "$(state_field started_mariadb)" = "1" ] && mysqladmin ping >/dev/null 2>&1; then
  mysqladmin shutdown && log "stopped MariaDB (start.sh had started it)"
fi
rm -f "$STATE_FILE"
