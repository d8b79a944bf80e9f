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

TAG=real-joomla
SBX_PREFIX=joomla_sbx_
. "$(dirname "${BASH_SOURCE[0]}")/../realsite.sh"
TARGET=${REAL_JOOMLA_DIR:-}
STOP_OPTIONS="--dir --keep-dir"
STOPPED_STATE='{"pid": null, "pgid": null}'

# Only what start.sh made: a start being retried keeps its folder (and lock).
purge_session() {
  drop_db "$(state_get db.name)" "$(state_get db.user)" || true
  rm -rf "$DIR/site" "$DIR/mails" "$DIR/tmp" "$DIR/sessions"
  rm -f "$DIR/php-server.log" "$DIR/install.log" "$DIR/install-result.json" "$DIR/check.json" "$STATE" "$STATE.tmp"
  $KEEP_DIR || { rm -f "$DIR/.lock"; rmdir "$DIR" 2>/dev/null || true; }
  log "removed the site of $DIR"
}

# No registry: each database names its session folder in its sbx_owner table (install.php).
list_sites() {
  local db_name dir
  db_up || { log "MariaDB is down: cannot look for orphaned databases"; exit 1; }
  for db_name in $(db_admin -N -e "SHOW DATABASES LIKE 'joomla\\_sbx\\_%'"); do
    [[ "$db_name" =~ ^joomla_sbx_[0-9a-f]+$ ]] || continue
    dir=$(db_admin -N -e "SELECT session_dir FROM \`$db_name\`.sbx_owner LIMIT 1" 2>/dev/null || true)
    [ -n "$dir" ] || continue   # not (fully) made by start.sh: left alone
    printf '%s\t%s\n' "$db_name" "$dir"
  done
}
forget_orphan() { rm -rf "$2"; }

stop_main "$@"
