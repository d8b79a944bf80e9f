<?php

/**
 * @file
 * Router for PHP's built-in server in front of a test-session Drupal 7 (sandbox/real_drupal7/start.sh).
 *
 * A file that exists is served as it is; every other path goes to index.php (what Apache's
 * mod_rewrite rules of Drupal's .htaccess do), so clean URLs such as /api/user/login.json work.
 */

$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if ($path !== '/' && is_file($_SERVER['DOCUMENT_ROOT'] . $path) && !preg_match('/\.(php|inc|module|info|install)$/', $path)) {
  return FALSE;
}
$_SERVER['SCRIPT_NAME'] = '/index.php';
$_SERVER['SCRIPT_FILENAME'] = $_SERVER['DOCUMENT_ROOT'] . '/index.php';
chdir($_SERVER['DOCUMENT_ROOT']);
require $_SERVER['DOCUMENT_ROOT'] . '/index.php';
