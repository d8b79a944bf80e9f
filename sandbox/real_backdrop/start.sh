#!/usr/bin/env bash
# Start a real Backdrop 1.28 behind a real, private OpenSSH server on loopback, private to one test
# session: its own session folder (the extracted Backdrop and bee), database and DB user with random
# names, an OS user that owns the site and may log in by key only, a fresh client key, a host key of
# its own, a free port, and a mail capture folder.
#
# Usage: start.sh [--dir DIR] [--json FILE]
#   --dir   session folder (env REAL_BACKDROP_DIR); default a new folder in /dev/shm (or $TMPDIR).
#   --json  also write the state (connection details, the client's private key included) to FILE,
#           mode 0600, and print only the SSH address; without it the state goes to stdout.
# The state is kept in DIR/state.json (mode 0600); stop.sh reads it.
# Knobs: CMSUSER_THIRDPARTY (the archives' folder, default ../shared/thirdparty beside the project),
# REAL_BACKDROP_ARCHIVE, REAL_BACKDROP_BEE_ARCHIVE.
# Progress goes to stderr. Stop with stop.sh --purge DIR; stop.sh --orphans cleans up after sessions
# whose folder is gone.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TAG=real-backdrop
SBX_PREFIX=backdrop_sbx_
. "$HERE/../realsite.sh"
ARCHIVE=${REAL_BACKDROP_ARCHIVE:-$THIRDPARTY/backdrop-1.28.x-dev-266a5018c5e6.tar.gz}
BEE_ARCHIVE=${REAL_BACKDROP_BEE_ARCHIVE:-$THIRDPARTY/bee-1.x-c0c14fed2dc7.tar.gz}
DIR=${REAL_BACKDROP_DIR:-}
JSON_OUT=${REAL_BACKDROP_JSON:-}
start_args "$@"

ADMIN_LOGIN=admin
ADMIN_EMAIL=admin@example.test

# --- (1) packages, only when something is missing ----------------------------------------------
need_packages mariadb-server mariadb-client php8.2-cli php8.2-mysql php8.2-gd php8.2-xml php8.2-mbstring \
  php8.2-curl php8.2-opcache openssh-server openssh-client
[ -f "$ARCHIVE" ] || die "the Backdrop archive is not at $ARCHIVE (set CMSUSER_THIRDPARTY)"
[ -f "$BEE_ARCHIVE" ] || die "the bee archive is not at $BEE_ARCHIVE (set CMSUSER_THIRDPARTY)"

# --- (2) MariaDB: started here only when it is not running --------------------------------------
mariadb_up

# --- (3) the session folder and names -------------------------------------------------------------
[ -n "$DIR" ] || DIR=$(new_session_dir)
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
chmod 0711 "$DIR"   # the site's OS user passes through to its own folders; state.json stays root's
STATE="$DIR/state.json"
[ -f "$STATE" ] && die "$DIR already holds a site: stop.sh --purge it first"
SITE="$DIR/site"
BEE="$DIR/bee"
MAIL_DIR="$DIR/mails"
SSH_DIR="$DIR/ssh"
PHP_INI_DIR="$DIR/php"

suffix=$(random_hex 5)
DB_NAME="$SBX_PREFIX$suffix"
DB_USER=$DB_NAME
DB_PASSWORD=$(random_secret 24)
ADMIN_PASSWORD=$(random_secret 20)
OS_USER="cmsbee_$suffix"
PORT=$(free_port)
php -r '[$_, $dir, $host, $port, $db, $dbpw, $dbhost, $dbport, $al, $ae, $ap, $osu] = $argv;
  echo json_encode([
    "session_dir" => $dir, "site_root" => "$dir/site", "bee" => "$dir/bee/bee.php",
    "bee_path" => "php $dir/bee/bee.php", "host" => $host, "port" => (int) $port,
    "db" => ["name" => $db, "user" => $db, "password" => $dbpw, "host" => $dbhost, "port" => (int) $dbport],
    "admin" => ["login" => $al, "email" => $ae, "password" => $ap, "note" => "uid 1: for seeding tests only"],
    "ssh" => ["user" => $osu, "dir" => "$dir/ssh", "config" => "$dir/ssh/sshd_config", "log" => "$dir/ssh/sshd.log",
              "pid_file" => "$dir/ssh/sshd.pid", "client_key" => "$dir/ssh/client_ed25519"],
    "mail_dir" => "$dir/mails", "installed" => false,
  ]);' "$DIR" "$HOST" "$PORT" "$DB_NAME" "$DB_PASSWORD" "$DB_HOST" "$DB_PORT" "$ADMIN_LOGIN" "$ADMIN_EMAIL" \
    "$ADMIN_PASSWORD" "$OS_USER" | state_merge
registry_add "$DB_NAME" "$DIR" "$OS_USER"

# --- (4) the trees: Backdrop and bee, extracted into the session folder --------------------------------
log "extracting Backdrop and bee ($(elapsed) s)"
mkdir -p "$SITE" "$BEE" "$MAIL_DIR" "$SSH_DIR/authorized" "$PHP_INI_DIR" "$DIR/opcache" "$DIR/tmp"
tar -xzf "$ARCHIVE" -C "$SITE" --strip-components=1 --no-same-owner
tar -xzf "$BEE_ARCHIVE" -C "$BEE" --strip-components=1 --no-same-owner
mkdir -p "$SITE/files"

# --- (5) database and its own user ----------------------------------------------------------------------
create_db "$DB_NAME" "$DB_USER" "$DB_PASSWORD" utf8mb4_general_ci

