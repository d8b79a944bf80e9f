# shellcheck shell=bash
# What the real sites' start.sh and stop.sh share (sandbox/real_drupal, real_drupal7, real_joomla,
# real_backdrop; real_civicrm and real_wordpress keep their own): sourced, never run. The script sets
# TAG first (its log prefix and file names: real-drupal, ...) and SBX_PREFIX (its databases' names:
# drupal_sbx_<hex>); the functions read the script's variables they name (DIR, STATE, PORT, WEB, ...).

REALSITE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CAPTURE_MAIL="$REALSITE_DIR/capture-mail.sh"   # every site's sendmail_path: mails land in files
# The third-party archives: $CMSUSER_THIRDPARTY, else ../shared/thirdparty beside the project.
THIRDPARTY=${CMSUSER_THIRDPARTY:-$(cd "$REALSITE_DIR/../.." && pwd)/shared/thirdparty}
HOST=127.0.0.1
DB_HOST=127.0.0.1
DB_PORT=3306
REGISTRY=/var/tmp/cmsuser-$TAG   # one file per live site: its database -> its session folder (and more)
export DEBIAN_FRONTEND=noninteractive

t0=$(date +%s.%N)
log() { echo "[$TAG] $*" >&2; }
die() { log "$*"; exit 1; }
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
# --help: the script's header comment.
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
random_secret() { head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c "${1:-24}"; }
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
db_admin() { mysql --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root "$@"; }
db_up() { mysqladmin --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root ping >/dev/null 2>&1; }
port_free() { php -r 'exit(@stream_socket_server("tcp://127.0.0.1:" . $argv[1]) ? 0 : 1);' "$1"; }
free_port() { php -r '$s = stream_socket_server("tcp://127.0.0.1:0"); echo explode(":", stream_socket_get_name($s, false))[1];'; }
# A value of STATE by dotted path: booleans as 1/0, arrays as JSON, missing as nothing.
state_get() { php -r '$s = json_decode(file_get_contents($argv[1]), true); $v = $s;
  foreach (explode(".", $argv[2]) as $k) { $v = is_array($v) ? ($v[$k] ?? null) : null; }
  echo is_bool($v) ? ($v ? "1" : "0") : (is_array($v) ? json_encode($v) : (string) $v);' "$STATE" "$1"; }
# The JSON on stdin merged into STATE (made when missing), mode 0600, replaced in one rename.
state_merge() { (umask 077; php -r '$f = $argv[1]; $s = is_file($f) ? json_decode(file_get_contents($f), true) : [];
  $s = array_replace_recursive($s, json_decode(stream_get_contents(STDIN), true));
  file_put_contents("$f.tmp", json_encode($s, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n"); rename("$f.tmp", $f);' "$STATE"); }

# --- start.sh ---------------------------------------------------------------------------------------

# start.sh's command line: --dir DIR, --json FILE, --port PORT where START_OPTIONS names it, --help.
start_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) DIR=$2; shift 2 ;;
      --json) JSON_OUT=$2; shift 2 ;;
      --port) [[ " ${START_OPTIONS:-} " == *" --port "* ]] || break; PORT=$2; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) break ;;
    esac
  done
  [ $# -eq 0 ] || { echo "start.sh: unknown argument $1 (see --help)" >&2; exit 2; }
}

# The Debian packages not installed yet, installed (apt's output kept in a file only when it fails).
need_packages() {
  local missing=() pkg apt_log
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  log "installing ${missing[*]}"
  apt_log=$(mktemp "${TMPDIR:-/tmp}/$TAG-apt.XXXXXX")
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1 \
    || die "apt-get install failed, see $apt_log"
  rm -f "$apt_log"
}

# MariaDB is normally running; when it is not, "$@" (default: its service) starts it and
# started_mariadb says so: stop.sh stops only a MariaDB that its session's start started.
started_mariadb=false
mariadb_up() {
  db_up && return 0
  log "starting MariaDB"
  if [ $# -gt 0 ]; then
    "$@"
  else
    (service mariadb start || service mysql start) >/dev/null 2>&1 || true
  fi
  for _ in $(seq 60); do db_up && break; sleep 0.5; done
  db_up || die "MariaDB is not answering on $DB_HOST:$DB_PORT"
  started_mariadb=true
}

# A new session folder: in $TMPDIR when set, else /dev/shm (RAM), /tmp when that is not writable.
new_session_dir() {
  local base=/dev/shm
  [ -n "${TMPDIR:-}" ] && base=$TMPDIR
  [ -w "$base" ] || base=/tmp
  mktemp -d "$base/cmsuser-$TAG-XXXXXX"
}

# The session folder of a warm or fresh start (Drupal's): DIR when it holds an installed site (fresh=false),
# else DIR or a new folder for a fresh install (fresh=true); sets DIR (absolute) and STATE.
open_session() {
  fresh=true
  if [ -n "$DIR" ] && [ -f "$DIR/state.json" ]; then
    STATE="$DIR/state.json"
    if [ "$(state_get installed)" = 1 ]; then fresh=false; fi
  fi
  if $fresh; then
    [ -n "$DIR" ] || DIR=$(new_session_dir)
    mkdir -p "$DIR"
    chmod 0700 "$DIR"
  fi
  DIR=$(cd "$DIR" && pwd)
  STATE="$DIR/state.json"
}

# A comma-separated list (items trimmed, empty ones dropped) into the array API_PERMISSIONS.
set_permissions() {
  local wanted p
  IFS=',' read -r -a wanted <<<"$1"
  API_PERMISSIONS=()
  for p in "${wanted[@]}"; do p=$(echo "$p" | sed 's/^ *//; s/ *$//'); [ -n "$p" ] && API_PERMISSIONS+=("$p"); done
  return 0
}

# The REGISTRY record of a site (stop.sh --orphans reads it): file $1 holding the lines "${@:2}".
registry_add() {
  mkdir -p "$REGISTRY"
  printf '%s\n' "${@:2}" >"$REGISTRY/$1"
}

# A database and its own user: name, user, password, collation.
create_db() {
  db_admin <<SQL
CREATE DATABASE \`$1\` DEFAULT CHARACTER SET utf8mb4 COLLATE $4;
CREATE USER '$2'@'127.0.0.1' IDENTIFIED BY '$3';
GRANT ALL PRIVILEGES ON \`$1\`.* TO '$2'@'127.0.0.1';
SQL
}

# Process $1 is this site's PHP server (its command line names -S HOST:PORT): a recorded pid may be reused.
our_server() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "-S $HOST:$PORT "
}

# Runs step $1 of the site's install.php in WEB with php options "${@:2}" (and the environment the
# caller gives, names prefixed ENV_PREFIX), its output in install.log; prints the step's JSON answer.
install_step() {
  local step=$1
  shift
  (cd "$WEB" && env TMPDIR="$DIR/tmp" "${ENV_PREFIX}_RESULT=$DIR/install-$step.json" "${ENV_PREFIX}_HOST=$HOST:$PORT" \
    php -d memory_limit=512M "$@" "$HERE/install.php" "$step") >>"$DIR/install.log" 2>&1 \
    || { tail -n 30 "$DIR/install.log" >&2; die "install step '$step' failed, see $DIR/install.log"; }
  cat "$DIR/install-$step.json"
  rm -f "$DIR/install-$step.json"
}

# Starts `php "${@:2}"` (a php -S command line) in folder $1 as the leader of its own session and
# process group, so that stop.sh ends it with its forked workers; sets pid. The subshell execs into
# setsid (no shell of the script stays behind); the output goes to DIR/php-server.log and fd 9 (a
# start's lock) is closed, so the server holds neither the script's stdout nor its lock.
start_php_server() {
  local workdir=$1
  shift
  port_free "$PORT" || die "port $PORT (this site's port) is in use by something else"
  rm -f "$DIR/php-server.pid"
  (cd "$workdir" && PHP_CLI_SERVER_WORKERS="$WORKERS" exec setsid sh -c 'echo $$ >"$1"; shift; exec php "$@"' \
    sh "$DIR/php-server.pid" "$@") >>"$DIR/php-server.log" 2>&1 </dev/null 9>&- &
  for _ in $(seq 50); do [ -s "$DIR/php-server.pid" ] && break; sleep 0.1; done
  pid=$(cat "$DIR/php-server.pid")
}

# Drupal's (10 and 7) PHP server, unless ours already runs: from WEB (Drupal finds its files relative
# to the working folder; php -S does not change into -t) with router $1, mails to the capture script.
# Records its process group in the state; sets pid.
serve_drupal() {
  pid=$(state_get pgid)
  if our_server "$pid"; then
    log "already running (process group $pid)"
    return 0
  fi
  mkdir -p "$MAIL_DIR"
  start_php_server "$WEB" -d opcache.enable_cli=1 -d memory_limit=512M \
    -d "sendmail_path=$CAPTURE_MAIL $MAIL_DIR" -d "upload_tmp_dir=$DIR/tmp" \
    -S "$HOST:$PORT" -t "$WEB" "$1"
  printf '{"pgid": %d, "started_at": "%s", "started_mariadb": %s}' "$pid" "$(date -Is)" "$started_mariadb" | state_merge
}

# Runs "$@" (a request printing its HTTP status, 000 while nothing answers) until the server answers,
# at most 100 tries; sets code. Dies when the server (pid) has exited.
await_answer() {
  code=000
  for _ in $(seq 100); do
    code=$("$@" || true)
    [ "$code" = 000 ] || break
    kill -0 "$pid" 2>/dev/null || die "the PHP server exited; see $DIR/php-server.log"
    sleep 0.1
  done
}

# The state to the caller: into JSON_OUT (mode 0600) with only $1 (the site's address) printed, or printed.
hand_over() {
  if [ -n "$JSON_OUT" ]; then
    (umask 077; cp "$STATE" "$JSON_OUT.tmp" && mv "$JSON_OUT.tmp" "$JSON_OUT")
    echo "$1"
  else
    cat "$STATE"
  fi
}

# --- stop.sh ----------------------------------------------------------------------------------------
# stop_main "$@" is every stop.sh: [--purge] [DIR | DIR/state.json | a --json FILE of start.sh], or
# --orphans. The script sets TARGET (its env knob) and STOP_OPTIONS (more options it takes: --dir DIR,
# --keep-dir), sets PURGE=true when a session is always removed, and redefines the hooks below where
# its site differs.

# Ends a server's process group, TERM first.
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

# Drops a site's database and its user (named alike), only names shaped like start.sh's: a damaged
# state can never point this at another database. Fails when MariaDB is down (the record stays).
drop_db() {
  local db_name=$1 db_user=${2:-$1}
  if [[ "$db_name" =~ ^${SBX_PREFIX}[0-9a-f]+$ && "$db_user" == "$db_name" ]]; then
    if db_up; then
      db_admin -e "DROP DATABASE IF EXISTS \`$db_name\`; DROP USER IF EXISTS '$db_user'@'127.0.0.1';"
      log "dropped database and user $db_name"
    else
      log "MariaDB is down: database $db_name and its user were NOT dropped"
      return 1
    fi
  else
    log "not dropping '$db_name' (user '$db_user'): not a name start.sh makes"
  fi
}

# Hook: stops what serves the session in DIR: its PHP server, by the state's process group (or the
# pid file of a start that did not get to record it), if that is still ours.
stop_session() {
  HOST=$(state_get host)
  PORT=$(state_get port)
  local pgid
  pgid=$(state_get pgid)
  [ -n "$pgid" ] || pgid=$(cat "$DIR/php-server.pid" 2>/dev/null || true)
  if our_server "$pgid"; then
    stop_group "$pgid" "port $PORT"
  fi
  rm -f "$DIR/php-server.pid"
}

# Hook: what a stopped session's state says (without --purge).
STOPPED_STATE='{"pgid": null}'

# Hook (--purge): drops the database and its user, forgets the record, deletes the folder.
purge_session() {
  local db_name
  db_name=$(state_get db.name)
  drop_db "$db_name" && rm -f "$REGISTRY/$db_name"
  rm -rf "$DIR"
  log "removed the site of $DIR"
}

# Hook (--orphans): every site start.sh made, one line each: its database, session folder and what
# else its record holds, tab-separated.
list_sites() {
  local record
  for record in "$REGISTRY/$SBX_PREFIX"*; do
    [ -f "$record" ] || continue
    printf '%s\t%s\n' "$(basename "$record")" "$(paste -sd '\t' "$record")"
  done
}

# Hook (--orphans): stops what may still serve the gone folder $1 (the rest of its record in $2): PHP
# servers whose command line names -t $1/$WEB_ROOT.
WEB_ROOT=site
stop_orphan() {
  local dir=$1 pid
  for pid in $(pgrep -x php || true); do
    [ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$pid" ] || continue
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-t $dir/$WEB_ROOT " || continue
    stop_group "$pid" "orphan of $dir"
  done
}

# Hook (--orphans): forgets an orphan whose database is dropped: its record.
forget_orphan() { rm -f "$REGISTRY/$1"; }

purge_orphans() {
  local sites db_name dir rest found=0
  sites=$(list_sites)
  while IFS=$'\t' read -r db_name dir rest <&3; do
    [ -n "$db_name" ] || continue
    [ -f "$dir/state.json" ] && continue   # its session still exists
    found=$((found + 1))
    stop_orphan "$dir" "$rest"
    drop_db "$db_name" && forget_orphan "$db_name" "$dir"
    log "purged the orphaned site of $dir"
  done 3<<<"$sites"
  [ "$found" -gt 0 ] || log "no orphaned sites"
}

stop_main() {
  PURGE=${PURGE:-false}
  KEEP_DIR=false
  local orphans=false value started
  while [ $# -gt 0 ]; do
    case "$1" in
      --purge) PURGE=true; shift ;;
      --orphans) orphans=true; shift ;;
      -h|--help) usage; exit 0 ;;
      --dir|--keep-dir)
        [[ " ${STOP_OPTIONS:-} " == *" $1 "* ]] || { echo "stop.sh: unknown option $1" >&2; exit 2; }
        if [ "$1" = --dir ]; then TARGET=$2; shift 2; else KEEP_DIR=true; shift; fi ;;
      -*) echo "stop.sh: unknown option $1" >&2; exit 2 ;;
      *) TARGET=$1; shift ;;
    esac
  done
  if $orphans; then
    purge_orphans
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
  value=$(state_get db.host) && DB_HOST=${value:-$DB_HOST}
  value=$(state_get db.port) && DB_PORT=${value:-$DB_PORT}
  started=$(state_get started_mariadb)

  stop_session
  if $PURGE; then
    purge_session
  else
    echo "$STOPPED_STATE" | state_merge
  fi

  if [ "$started" = "1" ] && db_up; then
    mysqladmin --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root shutdown \
      && log "stopped MariaDB (this session's start.sh had started it)"
    if [ -f "$STATE" ]; then echo '{"started_mariadb": false}' | state_merge; fi
  fi
  return 0
}
