#!/usr/bin/env bash
# Stop what sandbox/real_backdrop/start.sh started for one session and delete it: the private sshd
# (by its recorded pid), the processes of the session's OS user (by id), the OS user, the database
# and its user, and the session folder. MariaDB is stopped only if that start had to start it.
#
# Usage: stop.sh [--purge] [DIR | DIR/state.json | a --json FILE of start.sh]   (or env REAL_BACKDROP_DIR)
#   --purge    accepted for symmetry with the other sites: a Backdrop session is always removed.
#   stop.sh --orphans
#              removes the sites whose session folder is gone (found in /var/tmp/cmsuser-real-backdrop,
#              where start.sh records each site's database, folder and OS user).
# Touches nothing that a state file or that record does not name.
set -euo pipefail

ORPHANS=false
TARGET=${REAL_BACKDROP_DIR:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --purge) shift ;;
    --orphans) ORPHANS=true; shift ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "stop.sh: unknown option $1" >&2; exit 2 ;;
    *) TARGET=$1; shift ;;
  esac
done
REGISTRY=/var/tmp/cmsuser-real-backdrop
DB_HOST=127.0.0.1
DB_PORT=3306
log() { echo "[real-backdrop] $*" >&2; }
db_admin() { mysql --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root "$@"; }
db_up() { mysqladmin --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root ping >/dev/null 2>&1; }

# The sshd start.sh started: its pid, checked against the command line naming this session's config.
stop_sshd() {
  local pid=$1 config=$2
  [ -n "$pid" ] && [ "$pid" != 0 ] || return 0
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$config"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "stopped sshd (pid $pid)"
  fi
}

# The session's OS user: its processes (bee calls still running), by id, then the user itself.
drop_user() {
  local user=$1
  [[ "$user" =~ ^cmsbee_[0-9a-f]+$ ]] || { log "not removing user '$user': not a name start.sh makes"; return 0; }
  id "$user" >/dev/null 2>&1 || return 0
  for pid in $(pgrep -u "$user" || true); do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.2
  for pid in $(pgrep -u "$user" || true); do kill -KILL "$pid" 2>/dev/null || true; done
  userdel "$user" 2>/dev/null || userdel -f "$user" 2>/dev/null || true
  log "removed OS user $user"
}

drop_db() {
  local db_name=$1
  if [[ "$db_name" =~ ^backdrop_sbx_[0-9a-f]+$ ]]; then
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
  for record in "$REGISTRY"/backdrop_sbx_*; do
    [ -f "$record" ] || continue
    dir=$(sed -n 1p "$record")
    user=$(sed -n 2p "$record")
    [ -f "$dir/state.json" ] && continue
    found=$((found + 1))
    for pid in $(pgrep -x sshd || true); do
      stop_sshd "$pid" "$dir/ssh/sshd_config"
    done
    drop_user "$user"
    drop_db "$(basename "$record")" && rm -f "$record"
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
stop_sshd "$(state_get ssh.pid)" "$(state_get ssh.config)"
drop_user "$(state_get ssh.user)"
db_name=$(state_get db.name)
started_mariadb=$(state_get started_mariadb)
drop_db "$db_name" && rm -f "$REGISTRY/$db_name"
rm -rf "$DIR"
log "removed the site of $DIR"
if [ "$started_mariadb" = "1" ] && db_up; then
  mysqladmin --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root shutdown \
    && log "stopped MariaDB (this session's start.sh had started it)"
fi
