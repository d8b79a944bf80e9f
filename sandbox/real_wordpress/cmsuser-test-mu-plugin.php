<?php
/*
 * Plugin Name: cmsuser test helpers
 * Description: Test-only (installed by sandbox/real_wordpress/start.sh): captures outgoing mail into a
 * JSON-lines file instead of sending it, and registers the custom "member" role.
 */

// Who a password-reset mail is for; retrieve_password() tells us just before it calls wp_mail().
$GLOBALS['cmsuser_mail_context'] = null;

add_filter('retrieve_password_notification_email', function ($mail, $key, $user_login, $user_data) {
    $GLOBALS['cmsuser_mail_context'] = ['user_login' => $user_login, 'user_id' => (int) $user_data->ID];
    return $mail;
}, 10, 4);

add_filter('pre_wp_mail', function ($short_circuit, $atts) {
    if (!defined('CMSUSER_MAIL_LOG')) {
        return $short_circuit;
    }
    $context = $GLOBALS['cmsuser_mail_context'] ?? [];
    $GLOBALS['cmsuser_mail_context'] = null;
    // A flag file lets tests simulate a site that cannot send mail (wp_mail() returns false).
    if (defined('CMSUSER_MAIL_FAIL_FLAG') && file_exists(CMSUSER_MAIL_FAIL_FLAG)) {
        return false;
    }
    $to = is_array($atts['to']) ? $atts['to'] : array_map('trim', explode(',', (string) $atts['to']));
    $record = [
        'user_login' => $context['user_login'] ?? null,
        'user_id' => $context['user_id'] ?? null,
        'to' => implode(', ', $to),
        'subject' => (string) $atts['subject'],
        'message' => (string) $atts['message'],
    ];
    file_put_contents(CMSUSER_MAIL_LOG, json_encode($record, JSON_UNESCAPED_SLASHES) . "\n", FILE_APPEND | LOCK_EX);
    return true;
}, 10, 2);

add_action('init', function () {
    if (!get_role('member')) {
        add_role('member', 'Member', ['read' => true]);
    }
});
