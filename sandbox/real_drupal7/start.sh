#!/usr/bin/env bash
# Start a real Drupal 7.101 + Services 7.x-3.20 (REST server, session auth) on PHP's built-in server
# and MariaDB, on loopback, private to one test session: its own session folder (the extracted
# tree), database, DB user with a random name and password, mail capture folder and a free port.
#
# Usage: start.sh [--dir DIR] [--json FILE]
#   --dir   session folder (env REAL_DRUPAL7_DIR); default a new folder in /dev/shm (or $TMPDIR).
#           A folder of an earlier start whose site is installed is reused: only the server starts.
#   --json  also write the state (connection details, secrets included) to FILE, mode 0600,
#           and print only the base URL; without it the state goes to stdout.
# The state is always kept in DIR/state.json (mode 0600); stop.sh reads it.
# Knobs: CMSUSER_THIRDPARTY (the archives' folder, default ../shared/thirdparty beside the project),
# REAL_DRUPAL7_WORKERS (php -S workers, default 4), REAL_DRUPAL7_API_PERMISSIONS (comma-separated
# permissions of the API user's role on a fresh install, replacing the default list below).
# Progress goes to stderr. Stop with stop.sh --purge DIR; stop.sh --orphans cleans up after sessions
# whose folder is gone.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
THIRDPARTY=${CMSUSER_THIRDPARTY:-$(cd "$HERE/../../.." && pwd)/shared/thirdparty}
CORE_ARCHIVE=$THIRDPARTY/drupal-7.101-pressflow-3e1b003667a5.tar.gz
MODULE_ARCHIVES=("$THIRDPARTY/services-7.x-3.20.tar.gz" "$THIRDPARTY/ctools-7.x-1.14.tar.gz"
                 "$THIRDPARTY/libraries-7.x-2.3.tar.gz")
DIR=${REAL_DRUPAL7_DIR:-}
JSON_OUT=""
WORKERS=${REAL_DRUPAL7_WORKERS:-4}
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=$2; shift 2 ;;
    --json) JSON_OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "start.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

HOST=127.0.0.1
DB_HOST=127.0.0.1
DB_PORT=3306
ENDPOINT=api
ADMIN_LOGIN=admin
ADMIN_EMAIL=admin@example.test
API_LOGIN=cmsuser_api
API_EMAIL=cmsuser-api@example.test
API_ROLE="cmsuser api"
# What the pipeline's API user needs, found on this site (tests/contract/test_drupal7_contract.py
# removes each in turn): 'administer users' creates accounts and sends the welcome mail;
# 'administer permissions' makes Services keep the roles of a new account (without it Drupal 7's
# form drops them silently); 'access user profiles' lists users through the index.
API_PERMISSIONS=("administer users" "administer permissions" "access user profiles")
if [ -n "${REAL_DRUPAL7_API_PERMISSIONS:-}" ]; then
  IFS=',' read -r -a wanted <<<"$REAL_DRUPAL7_API_PERMISSIONS"
  API_PERMISSIONS=()
  for p in "${wanted[@]}"; do p=$(echo "$p" | sed 's/^ *//; s/ *$//'); [ -n "$p" ] && API_PERMISSIONS+=("$p"); done
fi
REGISTRY=/var/tmp/cmsuser-real-drupal7   # one file per live site: its database -> its session folder
export DEBIAN_FRONTEND=noninteractive

