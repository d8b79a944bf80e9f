<?php
// Installs WordPress and CiviCRM into the session's (empty) database from the PHP CLI, then
// configures the site for API tests. Run by start.sh; not meant to be run by hand.
//
// Usage: php install.php <step>   with <step> one of:
//   wordpress  wp_install(): tables, options, the admin user
//   civicrm    what the plugin's own `wp civicrm install` does: civicrm.settings.php and the
//              civicrm_* tables (Civi\Setup), then activate_plugin()
//   configure  the base page, the API role and user, API keys for it and the admin, authx
//              settings, no calls home, an application password for the admin
// Each step runs in its own process, so that the later ones boot CiviCRM as a request does and
// not on top of Civi\Setup's installer-mode boot.
//
// Inputs come from the environment so that no secret is on a command line:
//   REAL_CIVICRM_HOST        127.0.0.1:<port>
//   REAL_CIVICRM_WP_CONFIG   name of our /etc/wordpress/config-<name>.php
//   REAL_CIVICRM_RESULT      file to write this step's JSON result to (mode 0600)
//   wordpress: REAL_CIVICRM_ADMIN_LOGIN, REAL_CIVICRM_ADMIN_EMAIL, REAL_CIVICRM_ADMIN_PASSWORD
//   configure: REAL_CIVICRM_ADMIN_LOGIN, REAL_CIVICRM_ADMIN_API_KEY, REAL_CIVICRM_API_LOGIN,
//              REAL_CIVICRM_API_EMAIL, REAL_CIVICRM_API_KEY, REAL_CIVICRM_API_ROLE,
//              REAL_CIVICRM_API_PERMISSIONS (a JSON list)
// Results go to a file, not stdout: WordPress and CiviCRM may print notices on stdout.

$step = $argv[1] ?? '';
function env(string $name): string {
    $value = getenv($name);
    if ($value === false || $value === '') {
        fwrite(STDERR, "install.php: $name is not set\n");
        exit(2);
    }
    return $value;
}
function fail(string $message): never {
    fwrite(STDERR, "install.php: $message\n");
    exit(1);
}
// Links a WordPress user to a contact and gives the contact an API key; returns the contact id.
function give_api_key(WP_User $user, string $api_key): int {
    // The plugin's user_register hook normally links a new user to a contact (the admin existed
    // before CiviCRM did); link explicitly so it does not depend on hooks having run in CLI.
    CRM_Core_BAO_UFMatch::synchronize($user, true, 'WordPress', 'Individual');
    $contact_id = (int) CRM_Core_BAO_UFMatch::getContactId($user->ID);
    if (!$contact_id) {
        fail("no contact is linked to WordPress user {$user->ID}");
    }
    // civicrm_contact.api_key is varchar(32): a longer key is cut silently and then never matches.
    if (strlen($api_key) > 32) {
        fail('an API key must be 32 characters or fewer');
    }
    \Civi\Api4\Contact::update(false)
        ->addWhere('id', '=', $contact_id)
        ->addValue('api_key', $api_key)
        ->execute();
    return $contact_id;
}
// The API user's role holds exactly REAL_CIVICRM_API_PERMISSIONS; returns its capabilities.
function api_role(string $role): array {
    $permissions = json_decode(env('REAL_CIVICRM_API_PERMISSIONS'), true);
    if (!is_array($permissions)) {
        fail('REAL_CIVICRM_API_PERMISSIONS must be a JSON list of CiviCRM permission names');
    }
    // CiviCRM on WordPress checks a permission as the capability of the same name, lower
    // case, with every run of non-alphanumerics made one underscore
    // (CRM_Core_Permission_WordPress::check, CRM_Utils_String::munge). WordPress
    // administrators pass every check, so the API user gets a role of its own holding exactly
    // these (and not the minimum capabilities the plugin gave the roles existing at activation).
    $capabilities = ['read' => true];   // WordPress' own baseline (a subscriber has it too)
    foreach ($permissions as $permission) {
        $capabilities[CRM_Utils_String::munge(strtolower($permission))] = true;
    }
    remove_role($role);
    add_role($role, 'CiviCRM API client', $capabilities);
    return $capabilities;
}
function result(array $data): void {
    $file = env('REAL_CIVICRM_RESULT');
    $old = umask(077);
    file_put_contents($file, json_encode($data, JSON_UNESCAPED_SLASHES) . "\n");
    umask($old);
}

