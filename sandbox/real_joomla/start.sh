#!/usr/bin/env bash
# Start a real Joomla 5 (the archive in ../shared/thirdparty) on PHP's built-in server and
# MariaDB, on loopback, private to one test session: its own session folder (the extracted site,
# its mails, its logs), database, DB user and port. Mails are captured, never sent: PHP's
# sendmail_path is capture-mail.sh, writing one file per mail into DIR/mails.
#
# Usage: start.sh [--dir DIR] [--port PORT] [--json FILE]
#   --dir   session folder (env REAL_JOOMLA_DIR). Default: the session an existing --json FILE
#           names, else a new folder in /dev/shm (in $TMPDIR if that is set): a fresh site.
#           Give the folder of an earlier start to start its server again (a warm start).
#   --port  loopback port for a fresh site (env REAL_JOOMLA_PORT). Default: a free one.
#   --json  write the connection details to FILE (env REAL_JOOMLA_JSON), mode 0600, and print
#           only the base URL; without it the JSON goes to stdout.
# The same JSON is kept in DIR/state.json (mode 0600); stop.sh reads it.
# Other knobs: CMSUSER_THIRDPARTY (the archives' folder, default ../shared/thirdparty beside the
# project), REAL_JOOMLA_ARCHIVE (the archive itself), REAL_JOOMLA_WORKERS (php -S workers, 4).
# Progress goes to stderr; secrets never do. Stop with stop.sh (--purge deletes the site).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TAG=real-joomla
SBX_PREFIX=joomla_sbx_
. "$HERE/../realsite.sh"
ARCHIVE=${REAL_JOOMLA_ARCHIVE:-$THIRDPARTY/joomla-5.3.1-b38a0b456105.tar.gz}
DIR=${REAL_JOOMLA_DIR:-}
PORT=${REAL_JOOMLA_PORT:-}
JSON_OUT=${REAL_JOOMLA_JSON:-}
WORKERS=${REAL_JOOMLA_WORKERS:-4}
START_OPTIONS=--port
start_args "$@"

ADMIN_LOGIN=admin
ADMIN_EMAIL=admin@example.test
API_LOGIN=airflow_api
API_EMAIL=airflow-api@example.test
API_GROUP="API clients"
MAIL_FROM=site@example.test

# --- (1) packages: only when something is missing --------------------------------------------
need_packages mariadb-server mariadb-client php8.2-cli php8.2-mysql php8.2-xml php8.2-mbstring php8.2-intl \
  php8.2-gd php8.2-curl curl

# --- (2) session folder -------------------------------------------------------------------------
if [ -z "$DIR" ] && [ -n "$JSON_OUT" ] && [ -s "$JSON_OUT" ]; then
  DIR=$(php -r '$s = json_decode(file_get_contents($argv[1]), true); echo is_array($s) ? ($s["session_dir"] ?? "") : "";' "$JSON_OUT")
  [ -n "$DIR" ] && [ -f "$DIR/state.json" ] || DIR=""
fi
if [ -z "$DIR" ]; then
  parent=${TMPDIR:-/tmp}
  if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ] \
     && [ "$(df -Pk /dev/shm | awk 'NR == 2 { print $4 }')" -gt 524288 ]; then
    parent=/dev/shm   # Joomla's 9,000 files unpack in under a second there
  fi
  DIR=$(mktemp -d "$parent/real-joomla.XXXXXXXX")
else
  mkdir -p "$DIR"
fi
DIR=$(cd "$DIR" && pwd)
chmod 0700 "$DIR"
exec 9>"$DIR/.lock"
flock 9
STATE="$DIR/state.json"
SITE="$DIR/site"

if [ -f "$STATE" ] && [ "$(state_get installed)" != "1" ]; then
  log "an earlier start in $DIR did not finish; removing what it made"
  "$HERE/stop.sh" --purge --keep-dir --dir "$DIR" >&2
fi

# --- (3) MariaDB: normally running; started only when down ---------------------------------------
start_mariadbd() {
  install -d -o mysql -g mysql /run/mysqld
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
}
mariadb_up start_mariadbd