t0=$(date +%s.%N)
log() { echo "[real-drupal7] $*" >&2; }
die() { log "$*"; exit 1; }
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
random_secret() { head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c "${1:-24}"; }
db_admin() { mysql --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root "$@"; }
db_up() { mysqladmin --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root ping >/dev/null 2>&1; }
port_free() { php -r 'exit(@stream_socket_server("tcp://127.0.0.1:" . $argv[1]) ? 0 : 1);' "$1"; }
free_port() { php -r '$s = stream_socket_server("tcp://127.0.0.1:0"); echo explode(":", stream_socket_get_name($s, false))[1];'; }
state_get() { php -r '$s = json_decode(file_get_contents($argv[1]), true); $v = $s;
  foreach (explode(".", $argv[2]) as $k) { $v = is_array($v) ? ($v[$k] ?? null) : null; }
  echo is_bool($v) ? ($v ? "1" : "0") : (is_array($v) ? json_encode($v) : (string) $v);' "$STATE" "$1"; }
state_merge() { (umask 077; php -r '$f = $argv[1]; $s = is_file($f) ? json_decode(file_get_contents($f), true) : [];
  $s = array_replace_recursive($s, json_decode(stream_get_contents(STDIN), true));
  file_put_contents("$f.tmp", json_encode($s, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n"); rename("$f.tmp", $f);' "$STATE"); }

# --- (1) packages, only when something is missing ----------------------------------------------
missing=()
for pkg in mariadb-server mariadb-client php8.2-cli php8.2-mysql php8.2-gd php8.2-xml php8.2-mbstring \
           php8.2-curl php8.2-opcache curl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt_log=$(mktemp "${TMPDIR:-/tmp}/real-drupal7-apt.XXXXXX")
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1 \
    || die "apt-get install failed, see $apt_log"
  rm -f "$apt_log"
fi
for archive in "$CORE_ARCHIVE" "${MODULE_ARCHIVES[@]}"; do
  [ -f "$archive" ] || die "the archive $archive is missing (set CMSUSER_THIRDPARTY)"
done

# --- (2) MariaDB: started here only when it is not running --------------------------------------
started_mariadb=false
if ! db_up; then
  log "starting MariaDB"
  (service mariadb start || service mysql start) >/dev/null 2>&1 || true
  for _ in $(seq 60); do db_up && break; sleep 0.5; done
  db_up || die "MariaDB is not answering on $DB_HOST:$DB_PORT"
  started_mariadb=true
fi

# --- (3) the session folder -----------------------------------------------------------------------
fresh=true
if [ -n "$DIR" ] && [ -f "$DIR/state.json" ]; then
  STATE="$DIR/state.json"
  [ "$(state_get installed)" = 1 ] && fresh=false
fi
if $fresh; then
  if [ -z "$DIR" ]; then
    base=/dev/shm
    [ -n "${TMPDIR:-}" ] && base=$TMPDIR
    [ -w "$base" ] || base=/tmp
    DIR=$(mktemp -d "$base/cmsuser-real-drupal7-XXXXXX")
  fi
  mkdir -p "$DIR"
  chmod 0700 "$DIR"
fi
DIR=$(cd "$DIR" && pwd)
STATE="$DIR/state.json"
WEB="$DIR/site"
MAIL_DIR="$DIR/mails"

if $fresh; then
  PORT=$(free_port)
  suffix=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
  DB_NAME="drupal7_sbx_$suffix"
  DB_USER=$DB_NAME
  DB_PASSWORD=$(random_secret 24)
  ADMIN_PASSWORD=$(random_secret 20)
  API_PASSWORD=$(random_secret 24)
  permissions_json=$(php -r 'echo json_encode(array_slice($argv, 1));' -- "${API_PERMISSIONS[@]}")
  rm -f "$STATE"
  php -r '[$_, $dir, $host, $port, $db, $dbpw, $dbhost, $dbport, $al, $ae, $ap, $ul, $ue, $up, $role, $perms, $mails, $ep] = $argv;
    echo json_encode([
      "session_dir" => $dir, "web_dir" => "$dir/site", "host" => $host, "port" => (int) $port,
      "base_url" => "http://$host:$port", "endpoint" => $ep,
      "db" => ["name" => $db, "user" => $db, "password" => $dbpw, "host" => $dbhost, "port" => (int) $dbport],
      "admin" => ["login" => $al, "email" => $ae, "password" => $ap, "note" => "uid 1: for seeding tests only"],
      "api_user" => ["login" => $ul, "email" => $ue, "password" => $up, "role" => $role,
                     "permissions" => json_decode($perms)],
      "mail_dir" => $mails, "server_log" => "$dir/php-server.log", "installed" => false,
    ]);' "$DIR" "$HOST" "$PORT" "$DB_NAME" "$DB_PASSWORD" "$DB_HOST" "$DB_PORT" "$ADMIN_LOGIN" "$ADMIN_EMAIL" \
      "$ADMIN_PASSWORD" "$API_LOGIN" "$API_EMAIL" "$API_PASSWORD" "$API_ROLE" "$permissions_json" "$MAIL_DIR" \
      "$ENDPOINT" | state_merge
  mkdir -p "$REGISTRY"
  printf '%s\n' "$DIR" >"$REGISTRY/$DB_NAME"

  # --- (4) the tree: core, then the three modules into sites/all/modules ----------------------------
  log "extracting Drupal 7 and Services ($(elapsed) s)"
  mkdir -p "$WEB" "$MAIL_DIR" "$DIR/tmp" "$DIR/private"
  tar -xzf "$CORE_ARCHIVE" -C "$WEB" --strip-components=1 --no-same-owner
  mkdir -p "$WEB/sites/all/modules"
  for archive in "${MODULE_ARCHIVES[@]}"; do
    tar -xzf "$archive" -C "$WEB/sites/all/modules" --no-same-owner
  done
  # Services 7.x-3.20 under PHP 8: RESTServer::uri_formatter() calls join() with its arguments
  # reversed, a TypeError that turns every successful create into a 500 page (the user exists).
  rest_inc="$WEB/sites/all/modules/services/servers/rest_server/includes/RESTServer.inc"
  grep -q "join(\$path, '/')" "$rest_inc" || die "RESTServer.inc no longer has the join() call to fix"
  sed -i "s|join(\$path, '/')|join('/', \$path)|" "$rest_inc"
  rm -f "$WEB/sites/default/settings.php"
  cp "$WEB/sites/default/default.settings.php" "$WEB/sites/default/settings.php"
  mkdir -p "$WEB/sites/default/files"

  # --- (5) database and its own user ----------------------------------------------------------------
  db_admin <<SQL
CREATE DATABASE \`$DB_NAME\` DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
CREATE USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'127.0.0.1';
SQL

  # --- (6) install (core's installer) and configure (modules, endpoint, roles, API user) ------------
  run_step() {
    local step=$1
    (cd "$WEB" && TMPDIR="$DIR/tmp" REAL_DRUPAL7_RESULT="$DIR/install-$step.json" REAL_DRUPAL7_HOST="$HOST:$PORT" \
      php -d memory_limit=512M -d "sendmail_path=$HERE/capture-mail.sh $MAIL_DIR" "$HERE/install.php" "$step") \
      >>"$DIR/install.log" 2>&1 \
      || { tail -n 30 "$DIR/install.log" >&2; die "install step '$step' failed, see $DIR/install.log"; }
    cat "$DIR/install-$step.json"
    rm -f "$DIR/install-$step.json"
  }
  log "installing Drupal 7, standard profile ($(elapsed) s)"
  REAL_DRUPAL7_DB_NAME="$DB_NAME" REAL_DRUPAL7_DB_USER="$DB_USER" REAL_DRUPAL7_DB_PASSWORD="$DB_PASSWORD" \
    REAL_DRUPAL7_DB_HOST="$DB_HOST" REAL_DRUPAL7_DB_PORT="$DB_PORT" REAL_DRUPAL7_ADMIN_LOGIN="$ADMIN_LOGIN" \
    REAL_DRUPAL7_ADMIN_EMAIL="$ADMIN_EMAIL" REAL_DRUPAL7_ADMIN_PASSWORD="$ADMIN_PASSWORD" run_step install >/dev/null
  {
    echo ""
    echo "// Written by sandbox/real_drupal7/start.sh for session $DIR."
    echo "\$conf['file_temporary_path'] = '$DIR/tmp';"
    echo "\$conf['file_private_path'] = '$DIR/private';"
    echo "\$conf['error_level'] = 0;"
    echo "\$conf['drupal_http_request_fails'] = FALSE;"
  } >>"$WEB/sites/default/settings.php"
  rm -f "$MAIL_DIR"/*.eml   # the installer's own mails
  log "configuring Services, roles and the API user ($(elapsed) s)"
  configured=$(REAL_DRUPAL7_API_ROLE="$API_ROLE" REAL_DRUPAL7_API_PERMISSIONS="$permissions_json" \
    REAL_DRUPAL7_API_LOGIN="$API_LOGIN" REAL_DRUPAL7_API_EMAIL="$API_EMAIL" REAL_DRUPAL7_API_PASSWORD="$API_PASSWORD" \
    REAL_DRUPAL7_ENDPOINT="$ENDPOINT" run_step configure)
  printf '%s' "$configured" | php -r '$c = json_decode(stream_get_contents(STDIN), true);
    echo json_encode(["api_user" => ["uid" => $c["api_user_id"], "rid" => $c["api_role_id"]],
      "roles" => $c["roles"], "admin_role_id" => $c["admin_role_id"], "languages" => $c["languages"],
      "drupal_version" => $c["drupal_version"]]);' | state_merge
  rm -f "$MAIL_DIR"/*.eml
fi

PORT=$(state_get port)
API_LOGIN=$(state_get api_user.login)
API_PASSWORD=$(state_get api_user.password)
ENDPOINT=$(state_get endpoint)
URL="http://$HOST:$PORT"

# --- (7) the PHP built-in server: its own session and process group ---------------------------------
pid=$(state_get pgid)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-S $HOST:$PORT "; then
  log "already running (process group $pid)"
else
  port_free "$PORT" || die "port $PORT (this site's port) is in use by something else"
  rm -f "$DIR/php-server.pid"
  mkdir -p "$MAIL_DIR"
  # sendmail_path: PHP's mail() hands every message to the capture script (nothing is delivered).
  (cd "$WEB" && PHP_CLI_SERVER_WORKERS="$WORKERS" exec setsid sh -c 'echo $$ >"$1"; shift; exec php "$@"' \
      sh "$DIR/php-server.pid" -d opcache.enable_cli=1 -d memory_limit=512M \
      -d "sendmail_path=$HERE/capture-mail.sh $MAIL_DIR" -d "upload_tmp_dir=$DIR/tmp" \
      -S "$HOST:$PORT" -t "$WEB" "$HERE/router.php") >>"$DIR/php-server.log" 2>&1 </dev/null &
  for _ in $(seq 50); do [ -s "$DIR/php-server.pid" ] && break; sleep 0.1; done
  pid=$(cat "$DIR/php-server.pid")
  printf '{"pgid": %d, "started_at": "%s", "started_mariadb": %s}' "$pid" "$(date -Is)" "$started_mariadb" | state_merge
fi

# --- (8) the API user can log in through the endpoint before the site is handed over ------------------
code=000
body=$(php -r 'echo json_encode(["username" => $argv[1], "password" => $argv[2]]);' "$API_LOGIN" "$API_PASSWORD")
for _ in $(seq 100); do
  code=$(printf '%s' "$body" | curl -s --max-time 30 -o "$DIR/check.json" -w '%{http_code}' \
    -H 'Content-Type: application/json' -H 'Accept: application/json' --data-binary @- \
    "$URL/$ENDPOINT/user/login.json" || true)
  [ "$code" = 000 ] || break
  kill -0 "$pid" 2>/dev/null || die "the PHP server exited; see $DIR/php-server.log"
  sleep 0.1
done
if [ "$code" != 200 ] || ! grep -q '"sessid"' "$DIR/check.json"; then
  head -c 500 "$DIR/check.json" >&2 || true
  die "POST /$ENDPOINT/user/login.json as the API user answered HTTP $code without a session (see $DIR/php-server.log)"
fi
rm -f "$DIR/check.json"
echo '{"installed": true}' | state_merge

log "ready at $URL ($(elapsed) s)"
if [ -n "$JSON_OUT" ]; then
  (umask 077; cp "$STATE" "$JSON_OUT.tmp" && mv "$JSON_OUT.tmp" "$JSON_OUT")
  echo "$URL"
else
  cat "$STATE"
fi
