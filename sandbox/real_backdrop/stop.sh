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

TAG=real-backdrop
SBX_PREFIX=backdrop_sbx_
. "$(dirname "${BASH_SOURCE[0]}")/../realsite.sh"
TARGET=${REAL_BACKDROP_DIR:-}
PURGE=true   # no warm start: the site's OS user and sshd go with it

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

stop_session() {
  stop_sshd "$(state_get ssh.pid)" "$(state_get ssh.config)"
  drop_user "$(state_get ssh.user)"
}

# An orphan's sshd (found by its config's path) and OS user (the record's second line).
stop_orphan() {
  local dir=$1 pid
  for pid in $(pgrep -x sshd || true); do
    stop_sshd "$pid" "$dir/ssh/sshd_config"
  done
  drop_user "$2"
}

stop_main "$@"
