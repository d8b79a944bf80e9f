<?php
/*
 * Plugin Name: real_civicrm sandbox helpers
 * Description: Test-only (installed by sandbox/real_civicrm/start.sh into the session's own
 * WP_CONTENT_DIR): keeps HTTP error codes under `php -S`, and sends no mail.
 */

// Under the built-in server, WordPress' status_header() sends an explicit "HTTP/1.1 200 OK"
// status line, after which CiviCRM's http_response_code(401/403/500) has no effect: every
// API error would arrive as 200. Setting only the code (and giving header() an empty line,
// which PHP ignores) lets the later call win, as it does under Apache or FPM.
if (PHP_SAPI === 'cli-server') {
    add_filter('status_header', function ($status_header, $code) {
        http_response_code((int) $code);
        return '';
    }, PHP_INT_MAX, 2);
}

// There is no MTA here: wp_install()'s "new site" mail and user notifications would only
// produce warnings. Pretend they were sent, unless the project's mail capture is on (its
// mu-plugin then records them; see sandbox/real_wordpress/cmsuser-test-mu-plugin.php).
add_filter('pre_wp_mail', function ($short_circuit) {
    return defined('CMSUSER_MAIL_LOG') ? $short_circuit : true;
}, 20);
