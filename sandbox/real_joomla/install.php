<?php
// The API side of a real_joomla session, run once by start.sh right after Joomla's own CLI
// installer (installation/joomla.php install). Plain SQL through mysqli on the site's database;
// what each step does, and why, is what the project's README documents for a production site:
//
//   * "User - Joomla!" plugin: mail_to_user = 0 ("Notification Mail to User": No). With the
//     default (Yes) every account made through the API is mailed its password in plain text.
//   * a user group "API clients" (a child of Public, so it inherits nothing) with exactly the
//     permissions the pipeline needs: "API Login" (core.login.api) on the site (root asset) and
//     "Create" (core.create) on com_users. Reading users and groups needs nothing more.
//   * "User - Joomla API Token" plugin: that group added to allowedUserGroups (default: Super Users).
//   * the API user in that group, with an API token: #__user_profiles joomlatoken.token = base64
//     of 32 random bytes (the seed), joomlatoken.enabled = 1. The header value is
//     base64("sha256:<user id>:" . hex HMAC-SHA256(seed bytes, $secret of configuration.php)),
//     as plugins/api-authentication/token computes it.
//   * the Super User (made by the installer) gets a token too: tests seed with it, never the code
//     under test.
//   * a table sbx_owner naming the session folder, so stop.sh --orphans can tell whose it is.
//
// Environment: REAL_JOOMLA_SITE (the site's folder), REAL_JOOMLA_RESULT (a JSON file written
// with the ids and tokens, mode 0600), REAL_JOOMLA_SESSION_DIR, REAL_JOOMLA_API_LOGIN,
// REAL_JOOMLA_API_EMAIL, REAL_JOOMLA_API_GROUP, REAL_JOOMLA_MAIL_FROM.
// Secrets never go to stdout or stderr.

declare(strict_types=1);
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);

function env(string $name): string
{
    $value = getenv($name);
    if ($value === false || $value === '') {
        fwrite(STDERR, "install.php: $name is not set\n");
        exit(2);
    }
    return $value;
}

$site = env('REAL_JOOMLA_SITE');
$resultFile = env('REAL_JOOMLA_RESULT');
$sessionDir = env('REAL_JOOMLA_SESSION_DIR');
$apiLogin = env('REAL_JOOMLA_API_LOGIN');
$apiEmail = env('REAL_JOOMLA_API_EMAIL');
$apiGroup = env('REAL_JOOMLA_API_GROUP');
$mailFrom = env('REAL_JOOMLA_MAIL_FROM');

require $site . '/configuration.php';
$config = new JConfig();
$p = $config->dbprefix;
$db = new mysqli($config->host, $config->user, $config->password, $config->db);
$db->set_charset('utf8mb4');

function one(mysqli $db, string $sql, array $args = [])
{
    $row = $db->execute_query($sql, $args)->fetch_row();
    return $row ? $row[0] : null;
}

function token_for(int $userId, string $seed, string $secret): string
{
    return base64_encode("sha256:$userId:" . hash_hmac('sha256', base64_decode($seed), $secret));
}

$db->begin_transaction();

// 1. no password mails on API creates
$params = json_decode((string) one($db, "SELECT params FROM {$p}extensions WHERE type = 'plugin' AND folder = 'user' AND element = 'joomla'"), true) ?: [];
$params['mail_to_user'] = '0';
$db->execute_query("UPDATE {$p}extensions SET params = ? WHERE type = 'plugin' AND folder = 'user' AND element = 'joomla'",
    [json_encode($params)]);

// 2. the API group, a child of Public (1): make room at the right edge of Public's nested set
$publicRgt = (int) one($db, "SELECT rgt FROM {$p}usergroups WHERE id = 1");
$db->execute_query("UPDATE {$p}usergroups SET rgt = rgt + 2 WHERE rgt >= ?", [$publicRgt]);
$db->execute_query("UPDATE {$p}usergroups SET lft = lft + 2 WHERE lft > ?", [$publicRgt]);
$db->execute_query("INSERT INTO {$p}usergroups (parent_id, lft, rgt, title) VALUES (1, ?, ?, ?)",
    [$publicRgt, $publicRgt + 1, $apiGroup]);
