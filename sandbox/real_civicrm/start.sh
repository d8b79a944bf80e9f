#!/usr/bin/env bash
# Start a real CiviCRM 5.76.2 inside Debian's WordPress (PHP built-in server + MariaDB) on
# loopback, private to one test session: its own session folder, database, DB user,
# /etc/wordpress config, WP_CONTENT_DIR and port. Nothing is shared with other sessions or with
# sandbox/real_wordpress (which owns config-127.0.0.1.php and port 8089).
#
# Usage: start.sh [--dir DIR] [--port PORT] [--json FILE]
#   --dir   session folder (env REAL_CIVICRM_DIR). Default: the session an existing --json
#           FILE names, else a new folder in /dev/shm (in $TMPDIR if that is set): a fresh
#           site. Give the folder (or the --json file) of an earlier start to reuse its site
#           (a warm start: only the server starts again).
#   --port  loopback port for a fresh site (env REAL_CIVICRM_PORT). Default: a free one.
#           A warm start keeps the site's port: the URL is baked into WordPress and CiviCRM.
#   --json  write the connection details to FILE (env REAL_CIVICRM_JSON), mode 0600, and
#           print only the base URL; without it the JSON goes to stdout.
# The same JSON is always kept in DIR/state.json (mode 0600); stop.sh reads it.
# Other knobs: CMSUSER_THIRDPARTY (the archives' folder, default ../shared/thirdparty beside the
# project), REAL_CIVICRM_ARCHIVE (the CiviCRM archive itself), REAL_CIVICRM_WORKERS (php -S
# workers, default 4), REAL_CIVICRM_API_PERMISSIONS (comma-separated CiviCRM permissions of
# the API user's role on a fresh install, replacing the default list below).
# Progress goes to stderr. Stop with stop.sh (add --purge to delete the site).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The archives are test fixtures beside the project (../shared/thirdparty), or where
# CMSUSER_THIRDPARTY says; they are extracted per session, never copied into the project.
THIRDPARTY=${CMSUSER_THIRDPARTY:-$(cd "$HERE/../../.." && pwd)/shared/thirdparty}
ARCHIVE=${REAL_CIVICRM_ARCHIVE:-$THIRDPARTY/civicrm-5.76.2-wordpress-4b55d645d98c.tar.gz}
DIR=${REAL_CIVICRM_DIR:-}
PORT=${REAL_CIVICRM_PORT:-}
JSON_OUT=${REAL_CIVICRM_JSON:-}
WORKERS=${REAL_CIVICRM_WORKERS:-4}
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --json) JSON_OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "start.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

HOST=127.0.0.1
DB_HOST=127.0.0.1
DB_PORT=3306
ADMIN_LOGIN=admin
ADMIN_EMAIL=admin@example.test
API_LOGIN=civicrm_api
API_EMAIL=civicrm-api@example.test
API_ROLE=civicrm_api_client
# The API user's CiviCRM permissions: exactly what the README documents for the pipeline, none
# implied by another ('administer CiviCRM' implies 'access CiviCRM'; 'edit all contacts' implies
# 'view all contacts'). Without 'administer CiviCRM', UFMatch.get/save and OptionValue.save
# answer 403 and joins on UFMatch are dropped silently. The user is not a WordPress
# administrator (those pass every check), and Contact.create ("add contacts") stays refused:
# seed contacts with the admin's key.
API_PERMISSIONS=("authenticate with api key" "edit all contacts" "view all activities" "administer CiviCRM")
if [ -n "${REAL_CIVICRM_API_PERMISSIONS:-}" ]; then
  IFS=',' read -r -a wanted <<<"$REAL_CIVICRM_API_PERMISSIONS"
  API_PERMISSIONS=()
  for p in "${wanted[@]}"; do p=$(echo "$p" | sed 's/^ *//; s/ *$//'); [ -n "$p" ] && API_PERMISSIONS+=("$p"); done
fi
export DEBIAN_FRONTEND=noninteractive

