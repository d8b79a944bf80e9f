#!/usr/bin/env bash
# Start a real Drupal 10.5 (core JSON:API + HTTP Basic auth) on PHP's built-in server and MariaDB,
# on loopback, private to one test session: its own session folder (the extracted tree), database,
# DB user with a random name and password, mail capture folder and a free port.
#
# Usage: start.sh [--dir DIR] [--json FILE]
#   --dir   session folder (env REAL_DRUPAL_DIR); default a new folder in /dev/shm (or $TMPDIR).
#           A folder of an earlier start whose site is installed is reused: only the server
#           starts again (a warm start, on the site's recorded port when that is free).
#   --json  also write the state (connection details, secrets included) to FILE, mode 0600,
#           and print only the base URL; without it the state goes to stdout.
# The state is always kept in DIR/state.json (mode 0600); stop.sh reads it.
# Knobs: CMSUSER_THIRDPARTY (the archives' folder, default ../shared/thirdparty beside the
# project), REAL_DRUPAL_ARCHIVE (the Drupal archive itself), REAL_DRUPAL_WORKERS (php -S workers,
# default 4), REAL_DRUPAL_API_PERMISSIONS (comma-separated Drupal permissions of the API user's
# role on a fresh install, replacing the default list below).
# Progress goes to stderr. Stop with stop.sh --purge DIR; stop.sh --orphans cleans up after
# sessions whose folder is gone.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TAG=real-drupal
SBX_PREFIX=drupal_sbx_
. "$HERE/../realsite.sh"
ARCHIVE=${REAL_DRUPAL_ARCHIVE:-$THIRDPARTY/drupal-10.5.5-recommended-project-0745a9761a13.tar.gz}
DIR=${REAL_DRUPAL_DIR:-}
JSON_OUT=${REAL_DRUPAL_JSON:-}
WORKERS=${REAL_DRUPAL_WORKERS:-4}
start_args "$@"

ADMIN_LOGIN=admin
ADMIN_EMAIL=admin@example.test
API_LOGIN=cmsuser_api
API_EMAIL=cmsuser-api@example.test
API_ROLE=cmsuser_api
# What the pipeline's API user needs, found on this site (tests/contract/test_drupal_contract.py
# removes each in turn): 'administer users' creates accounts, sets status and roles and filters on
# mail; 'administer permissions' reads the roles (their UUIDs, is_admin) from JSON:API.
API_PERMISSIONS=("administer users" "administer permissions")
[ -z "${REAL_DRUPAL_API_PERMISSIONS:-}" ] || set_permissions "$REAL_DRUPAL_API_PERMISSIONS"

# --- (1) packages, only when something is missing ----------------------------------------------
need_packages mariadb-server mariadb-client php8.2-cli php8.2-mysql php8.2-gd php8.2-xml php8.2-mbstring \
  php8.2-curl php8.2-opcache curl
[ -f "$ARCHIVE" ] || die "the Drupal archive is not at $ARCHIVE (set CMSUSER_THIRDPARTY)"

# --- (2) MariaDB: started here only when it is not running --------------------------------------
mariadb_up