// Debian's wp-config.php reads the host and, before it, WORDPRESS_CONFIG (see router.php).
// Refuse to go on without our own config: the fallback would be someone else's site.
$config_name = env('REAL_CIVICRM_WP_CONFIG');
if (!is_file("/etc/wordpress/config-$config_name.php")) {
    fail("/etc/wordpress/config-$config_name.php is missing");
}
$_SERVER['WORDPRESS_CONFIG'] = $config_name;
$_SERVER['HTTP_HOST'] = env('REAL_CIVICRM_HOST');
$_SERVER['SERVER_NAME'] = explode(':', $_SERVER['HTTP_HOST'])[0];
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['REQUEST_METHOD'] = 'GET';

if ($step === 'wordpress') {
    // Lets wp-load.php run on an empty database instead of redirecting to install.php.
    define('WP_INSTALLING', true);
}
require '/usr/share/wordpress/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
require_once ABSPATH . 'wp-admin/includes/plugin.php';

switch ($step) {
case 'wordpress':
    if (is_blog_installed()) {
        fail('WordPress is already installed in ' . DB_NAME);
    }
    $installed = wp_install('CiviCRM sandbox', env('REAL_CIVICRM_ADMIN_LOGIN'),
        env('REAL_CIVICRM_ADMIN_EMAIL'), false, '', wp_slash(env('REAL_CIVICRM_ADMIN_PASSWORD')));
    // No pretty permalinks: the CiviCRM endpoint is then /?civiwp=CiviCRM&q=..., which needs
    // no rewrite rules and no base page lookup.
    update_option('permalink_structure', '');
    result(['admin_user_id' => (int) $installed['user_id']]);
    break;

case 'civicrm':
    $plugin_dir = WP_PLUGIN_DIR . '/civicrm';
    $crm_path = "$plugin_dir/civicrm";
    if (!is_file("$crm_path/CRM/Core/ClassLoader.php")) {
        fail("CiviCRM is not extracted at $plugin_dir");
    }
    // Install as the admin, as the browser installer would: activation hooks may look at the
    // current user.
    wp_set_current_user(1);
    // The same constants `wp civicrm install` defines before it starts Civi\Setup.
    define('CIVICRM_PLUGIN_DIR', trailingslashit($plugin_dir));
    define('CIVICRM_PLUGIN_URL', plugin_dir_url(CIVICRM_PLUGIN_DIR));
    global $crmPath;
    $crmPath = $crm_path;
    require_once "$crm_path/CRM/Core/ClassLoader.php";
    CRM_Core_ClassLoader::singleton()->register();
    \Civi\Setup::assertProtocolCompatibility(1.0);
    \Civi\Setup::init(['cms' => 'WordPress', 'srcPath' => $crm_path]);
    $setup = \Civi\Setup::instance();
    // The WordPress init plugin already filled the model's db from DB_HOST etc.; say so
    // explicitly anyway, as `wp civicrm install` does, so nothing else is guessed.
    $setup->getModel()->db = ['server' => DB_HOST, 'username' => DB_USER,
        'password' => DB_PASSWORD, 'database' => DB_NAME];
    $setup->getModel()->lang = 'en_US';   // anything else would download a translation

    $requirements = $setup->checkRequirements();
    foreach ($requirements->getWarnings() as $msg) {
        fwrite(STDERR, "CiviCRM requirement warning: ({$msg['section']}) {$msg['name']}: {$msg['message']}\n");
    }
    if ($errors = $requirements->getErrors()) {
        foreach ($errors as $msg) {
            fwrite(STDERR, "CiviCRM requirement error: ({$msg['section']}) {$msg['name']}: {$msg['message']}\n");
        }
        fail('CiviCRM requirements check failed');
    }
    $installed = $setup->checkInstalled();
    if ($installed->isSettingInstalled() || $installed->isDatabaseInstalled()) {
        fail('CiviCRM is already (partly) installed here; start afresh');
    }
    $setup->installFiles();
    $setup->installDatabase();

    // Activation runs the plugin's own hooks (capabilities for existing roles, the
    // anonymous_user role). The plugin file sees civicrm.settings.php and so believes itself
    // installed, as it would after `wp civicrm install`.
    $activated = activate_plugin('civicrm/civicrm.php');
    if (is_wp_error($activated)) {
        fail('activate_plugin: ' . $activated->get_error_message());
    }
    result(['settings_path' => $setup->getModel()->settingsPath]);
    break;

case 'configure':
    if (!function_exists('civi_wp') || !civi_wp()->initialize()) {
        fail('the CiviCRM plugin is not active or does not boot');
    }
    // What the first wp-admin page load after activating in the browser would do: make the
    // CiviCRM base page (the "wpBasePage" setting; without it CiviCRM's front-end URLs warn
    // "Attempt to read property ID on null") and close the activation.
    if (!civi_wp()->basepage->create_wp_basepage()) {
        fail('could not create the CiviCRM base page');
    }
    update_option('civicrm_activation_in_progress', 'false');
    $role = env('REAL_CIVICRM_API_ROLE');
    $capabilities = api_role($role);

    $login = env('REAL_CIVICRM_API_LOGIN');
    $user_id = wp_insert_user([
        'user_login' => $login,
        'user_email' => env('REAL_CIVICRM_API_EMAIL'),
        'user_pass' => wp_generate_password(32, true, true),   // unused: the API key is its credential
        'first_name' => 'API',
        'last_name' => 'Client',
        'role' => $role,
    ]);
    if (is_wp_error($user_id)) {
        fail('wp_insert_user: ' . $user_id->get_error_message());
    }
    $contact_id = give_api_key(get_userdata($user_id), env('REAL_CIVICRM_API_KEY'));
    // The admin gets a key too, for tests that seed data the API user may not write
    // (e.g. Contact.create needs "add contacts"). Never for the code under test.
    $admin = get_user_by('login', env('REAL_CIVICRM_ADMIN_LOGIN'));
    $admin_contact_id = give_api_key($admin, env('REAL_CIVICRM_ADMIN_API_KEY'));

    // X-Civi-Auth (xheader) and Authorization: Bearer (header) both accept the API key.
    // The default guards stay (site_key, perm): the user needs "authenticate with api key".
    Civi::settings()->set('authx_xheader_cred', ['jwt', 'api_key']);
    Civi::settings()->set('authx_header_cred', ['jwt', 'api_key']);

    // No calls home from a test site (there is no network here anyway; each try logs a
    // warning): the extension feed, and the version check that CiviCRM's status page runs
    // whenever the "version_check" scheduled job is active.
    Civi::settings()->set('ext_repo_url', false);
    \Civi\Api4\Job::update(false)
        ->addWhere('api_action', '=', 'version_check')
        ->addValue('is_active', false)
        ->execute();

    // An application password for the WordPress REST API as the admin (WP_ENVIRONMENT_TYPE
    // is "local" in our config, so no HTTPS is needed).
    $created = WP_Application_Passwords::create_new_application_password($admin->ID, ['name' => 'real-civicrm']);
    if (is_wp_error($created)) {
        fail('application password: ' . $created->get_error_message());
    }
    result([
        'api_user_id' => (int) $user_id,
        'api_contact_id' => $contact_id,
        'admin_contact_id' => $admin_contact_id,
        'api_capabilities' => array_keys($capabilities),
        'site_key' => CIVICRM_SITE_KEY,
        'admin_app_password' => WP_Application_Passwords::chunk_password($created[0]),
        'civicrm_version' => CRM_Utils_System::version(),
    ]);
    break;

case 'permissions':
    // Tests change what the API user may do (to prove pre-flight names a missing permission).
    if (!function_exists('civi_wp') || !civi_wp()->initialize()) {
        fail('the CiviCRM plugin is not active or does not boot');
    }
    result(['api_capabilities' => array_keys(api_role(env('REAL_CIVICRM_API_ROLE')))]);
    break;

default:
    fail("unknown step '$step' (wordpress, civicrm, configure or permissions)");
}
