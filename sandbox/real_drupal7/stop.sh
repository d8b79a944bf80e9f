#!/usr/bin/env bash
# Stop what sandbox/real_drupal7/start.sh started for one session: its PHP server (the whole
# process group, workers included), and MariaDB only if that start had to start it.
#
# Usage: stop.sh [--purge] [DIR | DIR/state.json | a --json FILE of start.sh]   (or env REAL_DRUPAL7_DIR)
#   Without --purge the site stays for a warm start.sh --dir DIR.
#   --purge    also drop the session's database and DB user and delete the session folder.
#   stop.sh --orphans
#              purges the sites whose session folder is gone (a reboot empties /dev/shm, or the
#              folder was deleted): found in /var/tmp/cmsuser-real-drupal7, where start.sh records
#              each site's database and folder.
# Touches nothing that a state file or that record does not name.
set -euo pipefail

PURGE=false
ORPHANS=false
TARGET=${REAL_DRUPAL7_DIR:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --purge) PURGE=true; shift ;;
    --orphans) ORPHANS=true; shift ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "stop.sh: unknown option $1" >&2; exit 2 ;;
    *) TARGET=$1; shift ;;
  esac
done
REGISTRY=/var/tmp/cmsuser-real-drupal7
DB_HOST=127.0.0.1
DB_PORT=3306
log() { echo "[real-drupal7] $*" >&2; }
db_admin() { mysql --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root "$@"; }
db_up() { mysqladmin --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root ping >/dev/null 2>&1; }

# Ends a server's process group, TERM first.
stop_group() {
  local pgid=$1 what=$2
  kill -TERM -- "-$pgid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 -- "-$pgid" 2>/dev/null; then
    kill -KILL -- "-$pgid" 2>/dev/null || true
  fi
  log "stopped the PHP server ($what, process group $pgid)"
}

# Drops a site's database and its user; only names shaped like start.sh's.
drop_db() {
  local db_name=$1
  if [[ "$db_name" =~ ^drupal7_sbx_[0-9a-f]+$ ]]; then
    if db_up; then
      db_admin -e "DROP DATABASE IF EXISTS \`$db_name\`; DROP USER IF EXISTS '$db_name'@'127.0.0.1';"
      log "dropped database and user $db_name"
    else
      log "MariaDB is down: database $db_name and its user were NOT dropped"
      return 1
    fi
  else
    log "not dropping '$db_name': not a name start.sh makes"
  fi
}

if $ORPHANS; then
  found=0
  for record in "$REGISTRY"/drupal7_sbx_*; do
    [ -f "$record" ] || continue
    dir=$(head -n 1 "$record")
    [ -f "$dir/state.json" ] && continue
    found=$((found + 1))
    # A server may still run from the deleted folder: ours names -t $dir/site .
    for pid in $(pgrep -x php || true); do
      [ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$pid" ] || continue
      tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-t $dir/site " \
        && stop_group "$pid" "orphan of $dir"
    done
    name=$(basename "$record")
    drop_db "$name" && rm -f "$record"
    log "purged the orphaned site of $dir"
  done
  [ "$found" -gt 0 ] || log "no orphaned sites"
  exit 0
fi

[ -n "$TARGET" ] || { log "which session? give its folder (see --help)"; exit 2; }
if [ -f "$TARGET" ]; then
  TARGET=$(php -r 'echo json_decode(file_get_contents($argv[1]), true)["session_dir"] ?? "";' "$TARGET")
fi
STATE="$TARGET/state.json"
if [ ! -f "$STATE" ]; then
  log "no session in '$TARGET' (no state.json): nothing to stop"
  exit 0
fi
DIR=$(cd "$TARGET" && pwd)
state_get() { php -r '$s = json_decode(file_get_contents($argv[1]), true); $v = $s;
  foreach (explode(".", $argv[2]) as $k) { $v = is_array($v) ? ($v[$k] ?? null) : null; }
  echo is_bool($v) ? ($v ? "1" : "0") : (string) $v;' "$STATE" "$1"; }
HOST=$(state_get host)
PORT=$(state_get port)
PGID=$(state_get pgid)
if [ -n "$PGID" ] && kill -0 "$PGID" 2>/dev/null \
   && tr '\0' ' ' <"/proc/$PGID/cmdline" 2>/dev/null | grep -qF -- "-S $HOST:$PORT "; then
  stop_group "$PGID" "port $PORT"
fi
rm -f "$DIR/php-server.pid"
started_mariadb=$(state_get started_mariadb)

if $PURGE; then
  db_name=$(state_get db.name)
  drop_db "$db_name" && rm -f "$REGISTRY/$db_name"
  rm -rf "$DIR"
  log "removed the site of $DIR"
else
  php -r '$f = $argv[1]; $s = json_decode(file_get_contents($f), true); $s["pgid"] = null;
    file_put_contents($f, json_encode($s, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n");' "$STATE"
fi

if [ "$started_mariadb" = "1" ] && db_up; then
  mysqladmin --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root shutdown \
    && log "stopped MariaDB (this session's start.sh had started it)"
fi