# --- (3) the session folder -----------------------------------------------------------------------
open_session
SITE="$DIR/site"
WEB="$SITE/web"
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
  php -r '[$_, $dir, $host, $port, $db, $dbpw, $dbhost, $dbport, $al, $ae, $ap, $ul, $ue, $up, $role, $perms, $mails] = $argv;
    echo json_encode([
      "session_dir" => $dir, "site_dir" => "$dir/site", "web_dir" => "$dir/site/web",
      "host" => $host, "port" => (int) $port, "base_url" => "http://$host:$port",
      "db" => ["name" => $db, "user" => $db, "password" => $dbpw, "host" => $dbhost, "port" => (int) $dbport],
      "admin" => ["login" => $al, "email" => $ae, "password" => $ap, "note" => "uid 1: for seeding tests only"],
      "api_user" => ["login" => $ul, "email" => $ue, "password" => $up, "role" => $role,
                     "permissions" => json_decode($perms)],
      "mail_dir" => $mails, "server_log" => "$dir/php-server.log", "installed" => false,
    ]);' "$DIR" "$HOST" "$PORT" "$DB_NAME" "$DB_PASSWORD" "$DB_HOST" "$DB_PORT" "$ADMIN_LOGIN" "$ADMIN_EMAIL" \
      "$ADMIN_PASSWORD" "$API_LOGIN" "$API_EMAIL" "$API_PASSWORD" "$API_ROLE" "$permissions_json" "$MAIL_DIR" \
    | state_merge
  registry_add "$DB_NAME" "$DIR"

  # --- (4) the tree: extracted into the session folder, with a fresh settings.php and files/ --------
  log "extracting Drupal ($(elapsed) s)"
  mkdir -p "$SITE" "$MAIL_DIR"
  tar -xzf "$ARCHIVE" -C "$SITE" --strip-components=1 --no-same-owner
  # The archive carries its own settings.php (a demo database as root) and files: never used.
  rm -rf "$WEB/sites/default/files" "$WEB/sites/default/settings.php"
  cp "$WEB/sites/default/default.settings.php" "$WEB/sites/default/settings.php"
  mkdir -p "$WEB/sites/default/files" "$DIR/private" "$DIR/tmp"

  # --- (5) database and its own user ----------------------------------------------------------------
  create_db "$DB_NAME" "$DB_USER" "$DB_PASSWORD" utf8mb4_general_ci

  # --- (6) install (core's installer) and configure (modules, roles, API user) ----------------------
  ENV_PREFIX=REAL_DRUPAL   # install.php's environment
  log "installing Drupal, standard profile ($(elapsed) s)"
  REAL_DRUPAL_DB_NAME="$DB_NAME" REAL_DRUPAL_DB_USER="$DB_USER" REAL_DRUPAL_DB_PASSWORD="$DB_PASSWORD" \
    REAL_DRUPAL_DB_HOST="$DB_HOST" REAL_DRUPAL_DB_PORT="$DB_PORT" REAL_DRUPAL_ADMIN_LOGIN="$ADMIN_LOGIN" \
    REAL_DRUPAL_ADMIN_EMAIL="$ADMIN_EMAIL" REAL_DRUPAL_ADMIN_PASSWORD="$ADMIN_PASSWORD" install_step install >/dev/null
  {
    echo ""
    echo "// Written by sandbox/real_drupal/start.sh for session $DIR."
    echo "\$settings['file_private_path'] = '$DIR/private';"
    echo "\$settings['file_temp_path'] = '$DIR/tmp';"
    echo "\$config['system.logging']['error_level'] = 'hide';"
  } >>"$WEB/sites/default/settings.php"
  log "configuring JSON:API, roles and the API user ($(elapsed) s)"
  configured=$(REAL_DRUPAL_API_ROLE="$API_ROLE" REAL_DRUPAL_API_PERMISSIONS="$permissions_json" \
    REAL_DRUPAL_API_LOGIN="$API_LOGIN" REAL_DRUPAL_API_EMAIL="$API_EMAIL" REAL_DRUPAL_API_PASSWORD="$API_PASSWORD" \
    install_step configure)
  printf '%s' "$configured" | php -r '$c = json_decode(stream_get_contents(STDIN), true);
    echo json_encode(["api_user" => ["uid" => $c["api_user_id"], "uuid" => $c["api_user_uuid"]],
      "roles" => $c["roles"], "languages" => $c["languages"], "drupal_version" => $c["drupal_version"]]);' \
    | state_merge
fi

PORT=$(state_get port)
API_LOGIN=$(state_get api_user.login)
API_PASSWORD=$(state_get api_user.password)
URL="http://$HOST:$PORT"

# --- (7) the PHP built-in server: its own session and process group ---------------------------------
serve_drupal "$WEB/.ht.router.php"

# --- (8) the API user can read JSON:API as itself (meta.links.me) before the site is handed over -------
api_check() {
  printf 'user = "%s:%s"\n' "$API_LOGIN" "$API_PASSWORD" \
    | curl -s -K - --max-time 30 -o "$DIR/check.json" -w '%{http_code}' "$URL/jsonapi"
}
await_answer api_check
if [ "$code" != 200 ] || ! grep -q '"me"' "$DIR/check.json"; then
  head -c 500 "$DIR/check.json" >&2 || true
  die "GET /jsonapi as the API user answered HTTP $code without meta.links.me (see $DIR/php-server.log)"
fi
rm -f "$DIR/check.json"
echo '{"installed": true}' | state_merge

log "ready at $URL ($(elapsed) s)"
hand_over "$URL"