if [ -f "$STATE" ]; then
  # ---------------------------------------------------------------- warm start
  PORT=$(state_get port)
  URL=$(state_get base_url)
  TOKEN=$(state_get api_token)
  [ -f "$SITE/configuration.php" ] || die "the site in $DIR is gone; run stop.sh --purge --dir $DIR, then start afresh"
  [ "$(state_get started_mariadb)" = "1" ] && started_mariadb=true
  fresh=false
else
  # ---------------------------------------------------------------- cold start
  [ -r "$ARCHIVE" ] || die "Joomla archive not found: $ARCHIVE"
  if [ -n "$PORT" ]; then
    port_free "$PORT" || die "port $PORT is in use; choose another REAL_JOOMLA_PORT"
  else
    PORT=$(free_port)
  fi
  URL="http://$HOST:$PORT"
  DB_NAME="$SBX_PREFIX$(random_hex 5)"
  DB_USER="$DB_NAME"
  DB_PASSWORD=$(random_secret 32)
  ADMIN_PASSWORD="$(random_secret 20)-Aa1"
  DB_PREFIX="jos_"
  fresh=true
  log "installing a fresh site in $DIR (database $DB_NAME, port $PORT)"
  REAL_JOOMLA_SECRETS="$DB_PASSWORD $ADMIN_PASSWORD" php -r '
    [$_, $dir, $url, $host, $port, $dbname, $dbhost, $dbport, $prefix, $al, $ae, $ul, $ue, $group, $sdb] = $argv;
    [$dbpass, $adminpass] = explode(" ", getenv("REAL_JOOMLA_SECRETS"));
    echo json_encode([
      "installed" => false, "base_url" => $url, "api_url" => "$url/api/index.php", "host" => $host, "port" => (int) $port,
      "api_user" => ["login" => $ul, "email" => $ue, "group" => $group],
      "admin" => ["login" => $al, "email" => $ae, "password" => $adminpass,
        "note" => "Super User: for seeding tests only"],
      "db" => ["name" => $dbname, "user" => $dbname, "password" => $dbpass, "host" => $dbhost, "port" => (int) $dbport,
        "prefix" => $prefix],
      "session_dir" => $dir, "site_dir" => "$dir/site", "mail_dir" => "$dir/mails",
      "server_log" => "$dir/php-server.log", "started_mariadb" => $sdb === "true",
    ]);' "$DIR" "$URL" "$HOST" "$PORT" "$DB_NAME" "$DB_HOST" "$DB_PORT" "$DB_PREFIX" \
      "$ADMIN_LOGIN" "$ADMIN_EMAIL" "$API_LOGIN" "$API_EMAIL" "$API_GROUP" "$started_mariadb" | state_merge

  # --- (4) files: the archive holds joomla-5/...; installation/ is deleted by the installer
  mkdir -p "$SITE" "$DIR/mails" "$DIR/tmp"
  tar -xzf "$ARCHIVE" -C "$SITE" --strip-components=1 --no-same-owner || die "extracting $ARCHIVE failed"

  # --- (5) database and its own user ------------------------------------------------------------
  create_db "$DB_NAME" "$DB_USER" "$DB_PASSWORD" utf8mb4_unicode_ci

  # --- (6) Joomla's own installer, then the API side (install.php) -----------------------------
  log "Joomla installer ($(elapsed) s)"
  # The password goes through the environment of a tiny PHP wrapper, not onto a command line
  # that ps would show: the wrapper puts the arguments together inside PHP.
  REAL_JOOMLA_DB_PASSWORD="$DB_PASSWORD" REAL_JOOMLA_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
    php -r '[$_, $site, $name, $al, $ae, $dbhost, $dbuser, $dbname, $prefix] = $argv;
      $_SERVER["argv"] = $argv = [$site . "/installation/joomla.php", "install", "-n", "--site-name=$name",
        "--admin-user=Site Administrator", "--admin-username=$al", "--admin-password=" . getenv("REAL_JOOMLA_ADMIN_PASSWORD"),
        "--admin-email=$ae", "--db-type=mysqli", "--db-host=$dbhost", "--db-user=$dbuser",
        "--db-pass=" . getenv("REAL_JOOMLA_DB_PASSWORD"), "--db-name=$dbname", "--db-prefix=$prefix", "--db-encryption=0"];
      $_SERVER["argc"] = $argc = count($argv);
      chdir($site . "/installation");
      require $site . "/installation/joomla.php";' \
      "$SITE" "Joomla sandbox" "$ADMIN_LOGIN" "$ADMIN_EMAIL" "$DB_HOST" "$DB_USER" "$DB_NAME" "$DB_PREFIX" \
      >>"$DIR/install.log" 2>&1 || { tail -n 20 "$DIR/install.log" >&2; die "Joomla's installer failed, see $DIR/install.log"; }
  [ -f "$SITE/configuration.php" ] || { tail -n 20 "$DIR/install.log" >&2; die "Joomla's installer wrote no configuration.php"; }
  log "API group, user and token ($(elapsed) s)"
  REAL_JOOMLA_SITE="$SITE" REAL_JOOMLA_RESULT="$DIR/install-result.json" REAL_JOOMLA_SESSION_DIR="$DIR" \
    REAL_JOOMLA_API_LOGIN="$API_LOGIN" REAL_JOOMLA_API_EMAIL="$API_EMAIL" REAL_JOOMLA_API_GROUP="$API_GROUP" \
    REAL_JOOMLA_MAIL_FROM="$MAIL_FROM" php "$HERE/install.php" >>"$DIR/install.log" 2>&1 \
    || { tail -n 20 "$DIR/install.log" >&2; die "install.php failed, see $DIR/install.log"; }
  php -r '$r = json_decode(file_get_contents($argv[1]), true);
    echo json_encode(["api_token" => $r["api_token"], "joomla_version" => $r["joomla_version"],
      "api_user" => ["id" => $r["api_user_id"], "group_id" => $r["api_group_id"]],
      "admin" => ["id" => $r["admin_user_id"], "token" => $r["admin_token"]]]);' "$DIR/install-result.json" | state_merge
  rm -f "$DIR/install-result.json"
  TOKEN=$(state_get api_token)
