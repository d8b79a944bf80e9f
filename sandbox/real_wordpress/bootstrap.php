<?php
// Run by start.sh after the install: pretty permalinks, the "member" role, and a fresh
// application password for the API user, printed on stdout (the only output).
// Usage: php bootstrap.php <host> <login> <app-password-name>
[$_, $host, $login, $app_name] = $argv;
$_SERVER['HTTP_HOST'] = $host;         // Debian's wp-config.php picks config-<host>.php from it
$_SERVER['REQUEST_URI'] = '/';
require '/usr/share/wordpress/wp-load.php';

global $wp_rewrite;
if (get_option('permalink_structure') !== '/%postname%/') {
    $wp_rewrite->set_permalink_structure('/%postname%/');
    flush_rewrite_rules(false);        // false: no .htaccess, the PHP server routes everything to index.php
}
if (!get_role('member')) {
    add_role('member', 'Member', ['read' => true]);
}

$user = get_user_by('login', $login);
if (!$user) {
    fwrite(STDERR, "no user '$login'\n");
    exit(2);
}
// Names are unique per user (a second one gives 409), so replace ours.
foreach (WP_Application_Passwords::get_user_application_passwords($user->ID) as $item) {
    if ($item['name'] === $app_name) {
        WP_Application_Passwords::delete_application_password($user->ID, $item['uuid']);
    }
}
$created = WP_Application_Passwords::create_new_application_password($user->ID, ['name' => $app_name]);
if (is_wp_error($created)) {
    fwrite(STDERR, $created->get_error_message() . "\n");
    exit(3);
}
// chunk_split into groups of four, as WordPress shows it to people; spaces are ignored on login.
echo WP_Application_Passwords::chunk_password($created[0]), "\n";
