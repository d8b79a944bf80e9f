<?php
// Puts the test site back to a clean state: every user but the API user (the admin) is deleted,
// the captured-mail log is emptied and the "mail fails" switch is turned off.
// Usage: php reset.php <host> <admin-login>
[$_, $host, $login] = $argv;
$_SERVER['HTTP_HOST'] = $host;
$_SERVER['REQUEST_URI'] = '/';
require '/usr/share/wordpress/wp-load.php';

global $wpdb;
$admin = get_user_by('login', $login);
if (!$admin) {
    fwrite(STDERR, "no user '$login'\n");
    exit(2);
}
// Plain SQL: the tests create users only (no posts to reassign), and it is fast for many users.
$wpdb->query($wpdb->prepare("DELETE FROM {$wpdb->usermeta} WHERE user_id <> %d", $admin->ID));
$wpdb->query($wpdb->prepare("DELETE FROM {$wpdb->users} WHERE ID <> %d", $admin->ID));
// New users get ids from 2 again, so runs are repeatable (InnoDB keeps it above the admin's id).
$wpdb->query("ALTER TABLE {$wpdb->users} AUTO_INCREMENT = 2");
wp_cache_flush();
if (defined('CMSUSER_MAIL_LOG')) {
    file_put_contents(CMSUSER_MAIL_LOG, '');
}
if (defined('CMSUSER_MAIL_FAIL_FLAG') && file_exists(CMSUSER_MAIL_FAIL_FLAG)) {
    unlink(CMSUSER_MAIL_FAIL_FLAG);
}
echo "ok\n";
