#!/usr/bin/env bash
# Start Debian's real WordPress 6.1 (PHP 8.2 built-in server + MariaDB) on loopback for tests.
# Idempotent: installs packages, the database, the config and the site only when missing,
# and never starts a second server. Writes a state file (mode 0600) that tests read;
# prints only the site URL, never a password. See docs/contracts cms-users.md §2.9.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HOST=127.0.0.1
PORT=${CMSUSER_WP_PORT:-8089}
URL="http://$HOST:$PORT"
STATE_DIR=${CMSUSER_WP_STATE:-/tmp/cmsuser-real-wp}
STATE_FILE="$STATE_DIR/state.json"
DB_NAME=cmsuser_wp_test
DB_USER=cmsuser_wp
ADMIN_LOGIN=admin
ADMIN_EMAIL=admin@example.test
APP_NAME=cmsuser-tests
CONFIG=/etc/wordpress/config-$HOST.php
MU_DIR=/var/lib/wordpress/wp-content/mu-plugins
MAIL_LOG="$STATE_DIR/mail.jsonl"
MAIL_FAIL_FLAG="$STATE_DIR/mail-fails"
export DEBIAN_FRONTEND=noninteractive

log() { echo "[real-wordpress] $*" >&2; }
random_secret() { head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c "${1:-32}"; }
json_field() { php -r '$s = json_decode(file_get_contents($argv[1]), true); echo $s[$argv[2]] ?? "";' "$1" "$2"; }

mkdir -p "$STATE_DIR"
chmod 0700 "$STATE_DIR"

# What an earlier start.sh started stays "ours" so stop.sh can still stop it.
started_mariadb=false
if [ -f "$STATE_FILE" ] && [ "$(json_field "$STATE_FILE" started_mariadb 2>/dev/null || true)" = "1" ]; then
  started_mariadb=true
fi

# Is our PHP server already up? If not, the port must be free (checked before anything is changed).
pid=""
if [ -f "$STATE_DIR/php-server.pid" ]; then
  pid=$(cat "$STATE_DIR/php-server.pid")
  kill -0 "$pid" 2>/dev/null || pid=""
fi
if [ -z "$pid" ] && curl -s -o /dev/null --max-time 2 "$URL/"; then
  log "port $PORT is already in use by something that is not ours; set CMSUSER_WP_PORT"
  exit 1
fi

# (a) packages
missing=()
for pkg in wordpress mariadb-server php8.2-cli php8.2-mysql php8.2-curl php8.2-xml php8.2-mbstring curl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  apache_was_running=false
  pgrep -x apache2 >/dev/null 2>&1 && apache_was_running=true
  log "installing ${missing[*]}"
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >"$STATE_DIR/apt.log" 2>&1 \
    || { log "apt-get install failed, see $STATE_DIR/apt.log"; exit 1; }
  # The wordpress package pulls in Apache; outside containers it may start on :80. We don't need it.
  if ! $apache_was_running && pgrep -x apache2 >/dev/null 2>&1; then
    log "stopping the Apache that the package install started"
    apache2ctl stop >/dev/null 2>&1 || service apache2 stop >/dev/null 2>&1 || true
  fi
fi

# (b) MariaDB: normally already running here; start it only when it is down.
if ! mysqladmin ping >/dev/null 2>&1; then
  log "starting MariaDB"
  install -d -o mysql -g mysql /run/mysqld
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 60); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.5; done
  mysqladmin ping >/dev/null 2>&1 || { log "MariaDB did not come up"; exit 1; }
  started_mariadb=true
fi

# (d) per-host config; keep an existing one of ours (same port) so a running server is not disturbed.
MARKER="cmsuser-real-wordpress port=$PORT state=$STATE_DIR "
if [ -f "$CONFIG" ] && grep -qF "$MARKER" "$CONFIG"; then
  DB_PASSWORD=$(sed -n "s/^define('DB_PASSWORD', '\(.*\)');$/\1/p" "$CONFIG")
else
  DB_PASSWORD=$(random_secret 32)
  mkdir -p /etc/wordpress
  install -m 0640 -o root -g www-data /dev/null "$CONFIG.tmp" 2>/dev/null || install -m 0640 /dev/null "$CONFIG.tmp"
  {
    echo "<?php"
    echo "// $MARKER(written by sandbox/real_wordpress/start.sh)"
    echo "define('DB_NAME', '$DB_NAME');"
    echo "define('DB_USER', '$DB_USER');"
    echo "define('DB_PASSWORD', '$DB_PASSWORD');"
    echo "define('DB_HOST', 'localhost');"
    echo "define('WP_CONTENT_DIR', '/var/lib/wordpress/wp-content');"
    echo "define('WP_HOME', '$URL');"
    echo "define('WP_SITEURL', '$URL');"
    echo "define('WP_ENVIRONMENT_TYPE', 'local');   // Application Passwords without HTTPS"
    echo "define('DISABLE_WP_CRON', true);"
    echo "define('WP_HTTP_BLOCK_EXTERNAL', true);   // no outbound HTTP"
    echo "define('CMSUSER_MAIL_LOG', '$MAIL_LOG');"
    echo "define('CMSUSER_MAIL_FAIL_FLAG', '$MAIL_FAIL_FLAG');"
    for key in AUTH_KEY SECURE_AUTH_KEY LOGGED_IN_KEY NONCE_KEY AUTH_SALT SECURE_AUTH_SALT LOGGED_IN_SALT NONCE_SALT; do
      echo "define('$key', '$(random_secret 64)');"
    done
  } >"$CONFIG.tmp"
  mv "$CONFIG.tmp" "$CONFIG"