fi

# --- (7) the PHP built-in server, unless ours is already up -------------------------------------
pid=$(state_get pid)
if our_server "$pid"; then
  log "already running (pid $pid)"
else
  mkdir -p -m 0700 "$DIR/sessions" "$DIR/mails"
  # sendmail_path: Joomla's mailer "mail" calls PHP's mail(), which pipes into the capture script
  # (--umask 022: Joomla's mail files stay readable by all, as they were). Joomla finds its files
  # from -t, so the server needs no working folder of its own.
  start_php_server . -d opcache.enable_cli=1 -d memory_limit=256M -d "session.save_path=$DIR/sessions" \
    -d "sendmail_path=$CAPTURE_MAIL --umask 022 $DIR/mails" -d display_errors=0 -d log_errors=1 \
    -S "$HOST:$PORT" -t "$SITE"
  printf '{"pid": %d, "pgid": %d, "started_at": "%s"}' "$pid" "$pid" "$(date -Is)" | state_merge
fi
printf '{"started_mariadb": %s}' "$started_mariadb" | state_merge

# --- (8) prove the API answers with the token before handing the site over ----------------------
api_check() {
  printf 'header = "X-Joomla-Token: %s"\nheader = "Accept: application/vnd.api+json"\n' "$TOKEN" \
    | curl -s -K - --max-time 30 -o "$DIR/check.json" -w '%{http_code}' "$URL/api/index.php/v1/users/groups"
}
await_answer api_check
if [ "$code" != 200 ] || ! grep -q '"groups"' "$DIR/check.json"; then
  head -c 500 "$DIR/check.json" >&2 || true
  die "GET /api/index.php/v1/users/groups with the API token answered HTTP $code (see $DIR/php-server.log)"
fi
rm -f "$DIR/check.json"
$fresh && echo '{"installed": true}' | state_merge

log "ready at $URL ($(elapsed) s)"
hand_over "$URL"
