<?php
// Router for `php -S` serving Debian's /usr/share/wordpress for one CiviCRM sandbox session.
//
// Debian's wp-config.php picks /etc/wordpress/config-<host>.php, and every loopback site has
// the host 127.0.0.1, so another site on this machine (sandbox/real_wordpress uses
// config-127.0.0.1.php) would win. Debian also honours $_SERVER['WORDPRESS_CONFIG'] (what
// Apache's SetEnv would give), so we set it on every request to name our own config file.
// start.sh passes the name in the environment, which the server's workers inherit.
$config = getenv('REAL_CIVICRM_WP_CONFIG');
$content_dir = getenv('REAL_CIVICRM_CONTENT_DIR');
if (!$config || !$content_dir) {
    http_response_code(500);
    echo "real_civicrm router: REAL_CIVICRM_WP_CONFIG / REAL_CIVICRM_CONTENT_DIR not set\n";
    return true;
}
$_SERVER['WORDPRESS_CONFIG'] = $config;

$path = rawurldecode(parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH) ?? '/');

// WP_CONTENT_DIR lives in the session folder, outside the document root: serve its static
// files (CiviCRM's js/css) ourselves. Never run PHP from there by URL; CiviCRM's API goes
// through WordPress' index.php like everything else.
if (str_starts_with($path, '/wp-content/')) {
    $file = realpath($content_dir . substr($path, strlen('/wp-content')));
    if ($file === false || !str_starts_with($file, realpath($content_dir) . '/') || !is_file($file)
        || preg_match('/\.(php|phtml|inc|sql|tpl)$/i', $file)) {
        http_response_code(404);
        return true;
    }
    $types = ['css' => 'text/css', 'js' => 'text/javascript', 'json' => 'application/json',
        'svg' => 'image/svg+xml', 'png' => 'image/png', 'gif' => 'image/gif', 'jpg' => 'image/jpeg',
        'woff' => 'font/woff', 'woff2' => 'font/woff2', 'ttf' => 'font/ttf', 'html' => 'text/html'];
    $ext = strtolower(pathinfo($file, PATHINFO_EXTENSION));
    header('Content-Type: ' . ($types[$ext] ?? 'application/octet-stream'));
    readfile($file);
    return true;
}

// Existing files under the document root (wp-login.php, wp-admin/*, wp-includes assets):
// let the built-in server handle them; $_SERVER['WORDPRESS_CONFIG'] survives `return false`.
if ($path !== '/' && file_exists($_SERVER['DOCUMENT_ROOT'] . $path)) {
    return false;
}

// Anything else is a WordPress front-end URL (the CiviCRM endpoint is /?civiwp=CiviCRM&q=...).
$_SERVER['SCRIPT_NAME'] = $_SERVER['PHP_SELF'] = '/index.php';
$_SERVER['SCRIPT_FILENAME'] = $_SERVER['DOCUMENT_ROOT'] . '/index.php';
chdir($_SERVER['DOCUMENT_ROOT']);
require $_SERVER['SCRIPT_FILENAME'];
