#!/usr/bin/env bash
# Stop what sandbox/real_joomla/start.sh started for one session: its PHP server (the whole
# process group, workers included), and MariaDB only if that start had to start it.
#
# Usage: stop.sh [--purge] [--dir DIR | DIR | DIR/state.json | a --json FILE of start.sh]
#   (or env REAL_JOOMLA_DIR). Without --purge the site stays for a warm start.sh --dir DIR.
#   --purge     also drop the session's database and DB user, and delete the site, its mails,
#               logs and state, and the folder itself.
#   --keep-dir  (with --purge) leave the folder; start.sh uses it to retry a failed start.
#        stop.sh --orphans
#   purges the sites whose session folder is gone (a reboot empties /dev/shm): every database
#   joomla_sbx_<hex> whose sbx_owner table names a folder without a state.json, and the server
#   still serving that folder.
# Touches nothing a state file or an sbx_owner row does not name.
set -euo pipefail

PURGE=false
KEEP_DIR=false
ORPHANS=false
TARGET=${REAL_JOOMLA_DIR:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --purge) PURGE=true; shift ;;
    --keep-dir) KEEP_DIR=true; shift ;;
    --orphans) ORPHANS=true; shift ;;
    --dir) TARGET=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "stop.sh: unknown option $1" >&2; exit 2 ;;
    *) TARGET=$1; shift ;;
  esac
done
log() { echo "[real-joomla] $*" >&2; }
DB_HOST=127.0.0.1
DB_PORT=3306
db_admin() { mysql --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root "$@"; }
db_up() { mysqladmin --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root ping >/dev/null 2>&1; }

stop_group() {
  local pgid=$1 what=$2
  kill -TERM -- "-$pgid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 -- "-$pgid" 2>/dev/null; then
    log "the server group $pgid ignored TERM; killing it"
    kill -KILL -- "-$pgid" 2>/dev/null || true
  fi
  log "stopped the PHP server ($what, process group $pgid)"
}

# Only names shaped like start.sh's: a damaged state can never point this at another database.
purge_db() {
  local db_name=$1 db_user=$2
  if [[ "$db_name" =~ ^joomla_sbx_[0-9a-f]+$ && "$db_user" == "$db_name" ]]; then
    if db_up; then
      db_admin -e "DROP DATABASE IF EXISTS \`$db_name\`; DROP USER IF EXISTS '$db_user'@'127.0.0.1';"
      log "dropped database and user $db_name"
    else
      log "MariaDB is down: database $db_name and its user were NOT dropped"
    fi
  else
    log "not dropping '$db_name' (user '$db_user'): not a name start.sh makes"
  fi
}

if $ORPHANS; then
  found=0
  db_up || { log "MariaDB is down: cannot look for orphaned databases"; exit 1; }
  for db_name in $(db_admin -N -e "SHOW DATABASES LIKE 'joomla\\_sbx\\_%'"); do
    [[ "$db_name" =~ ^joomla_sbx_[0-9a-f]+$ ]] || continue
    dir=$(db_admin -N -e "SELECT session_dir FROM \`$db_name\`.sbx_owner LIMIT 1" 2>/dev/null || true)
    [ -n "$dir" ] || continue                          # not (fully) made by start.sh: left alone
    [ -f "$dir/state.json" ] && continue               # its session still exists
    found=$((found + 1))
    for pid in $(pgrep -x php || true); do
      [ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$pid" ] || continue
      tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-t $dir/site" || continue
      stop_group "$pid" "orphan serving $dir"
    done
    purge_db "$db_name" "$db_name"
    rm -rf "$dir"
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
state_merge() { (umask 077; php -r '$f = $argv[1]; $s = json_decode(file_get_contents($f), true);
  $s = array_replace($s, json_decode(stream_get_contents(STDIN), true));
  file_put_contents("$f.tmp", json_encode($s, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n"); rename("$f.tmp", $f);' "$STATE"); }
DB_HOST=$(state_get db.host)
DB_PORT=$(state_get db.port)
HOST=$(state_get host)
PORT=$(state_get port)
PGID=$(state_get pgid)
[ -n "$PGID" ] || PGID=$(cat "$DIR/php-server.pid" 2>/dev/null || true)

if [ -n "$PGID" ] && kill -0 "$PGID" 2>/dev/null \
   && tr '\0' ' ' <"/proc/$PGID/cmdline" 2>/dev/null | grep -qF -- "-S $HOST:$PORT "; then
  stop_group "$PGID" "port $PORT"
fi
rm -f "$DIR/php-server.pid"
echo '{"pid": null, "pgid": null}' | state_merge

if $PURGE; then
  purge_db "$(state_get db.name)" "$(state_get db.user)"
  rm -rf "$DIR/site" "$DIR/mails" "$DIR/tmp" "$DIR/sessions"
  rm -f "$DIR/php-server.log" "$DIR/install.log" "$DIR/install-result.json" "$DIR/check.json"
fi

if [ "$(state_get started_mariadb)" = "1" ] && db_up; then
  mysqladmin --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root shutdown \
    && log "stopped MariaDB (this session's start.sh had started it)"
  echo '{"started_mariadb": false}' | state_merge
fi

if $PURGE; then
  rm -f "$STATE" "$STATE.tmp"
  $KEEP_DIR || { rm -f "$DIR/.lock"; rmdir "$DIR" 2>/dev/null || true; }
  log "removed the site of $DIR"
fi