$groupId = (int) $db->insert_id;

function grant(mysqli $db, string $p, string $asset, string $action, int $groupId): void
{
    $rules = json_decode((string) one($db, "SELECT rules FROM {$p}assets WHERE name = ?", [$asset]), true) ?: [];
    $rules[$action] = ($rules[$action] ?? []) + [(string) $groupId => 1];
    $db->execute_query("UPDATE {$p}assets SET rules = ? WHERE name = ?", [json_encode($rules), $asset]);
}
grant($db, $p, 'root.1', 'core.login.api', $groupId);
grant($db, $p, 'com_users', 'core.create', $groupId);

// 3. tokens are accepted from Super Users and the API group
$db->execute_query("UPDATE {$p}extensions SET params = ? WHERE type = 'plugin' AND folder = 'user' AND element = 'token'",
    [json_encode(['allowedUserGroups' => ['8', (string) $groupId]])]);

// 4. the API user and its token; the Super User's token
$password = password_hash(bin2hex(random_bytes(24)), PASSWORD_BCRYPT);  // nobody logs in with it
$db->execute_query("INSERT INTO {$p}users (name, username, email, password, block, sendEmail, registerDate, params)
    VALUES ('API client', ?, ?, ?, 0, 0, UTC_TIMESTAMP(), '{}')", [$apiLogin, $apiEmail, $password]);
$apiUserId = (int) $db->insert_id;
$db->execute_query("INSERT INTO {$p}user_usergroup_map (user_id, group_id) VALUES (?, ?)", [$apiUserId, $groupId]);
$adminId = (int) one($db, "SELECT MIN(user_id) FROM {$p}user_usergroup_map WHERE group_id = 8 AND user_id <> ?", [$apiUserId]);

$tokens = [];
foreach ([$apiUserId, $adminId] as $userId) {
    $seed = base64_encode(random_bytes(32));
    $db->execute_query("DELETE FROM {$p}user_profiles WHERE user_id = ? AND profile_key LIKE 'joomlatoken.%'", [$userId]);
    $db->execute_query("INSERT INTO {$p}user_profiles (user_id, profile_key, profile_value, ordering)
        VALUES (?, 'joomlatoken.token', ?, 1), (?, 'joomlatoken.enabled', '1', 2)", [$userId, $seed, $userId]);
    $tokens[$userId] = token_for($userId, $seed, $config->secret);
}

// 5. whose site this is (stop.sh --orphans)
$db->query("CREATE TABLE sbx_owner (session_dir VARCHAR(1024) NOT NULL) DEFAULT CHARSET=utf8mb4");
$db->execute_query("INSERT INTO sbx_owner (session_dir) VALUES (?)", [$sessionDir]);
$db->commit();

// 6. configuration.php: mails through PHP's mail() (sendmail_path is the capture script)
$file = $site . '/configuration.php';
$text = file_get_contents($file);
$text = preg_replace("/public \\\$mailer = '[^']*';/", "public \$mailer = 'mail';", $text);
$text = preg_replace("/public \\\$mailfrom = '[^']*';/", "public \$mailfrom = '" . addslashes($mailFrom) . "';", $text);
$text = preg_replace("/public \\\$mailonline = [a-z]+;/", "public \$mailonline = true;", $text);
file_put_contents($file, $text);

$version = '';
if (is_file($site . '/libraries/src/Version.php')) {
    $source = file_get_contents($site . '/libraries/src/Version.php');
    preg_match_all("/public const (MAJOR|MINOR|PATCH)_VERSION = (\\d+);/", $source, $m);
    $version = implode('.', $m[2]);
}

$old = umask(077);
file_put_contents($resultFile, json_encode([
    'api_user_id' => $apiUserId, 'api_group_id' => $groupId, 'api_token' => $tokens[$apiUserId],
    'admin_user_id' => $adminId, 'admin_token' => $tokens[$adminId], 'joomla_version' => $version,
    'db_prefix' => $p,
], JSON_UNESCAPED_SLASHES));
umask($old);
echo "configured: API user $apiUserId in group $groupId, Super User $adminId\n";