t0=$(date +%s.%N)
log() { echo "[real-civicrm] $*" >&2; }
die() { log "$*"; exit 1; }
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
random_secret() { head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c "${1:-32}"; }
db_admin() { mysql --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root "$@"; }
db_up() { mysqladmin --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root ping >/dev/null 2>&1; }
port_free() { php -r 'exit(@stream_socket_server("tcp://127.0.0.1:" . $argv[1]) ? 0 : 1);' "$1"; }
free_port() { php -r '$s = stream_socket_server("tcp://127.0.0.1:0"); echo explode(":", stream_socket_get_name($s, false))[1];'; }
# state.json is the one source of truth between start.sh and stop.sh.
state_get() { php -r '$s = json_decode(file_get_contents($argv[1]), true); $v = $s;
  foreach (explode(".", $argv[2]) as $k) { $v = is_array($v) ? ($v[$k] ?? null) : null; }
  echo is_bool($v) ? ($v ? "1" : "0") : (is_array($v) ? json_encode($v) : (string) $v);' "$STATE" "$1"; }
# Merges a JSON object (stdin) into state.json, atomically and readable by root only.
state_merge() { (umask 077; php -r '$f = $argv[1]; $s = is_file($f) ? json_decode(file_get_contents($f), true) : [];
  $s = array_replace_recursive($s, json_decode(stream_get_contents(STDIN), true));
  file_put_contents("$f.tmp", json_encode($s, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n"); rename("$f.tmp", $f);' "$STATE"); }
# Is the recorded server still ours? Guards against a recycled pid.
server_alive() {
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-S $HOST:$PORT "
}

# --- (1) packages: only when something is missing ------------------------------------------
missing=()
# php8.2-intl: CiviCRM formats dates with IntlDateFormatter (its pages die without it).
for pkg in wordpress mariadb-server mariadb-client php8.2-cli php8.2-mysql php8.2-curl php8.2-xml php8.2-mbstring php8.2-intl curl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  apache_was_running=false
  pgrep -x apache2 >/dev/null 2>&1 && apache_was_running=true
  log "installing ${missing[*]}"
  apt_log=$(mktemp "${TMPDIR:-/tmp}/real-civicrm-apt.XXXXXX")   # kept only when it failed
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1 \
    || die "apt-get install failed, see $apt_log"
  rm -f "$apt_log"
  # The wordpress package pulls in Apache, which may start on :80; we serve with php -S.
  if ! $apache_was_running && pgrep -x apache2 >/dev/null 2>&1; then
    log "stopping the Apache that the package install started"
    apache2ctl stop >/dev/null 2>&1 || service apache2 stop >/dev/null 2>&1 || true
  fi
fi

# --- (2) session folder and its state --------------------------------------------------------
# A --json file from an earlier start names its session, so the same command line is idempotent.
if [ -z "$DIR" ] && [ -n "$JSON_OUT" ] && [ -s "$JSON_OUT" ]; then
  DIR=$(php -r '$s = json_decode(file_get_contents($argv[1]), true); echo is_array($s) ? ($s["session_dir"] ?? "") : "";' "$JSON_OUT")
  [ -n "$DIR" ] && [ -f "$DIR/state.json" ] || DIR=""
fi
if [ -z "$DIR" ]; then
  # Prefer RAM: unpacking CiviCRM's 19,000 files took 1.4 s on /dev/shm but 4-15 s on this
  # machine's ext4 /tmp (deleting them as long). A session needs about 170 MB there.
  parent=${TMPDIR:-/tmp}
  if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ] \
     && [ "$(df -Pk /dev/shm | awk 'NR == 2 { print $4 }')" -gt 1048576 ]; then
    parent=/dev/shm
  fi
  DIR=$(mktemp -d "$parent/real-civicrm.XXXXXXXX")
else
  mkdir -p "$DIR"
fi
DIR=$(cd "$DIR" && pwd)
chmod 0700 "$DIR"
# Two starts of one session at once would install twice: the second waits, then finds it up.
exec 9>"$DIR/.lock"
flock 9
STATE="$DIR/state.json"
CONTENT_DIR="$DIR/wp-content"

# A start that failed half-way leaves a state without "installed": clear it and begin again.
if [ -f "$STATE" ] && [ "$(state_get installed)" != "1" ]; then
  log "an earlier start in $DIR did not finish; removing what it made"
  "$HERE/stop.sh" --purge --keep-dir --dir "$DIR" >&2
fi
if [ ! -f "$STATE" ] && [ -e "$CONTENT_DIR" ]; then
  die "$DIR holds a wp-content that is not ours; pick another --dir"
fi

# --- (3) MariaDB: normally running here; start it only when it is down -----------------------
started_mariadb=false
if ! db_up; then
  log "starting MariaDB"
  install -d -o mysql -g mysql /run/mysqld
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 60); do db_up && break; sleep 0.5; done
  db_up || die "MariaDB did not come up"
  started_mariadb=true
fi

if [ -f "$STATE" ]; then
  # ---------------------------------------------------------------- warm start
  site_port=$(state_get port)
  [ -z "$PORT" ] || [ "$PORT" = "$site_port" ] \
    || die "the site in $DIR lives on port $site_port, not $PORT (its URL is in its config)"
  PORT=$site_port
  URL=$(state_get base_url)
  CONFIG_NAME=$(state_get wp_config_name)
  DB_NAME=$(state_get db.name)
  API_KEY=$(state_get api_key)
  [ -f "/etc/wordpress/config-$CONFIG_NAME.php" ] \
    || die "the site's config /etc/wordpress/config-$CONFIG_NAME.php is gone; run stop.sh --purge --dir $DIR, then start afresh"
  [ -n "$(db_admin -N -e "SHOW DATABASES LIKE '$DB_NAME'")" ] \
    || die "the site's database $DB_NAME is gone; run stop.sh --purge --dir $DIR, then start afresh"
  # Once ours, MariaDB stays ours until stop.sh stops it.
  [ "$(state_get started_mariadb)" = "1" ] && started_mariadb=true
  fresh=false
else
  # ---------------------------------------------------------------- cold start
  [ -r "$ARCHIVE" ] || die "CiviCRM archive not found: $ARCHIVE"
  if [ -n "$PORT" ]; then
    port_free "$PORT" || die "port $PORT is in use; choose another REAL_CIVICRM_PORT"
  else
    PORT=$(free_port)
  fi
  URL="http://$HOST:$PORT"
  SUFFIX=$(head -c 5 /dev/urandom | od -An -tx1 | tr -d ' \n')
  # Debian's wp-config.php accepts only [a-zA-Z0-9-] in WORDPRESS_CONFIG, hence no dots or colon.
  CONFIG_NAME="civicrm-${HOST//./-}-$PORT-$SUFFIX"
  CONFIG="/etc/wordpress/config-$CONFIG_NAME.php"
  DB_NAME="civicrm_sbx_$SUFFIX"
  DB_USER="$DB_NAME"
  DB_PASSWORD=$(random_secret 32)
  ADMIN_PASSWORD=$(random_secret 24)
  API_KEY=$(random_secret 32)   # civicrm_contact.api_key is varchar(32)
  ADMIN_API_KEY=$(random_secret 32)
  fresh=true
  log "installing a fresh site in $DIR (database $DB_NAME, port $PORT)"

  # Written first, so that stop.sh --purge can clean up whatever a failing install leaves.
  permissions_json=$(printf '%s\n' "${API_PERMISSIONS[@]}" | php -r 'echo json_encode(file("php://stdin", FILE_IGNORE_NEW_LINES), JSON_UNESCAPED_SLASHES);')
  REAL_CIVICRM_SECRETS="$DB_PASSWORD $ADMIN_PASSWORD $API_KEY $ADMIN_API_KEY" php -r '
    [$_, $dir, $url, $host, $port, $cfgname, $cfg, $dbname, $dbhost, $dbport, $al, $ae, $ul, $ue, $role, $perms, $sdb] = $argv;
    [$dbpass, $adminpass, $key, $adminkey] = explode(" ", getenv("REAL_CIVICRM_SECRETS"));
    echo json_encode([
      "installed" => false, "base_url" => $url, "host" => $host, "port" => (int) $port,
      "api4_url_template" => "$url/?civiwp=CiviCRM&q=civicrm/ajax/api4/{entity}/{action}",
      "api_key" => $key,
      "api_headers" => ["X-Civi-Auth" => "Bearer $key", "X-Requested-With" => "XMLHttpRequest"],
      "api_user" => ["login" => $ul, "email" => $ue, "role" => $role, "permissions" => json_decode($perms)],
      "admin" => ["login" => $al, "email" => $ae, "password" => $adminpass,
        "api_key" => $adminkey, "note" => "WordPress administrator: every CiviCRM permission; for seeding tests only"],
      "wp_rest_url" => "$url/?rest_route=/",
      "db" => ["name" => $dbname, "user" => $dbname, "password" => $dbpass, "host" => $dbhost, "port" => (int) $dbport],
      "wp_config_name" => $cfgname, "wp_config" => $cfg,
      "session_dir" => $dir, "content_dir" => "$dir/wp-content",
      "server_log" => "$dir/php-server.log",
      "civicrm_log_dir" => "$dir/wp-content/uploads/civicrm/ConfigAndLog", "started_mariadb" => $sdb === "true",
      "mail_log" => "$dir/mails.jsonl",
    ]);' "$DIR" "$URL" "$HOST" "$PORT" "$CONFIG_NAME" "$CONFIG" "$DB_NAME" "$DB_HOST" "$DB_PORT" \
      "$ADMIN_LOGIN" "$ADMIN_EMAIL" "$API_LOGIN" "$API_EMAIL" "$API_ROLE" "$permissions_json" "$started_mariadb" \
    | state_merge

  # --- (4) CiviCRM's files: unpacked meanwhile (1-15 s, depending on the disk) --------------
  mkdir -p "$CONTENT_DIR/plugins" "$CONTENT_DIR/mu-plugins" "$CONTENT_DIR/uploads"
  ( tar -xzf "$ARCHIVE" -C "$CONTENT_DIR/plugins" --no-same-owner \
      --transform 's,^civicrm-wordpress,civicrm,' ) &
  tar_pid=$!
  install -m 0644 "$HERE/real-civicrm-mu-plugin.php" "$CONTENT_DIR/mu-plugins/real-civicrm-mu-plugin.php"
  # the same mail capture and "member" role as the project's real WordPress (for the DAG's tests)
  install -m 0644 "$HERE/../real_wordpress/cmsuser-test-mu-plugin.php" "$CONTENT_DIR/mu-plugins/cmsuser-test-mu-plugin.php"

  # --- (5) database and its own user (over TCP, as the site connects) -------------------------
  db_admin <<SQL
CREATE DATABASE \`$DB_NAME\` DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'127.0.0.1';
SQL

  # --- (6) the WordPress config, named for host, port and session ---------------------------
  mkdir -p /etc/wordpress
  (umask 027; : >"$CONFIG.tmp")
  chgrp www-data "$CONFIG.tmp" 2>/dev/null || true
  {
    echo "<?php"
    echo "// real-civicrm session dir=$DIR port=$PORT (written by sandbox/real_civicrm/start.sh;"
    echo "// removed by stop.sh --purge). Chosen per request by WORDPRESS_CONFIG, see router.php."
    echo "define('DB_NAME', '$DB_NAME');"
    echo "define('DB_USER', '$DB_USER');"
    echo "define('DB_PASSWORD', '$DB_PASSWORD');"
    echo "define('DB_HOST', '$DB_HOST:$DB_PORT');"
    echo "define('WP_CONTENT_DIR', '$CONTENT_DIR');   // plugins/civicrm, uploads/civicrm: ours alone"
    echo "define('WP_CONTENT_URL', '$URL/wp-content');"
    echo "define('WP_HOME', '$URL');"
    echo "define('WP_SITEURL', '$URL');"
    echo "define('WP_ENVIRONMENT_TYPE', 'local');   // application passwords without HTTPS"
    echo "define('DISABLE_WP_CRON', true);"
    echo "define('WP_HTTP_BLOCK_EXTERNAL', true);   // no outbound HTTP"
    echo "define('AUTOMATIC_UPDATER_DISABLED', true);"
    echo "define('CMSUSER_MAIL_LOG', '$DIR/mails.jsonl');   // mails captured, never sent"
    echo "\$table_prefix = 'wp_';"
    for key in AUTH_KEY SECURE_AUTH_KEY LOGGED_IN_KEY NONCE_KEY AUTH_SALT SECURE_AUTH_SALT LOGGED_IN_SALT NONCE_SALT; do
      echo "define('$key', '$(random_secret 64)');"
    done
  } >"$CONFIG.tmp"
  mv "$CONFIG.tmp" "$CONFIG"

  # --- (7) install WordPress, then CiviCRM, then the API user and settings (see install.php) --
  export REAL_CIVICRM_HOST="$HOST:$PORT" REAL_CIVICRM_WP_CONFIG="$CONFIG_NAME"
  export REAL_CIVICRM_ADMIN_LOGIN="$ADMIN_LOGIN" REAL_CIVICRM_ADMIN_EMAIL="$ADMIN_EMAIL"
  # TMPDIR: Civi\Setup leaves a Smarty compile folder (templates_cXXXXXX.d) in the temp folder
  # behind each install; in the session folder, purging the session removes it.
  mkdir -p "$DIR/tmp"
  run_step() {
    local step=$1
    TMPDIR="$DIR/tmp" REAL_CIVICRM_RESULT="$DIR/install-$step.json" php "$HERE/install.php" "$step" \
      >>"$DIR/install.log" 2>&1 || { tail -n 30 "$DIR/install.log" >&2; die "install step '$step' failed, see $DIR/install.log"; }
    cat "$DIR/install-$step.json"
    rm -f "$DIR/install-$step.json"
  }
  log "WordPress ($(elapsed) s)"
  wp_result=$(REAL_CIVICRM_ADMIN_PASSWORD="$ADMIN_PASSWORD" run_step wordpress)
  wait "$tar_pid" || die "extracting $ARCHIVE failed"
  log "CiviCRM: files and database ($(elapsed) s)"
  run_step civicrm >/dev/null
  log "API user and settings ($(elapsed) s)"
  api_result=$(REAL_CIVICRM_API_LOGIN="$API_LOGIN" REAL_CIVICRM_API_EMAIL="$API_EMAIL" \
    REAL_CIVICRM_API_KEY="$API_KEY" REAL_CIVICRM_ADMIN_API_KEY="$ADMIN_API_KEY" REAL_CIVICRM_API_ROLE="$API_ROLE" \
    REAL_CIVICRM_API_PERMISSIONS="$permissions_json" run_step configure)
  php -r '[$_, $w, $a] = $argv; $w = json_decode($w, true); $a = json_decode($a, true);
    echo json_encode(["admin" => ["user_id" => $w["admin_user_id"], "contact_id" => $a["admin_contact_id"],
        "app_password" => $a["admin_app_password"]],
      "site_key" => $a["site_key"], "civicrm_version" => $a["civicrm_version"],
      "api_user" => ["wp_user_id" => $a["api_user_id"], "contact_id" => $a["api_contact_id"],
        "capabilities" => $a["api_capabilities"]]]);' "$wp_result" "$api_result" | state_merge
fi

# --- (8) the PHP built-in server, unless ours is already up ---------------------------------
pid=$(state_get pid)
if server_alive "$pid"; then
  log "already running (pid $pid)"
else
  port_free "$PORT" || die "port $PORT (this site's port) is in use by something else"
  rm -f "$DIR/php-server.pid"
  mkdir -p -m 0700 "$DIR/sessions"
  # setsid: a session and process group of its own, so stop.sh ends the server together with
  # its forked workers. `sh -c 'echo $$'` records the group leader's pid whether or not setsid
  # had to fork. opcache makes each request skip recompiling CiviCRM (several hundred ms).
  # session.save_path: CiviCRM opens a PHP session on every API call; Debian's default folder
  # is only swept by a cron job, so keep them in the session folder.
  # 9>&-: the server must not inherit (and so hold) this session's start lock.
  REAL_CIVICRM_WP_CONFIG="$CONFIG_NAME" REAL_CIVICRM_CONTENT_DIR="$CONTENT_DIR" PHP_CLI_SERVER_WORKERS="$WORKERS" \
    setsid sh -c 'echo $$ >"$1"; shift; exec php -d opcache.enable_cli=1 -d memory_limit=512M "$@"' \
      sh "$DIR/php-server.pid" -d "session.save_path=$DIR/sessions" \
      -S "$HOST:$PORT" -t /usr/share/wordpress "$HERE/router.php" >>"$DIR/php-server.log" 2>&1 </dev/null 9>&- &
  for _ in $(seq 50); do [ -s "$DIR/php-server.pid" ] && break; sleep 0.1; done
  pid=$(cat "$DIR/php-server.pid")
  printf '{"pid": %d, "pgid": %d, "started_at": "%s"}' "$pid" "$pid" "$(date -Is)" | state_merge
fi
printf '{"started_mariadb": %s}' "$started_mariadb" | state_merge

# --- (9) prove the API answers with the key before handing the site over -------------------
# (the key goes to curl on stdin, not on its command line)
api_check() {
  printf 'header = "X-Civi-Auth: Bearer %s"\nheader = "X-Requested-With: XMLHttpRequest"\n' "$API_KEY" \
    | curl -s -K - --max-time 30 -o "$DIR/check.json" -w '%{http_code}' \
        --data-urlencode 'params={"select":["id"],"limit":1}' \
        "$URL/?civiwp=CiviCRM&q=civicrm/ajax/api4/Contact/get"
}
code=000
for _ in $(seq 100); do
  code=$(api_check || true)
  [ "$code" = 000 ] || break
  # php -S exits at once when it cannot bind (another session took the port since we chose it).
  kill -0 "$pid" 2>/dev/null || die "the PHP server exited; see $DIR/php-server.log"
  sleep 0.1
done
if [ "$code" != 200 ] || ! grep -q '"values"' "$DIR/check.json"; then
  head -c 500 "$DIR/check.json" >&2 || true
  die "Contact.get with the API key answered HTTP $code (see $DIR/php-server.log)"
fi
rm -f "$DIR/check.json"
$fresh && echo '{"installed": true}' | state_merge

log "ready at $URL ($(elapsed) s)"
if [ -n "$JSON_OUT" ]; then
  (umask 077; cp "$STATE" "$JSON_OUT.tmp" && mv "$JSON_OUT.tmp" "$JSON_OUT")
  echo "$URL"
else
  cat "$STATE"
fi