fi

# (c) database and user (root uses the local socket); re-asserting is cheap and heals a dropped DB.
mysql <<SQL
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'localhost';
SQL

# (g) mu-plugin: mail capture + the custom "member" role
mkdir -p "$MU_DIR"
install -m 0644 "$HERE/cmsuser-test-mu-plugin.php" "$MU_DIR/cmsuser-test-mu-plugin.php"

# (e) the PHP built-in server, unless ours is already up
started_php=false
if [ -z "$pid" ]; then
  # setsid: own process group, so stop.sh can end the server and its workers together.
  PHP_CLI_SERVER_WORKERS=2 setsid php -S "$HOST:$PORT" -t /usr/share/wordpress \
    >"$STATE_DIR/php-server.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$STATE_DIR/php-server.pid"
  started_php=true
fi
for _ in $(seq 60); do curl -s -o /dev/null --max-time 2 "$URL/wp-login.php" && break; sleep 0.25; done
curl -s -o /dev/null --max-time 5 "$URL/wp-login.php" || { log "PHP server did not answer on $URL"; exit 1; }

# (f) finish the install with the installer's own form (step 2) when the site is not installed yet
ADMIN_PASSWORD_FILE="$STATE_DIR/admin-password"
if curl -s -o /dev/null -w '%{redirect_url}' "$URL/" | grep -q install.php; then
  log "installing the site"
  (umask 077; random_secret 24 >"$ADMIN_PASSWORD_FILE")
  curl -s -o /dev/null --fail -X POST "$URL/wp-admin/install.php?step=2" \
    --data-urlencode 'weblog_title=CMS user test site' --data-urlencode "user_name=$ADMIN_LOGIN" \
    --data-urlencode "admin_password@$ADMIN_PASSWORD_FILE" --data-urlencode "admin_password2@$ADMIN_PASSWORD_FILE" \
    --data-urlencode 'pw_weak=1' --data-urlencode "admin_email=$ADMIN_EMAIL" \
    --data-urlencode 'blog_public=0'
fi

# (f, g, h) permalinks, member role, a fresh application password (the old one of the same name is replaced)
APP_PASSWORD=$(php "$HERE/bootstrap.php" "$HOST" "$ADMIN_LOGIN" "$APP_NAME")
ADMIN_PASSWORD=$(cat "$ADMIN_PASSWORD_FILE" 2>/dev/null || true)
touch "$MAIL_LOG"

# (h) state file, readable only by root. Secrets go through the environment, not the command line.
started_php_ever=$started_php
if [ -f "$STATE_FILE" ] && [ "$(json_field "$STATE_FILE" started_php)" = "1" ]; then started_php_ever=true; fi
(umask 077
 CMSUSER_APP_PASSWORD="$APP_PASSWORD" CMSUSER_ADMIN_PASSWORD="$ADMIN_PASSWORD" php -r '
   [$_, $file, $url, $login, $email, $mail, $flag, $pid, $sphp, $sdb, $db] = $argv;
   $state = ["url" => $url, "rest_url" => "$url/wp-json", "login" => $login, "admin_email" => $email,
     "app_password" => getenv("CMSUSER_APP_PASSWORD"), "admin_password" => getenv("CMSUSER_ADMIN_PASSWORD"),
     "mail_log" => $mail, "mail_fail_flag" => $flag, "pid" => (int) $pid,
     "started_php" => $sphp === "true" ? 1 : 0, "started_mariadb" => $sdb === "true" ? 1 : 0,
     "db_name" => $db, "state_dir" => dirname($file)];
   file_put_contents("$file.tmp", json_encode($state, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n");
   rename("$file.tmp", $file);
 ' "$STATE_FILE" "$URL" "$ADMIN_LOGIN" "$ADMIN_EMAIL" "$MAIL_LOG" "$MAIL_FAIL_FLAG" "$pid" \
   "$started_php_ever" "$started_mariadb" "$DB_NAME")

# Prove the application password works before handing the site over (credentials via stdin).
code=$(printf 'user = "%s:%s"\n' "$ADMIN_LOGIN" "$APP_PASSWORD" | curl -s -K - -o /dev/null -w '%{http_code}' \
  "$URL/wp-json/wp/v2/users/me?context=edit")
[ "$code" = 200 ] || { log "application password check failed (HTTP $code)"; exit 1; }
echo "$URL"