# --- (6) the OS user: owns the site, logs in by key only ---------------------------------------------------
# usermod -p '*': no password can match, yet the account is not locked (sshd refuses locked ones).
useradd -M -d "$DIR/home" -s /bin/sh "$OS_USER"
usermod -p '*' "$OS_USER"
mkdir -p "$DIR/home"

# --- (7) install (core's install.sh) and configure -----------------------------------------------------------
log "installing Backdrop, standard profile ($(elapsed) s)"
(cd "$SITE" && php -d memory_limit=512M core/scripts/install.sh --root="$SITE" \
    --db-url="mysql://$DB_USER:$DB_PASSWORD@$DB_HOST:$DB_PORT/$DB_NAME" --account-name="$ADMIN_LOGIN" \
    --account-pass="$ADMIN_PASSWORD" --account-mail="$ADMIN_EMAIL" --site-name="cmsuser real Backdrop" \
    --site-mail="site@example.test") >>"$DIR/install.log" 2>&1 \
  || { tail -n 30 "$DIR/install.log" >&2; die "install.sh failed, see $DIR/install.log"; }
{
  echo ""
  echo "// Written by sandbox/real_backdrop/start.sh for session $DIR: no telemetry, no update checks."
  echo "\$settings['telemetry_enabled'] = FALSE;"
} >>"$SITE/settings.php"
log "configuring roles, user field, languages; telemetry and update off ($(elapsed) s)"
configured=$(cd "$SITE" && php -d memory_limit=512M "$HERE/configure.php" 2>>"$DIR/install.log") \
  || { tail -n 30 "$DIR/install.log" >&2; die "configure.php failed, see $DIR/install.log"; }
printf '%s' "$configured" | state_merge

# PHP CLI of the SSH user (what bee runs): mails to the capture script (--umask 022: the mail files
# stay readable by all, as they were), opcache's file cache on
cat >"$PHP_INI_DIR/cmsuser.ini" <<INI
sendmail_path = "$CAPTURE_MAIL --umask 022 $MAIL_DIR"
opcache.enable_cli = 1
opcache.file_cache = "$DIR/opcache"
memory_limit = 512M
sys_temp_dir = "$DIR/tmp"
INI
chown -R "$OS_USER:" "$SITE" "$MAIL_DIR" "$DIR/home" "$DIR/opcache" "$DIR/tmp"

# --- (8) keys and the private sshd ----------------------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C "cmsuser-real-backdrop-host" -f "$SSH_DIR/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C "cmsuser-real-backdrop-client" -f "$SSH_DIR/client_ed25519"
cp "$SSH_DIR/client_ed25519.pub" "$SSH_DIR/authorized/$OS_USER"
chmod 0755 "$SSH_DIR" "$SSH_DIR/authorized"
chmod 0644 "$SSH_DIR/authorized/$OS_USER"
cat >"$SSH_DIR/sshd_config" <<CONF
# A private sshd for one test session (sandbox/real_backdrop/start.sh); never the system's.
Port $PORT
ListenAddress $HOST
HostKey $SSH_DIR/host_ed25519
PidFile $SSH_DIR/sshd.pid
AuthorizedKeysFile $SSH_DIR/authorized/%u
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers $OS_USER
# the session folder lives in /dev/shm (world-writable): the path checks would refuse it
StrictModes no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
PrintMotd no
MaxSessions 32
MaxStartups 32:30:64
SetEnv PHP_INI_SCAN_DIR=:$PHP_INI_DIR COLUMNS=200
CONF
mkdir -p /run/sshd
/usr/sbin/sshd -t -f "$SSH_DIR/sshd_config" || die "sshd refused its configuration ($SSH_DIR/sshd_config)"
/usr/sbin/sshd -f "$SSH_DIR/sshd_config" -E "$SSH_DIR/sshd.log"
for _ in $(seq 50); do [ -s "$SSH_DIR/sshd.pid" ] && break; sleep 0.1; done
[ -s "$SSH_DIR/sshd.pid" ] || die "sshd did not start, see $SSH_DIR/sshd.log"
host_key=$(cut -d' ' -f1,2 "$SSH_DIR/host_ed25519.pub")
php -r 'echo json_encode(["ssh" => ["pid" => (int) trim(file_get_contents($argv[1])), "host_key" => $argv[2],
  "private_key" => file_get_contents($argv[3])], "started_mariadb" => $argv[4] === "true"]);' \
  "$SSH_DIR/sshd.pid" "$host_key" "$SSH_DIR/client_ed25519" "$started_mariadb" | state_merge
printf '[%s]:%s %s\n' "$HOST" "$PORT" "$host_key" >"$SSH_DIR/known_hosts"

# --- (9) bee answers over SSH as the site's user, with mail capture configured ---------------------------------------
answer=""
for _ in $(seq 30); do
  answer=$(ssh -q -i "$SSH_DIR/client_ed25519" -p "$PORT" -o BatchMode=yes -o IdentitiesOnly=yes \
      -o UserKnownHostsFile="$SSH_DIR/known_hosts" -o StrictHostKeyChecking=yes "$OS_USER@$HOST" \
      php "$BEE/bee.php" --root="$SITE" eval "'echo \"ready:\" . ini_get(\"sendmail_path\");'" 2>>"$DIR/install.log") \
    && [ -n "$answer" ] && break
  sleep 0.2
done
case "$answer" in
  *"ready:$CAPTURE_MAIL"*) ;;
  *) tail -n 20 "$DIR/install.log" >&2; tail -n 20 "$SSH_DIR/sshd.log" >&2
     die "bee over SSH did not answer as expected (got: ${answer:0:300})" ;;
esac
echo '{"installed": true}' | state_merge

log "ready: ssh $OS_USER@$HOST -p $PORT, site $SITE ($(elapsed) s)"
hand_over "$OS_USER@$HOST:$PORT"
