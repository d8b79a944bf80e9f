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
TAG=real-drupal7
SBX_PREFIX=drupal7_sbx_
. "$HERE/../realsite.sh"
CORE_ARCHIVE=$THIRDPARTY/drupal-7.101-pressflow-3e1b003667a5.tar.gz
MODULE_ARCHIVES=("$THIRDPARTY/services-7.x-3.20.tar.gz" "$THIRDPARTY/ctools-7.x-1.14.tar.gz"
                 "$THIRDPARTY/libraries-7.x-2.3.tar.gz")
DIR=${REAL_DRUPAL7_DIR:-}
JSON_OUT=""
WORKERS=${REAL_DRUPAL7_WORKERS:-4}
start_args "$@"

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
[ -z "${REAL_DRUPAL7_API_PERMISSIONS:-}" ] || set_permissions "$REAL_DRUPAL7_API_PERMISSIONS"

# --- (1) packages, only when something is missing ----------------------------------------------
need_packages mariadb-server mariadb-client php8.2-cli php8.2-mysql php8.2-gd php8.2-xml php8.2-mbstring \
  php8.2-curl php8.2-opcache curl
for archive in "$CORE_ARCHIVE" "${MODULE_ARCHIVES[@]}"; do
  [ -f "$archive" ] || die "the archive $archive is missing (set CMSUSER_THIRDPARTY)"
done

# --- (2) MariaDB: started here only when it is not running --------------------------------------
mariadb_up

# --- (3) the session folder -----------------------------------------------------------------------
open_session
WEB="$DIR/site"
MAIL_DIR="$DIR/mails"

if $fresh; then
  PORT=$(free_port)
  DB_NAME="$SBX_PREFIX$(random_hex 6)"
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
  registry_add "$DB_NAME" "$DIR"

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
  create_db "$DB_NAME" "$DB_USER" "$DB_PASSWORD" utf8mb4_general_ci

  # --- (6) install (core's installer) and configure (modules, endpoint, roles, API user) ------------
  ENV_PREFIX=REAL_DRUPAL7   # install.php's environment
  # Drupal 7's installer and configuration send mails: captured, then deleted.
  run_step() { install_step "$1" -d "sendmail_path=$CAPTURE_MAIL $MAIL_DIR"; }
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
serve_drupal "$HERE/router.php"

# --- (8) the API user can log in through the endpoint before the site is handed over ------------------
body=$(php -r 'echo json_encode(["username" => $argv[1], "password" => $argv[2]]);' "$API_LOGIN" "$API_PASSWORD")
api_check() {
  printf '%s' "$body" | curl -s --max-time 30 -o "$DIR/check.json" -w '%{http_code}' \
    -H 'Content-Type: application/json' -H 'Accept: application/json' --data-binary @- \
    "$URL/$ENDPOINT/user/login.json"
}
await_answer api_check
if [ "$code" != 200 ] || ! grep -q '"sessid"' "$DIR/check.json"; then
  head -c 500 "$DIR/check.json" >&2 || true
  die "POST /$ENDPOINT/user/login.json as the API user answered HTTP $code without a session (see $DIR/php-server.log)"
fi
rm -f "$DIR/check.json"
echo '{"installed": true}' | state_merge

log "ready at $URL ($(elapsed) s)"
hand_over "$URL"
