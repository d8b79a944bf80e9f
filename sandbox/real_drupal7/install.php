<?php

/**
 * @file
 * Installs and configures one test-session Drupal 7 + Services 3.x for sandbox/real_drupal7/start.sh.
 *
 * Usage (working directory: the Drupal root):
 *   php install.php install      core's installer, non-interactive (standard profile, MariaDB)
 *   php install.php configure    modules, the Services endpoint, roles, a user field, French, the API user
 *   php install.php permissions  give the API user's role exactly REAL_DRUPAL7_API_PERMISSIONS
 *   php install.php variable     set one variable (REAL_DRUPAL7_VARIABLE, JSON {"name", "value"})
 *
 * Our own script: it calls Drupal 7's public API (install_drupal(), drupal_bootstrap(),
 * module_enable(), user_role_*(), field_create_*(), services_endpoint_save()) the way Drush's
 * site-install does; nothing of Drupal is copied here. Settings come from the environment
 * (REAL_DRUPAL7_*); a step's result is written as JSON to REAL_DRUPAL7_RESULT. Secrets are never printed.
 */

if (PHP_SAPI !== 'cli') {
  exit(1);
}

$step = $argv[1] ?? '';
$env = static function (string $name, ?string $default = NULL): string {
  $value = getenv($name);
  if ($value === FALSE || $value === '') {
    if ($default === NULL) {
      fwrite(STDERR, "install.php: $name is not set\n");
      exit(2);
    }
    return $default;
  }
  return $value;
};
$result = static function (array $data) use ($env): void {
  $old = umask(077);
  file_put_contents($env('REAL_DRUPAL7_RESULT'), json_encode($data, JSON_UNESCAPED_SLASHES) . "\n");
  umask($old);
};

define('DRUPAL_ROOT', getcwd());
[$host, $port] = explode(':', $env('REAL_DRUPAL7_HOST'));
$_SERVER['HTTP_HOST'] = "$host:$port";
$_SERVER['SERVER_NAME'] = $host;
$_SERVER['SERVER_PORT'] = $port;
$_SERVER['REMOTE_ADDR'] = '127.0.0.1';
$_SERVER['SERVER_SOFTWARE'] = 'real-drupal7-installer';
$_SERVER['REQUEST_METHOD'] = 'GET';
$_SERVER['SCRIPT_NAME'] = '/index.php';
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['HTTP_USER_AGENT'] = 'real-drupal7-installer';

if ($step === 'install') {
  define('MAINTENANCE_MODE', 'install');
  require_once DRUPAL_ROOT . '/includes/install.core.inc';
  $password = $env('REAL_DRUPAL7_ADMIN_PASSWORD');
  $settings = [
    'interactive' => FALSE,
    'parameters' => ['profile' => 'standard', 'locale' => 'en'],
    'forms' => [
      'install_settings_form' => [
        'driver' => 'mysql',
        'mysql' => [
          'database' => $env('REAL_DRUPAL7_DB_NAME'),
          'username' => $env('REAL_DRUPAL7_DB_USER'),
          'password' => $env('REAL_DRUPAL7_DB_PASSWORD'),
          'host' => $env('REAL_DRUPAL7_DB_HOST'),
          'port' => $env('REAL_DRUPAL7_DB_PORT'),
          'db_prefix' => '',
        ],
        'op' => 'Save and continue',
      ],
      'install_configure_form' => [
        'site_name' => 'cmsuser real Drupal 7',
        'site_mail' => 'site@example.test',
        'account' => [
          'name' => $env('REAL_DRUPAL7_ADMIN_LOGIN'),
          'mail' => $env('REAL_DRUPAL7_ADMIN_EMAIL'),
          'pass' => ['pass1' => $password, 'pass2' => $password],
        ],
        'update_status_module' => [],
        'clean_url' => TRUE,
        'op' => 'Save and continue',
      ],
    ],
  ];
  install_drupal($settings);
  $result(['installed' => TRUE, 'drupal_version' => VERSION]);
  exit(0);
}

require_once DRUPAL_ROOT . '/includes/bootstrap.inc';
drupal_bootstrap(DRUPAL_BOOTSTRAP_FULL);
$GLOBALS['user'] = user_load(1);

/**
 * Gives the role $name exactly $permissions (created when missing); returns its rid.
 */
function real_drupal7_set_role(string $name, array $permissions): int {
  $role = user_role_load_by_name($name);
  if (!$role) {
    $role = (object) ['name' => $name];
    user_role_save($role);
    $role = user_role_load_by_name($name);
  }
  $current = array_keys(user_role_permissions([$role->rid => $role->name])[$role->rid] ?? []);
  if ($current) {
    user_role_revoke_permissions($role->rid, $current);
  }
  if ($permissions) {
    user_role_grant_permissions($role->rid, $permissions);
  }
  return (int) $role->rid;
}

if ($step === 'configure') {
  module_enable(['libraries', 'ctools', 'services', 'rest_server', 'locale'], TRUE);
  // Mails through PHP's mail(), whose sendmail_path (set on the server's command line) is the capture
  // script: what Drupal sends is written into the session folder, never delivered.
  variable_set('mail_system', ['default-system' => 'DefaultMailSystem']);
  // Only administrators make accounts (the standard profile lets visitors register with approval).
  variable_set('user_register', USER_REGISTER_ADMINISTRATORS_ONLY);
  variable_set('site_mail', 'site@example.test');
  // A second language, so a user's `language` can be set and checked.
  include_once DRUPAL_ROOT . '/includes/locale.inc';
  if (!array_key_exists('fr', language_list())) {
    locale_add_language('fr', 'French', 'Français');
  }

  // Text fields on users: one on the registration form (Services' create can fill only those), one not.
  foreach (['field_member_number' => 1, 'field_staff_note' => 0] as $field_name => $on_form) {
    if (!field_info_field($field_name)) {
      field_create_field(['field_name' => $field_name, 'type' => 'text', 'settings' => ['max_length' => 32]]);
    }
    if (!field_info_instance('user', $field_name, 'user')) {
      field_create_instance(['field_name' => $field_name, 'entity_type' => 'user', 'bundle' => 'user',
        'label' => $field_name, 'settings' => ['user_register_form' => $on_form]]);
    }
  }

  // Roles new members get, and one more role that administers the site (admin_roles in the settings).
  real_drupal7_set_role('member', ['access content']);
  real_drupal7_set_role('volunteer', ['access content']);
  real_drupal7_set_role('site boss', ['administer site configuration', 'administer users']);

  // The Services endpoint, in code: REST server, session authentication, JSON in and out, the user
  // resource with what the pipeline uses.
  $endpoint = services_endpoint_load('cmsuser') ?: services_endpoint_new();
  $endpoint->disabled = FALSE;
  $endpoint->api_version = 3;
  $endpoint->name = 'cmsuser';
  $endpoint->server = 'rest_server';
  $endpoint->path = $env('REAL_DRUPAL7_ENDPOINT');
  $endpoint->authentication = ['services' => 'services'];
  $endpoint->server_settings = [
    'formatters' => ['json' => TRUE, 'bencode' => FALSE, 'jsonp' => FALSE, 'php' => FALSE, 'xml' => FALSE],
    'parsers' => ['application/json' => TRUE, 'application/x-www-form-urlencoded' => FALSE,
      'multipart/form-data' => FALSE, 'application/vnd.php.serialized' => FALSE],
  ];
  $endpoint->resources = [
    'user' => [
      'operations' => ['create' => ['enabled' => 1], 'retrieve' => ['enabled' => 1], 'index' => ['enabled' => 1]],
      'actions' => ['login' => ['enabled' => 1], 'logout' => ['enabled' => 1], 'token' => ['enabled' => 1]],
      'targeted_actions' => ['password_reset' => ['enabled' => 1], 'resend_welcome_email' => ['enabled' => 1]],
    ],
  ];
  $endpoint->debug = 0;
  services_endpoint_save($endpoint);

  // The API user: no administrator; its role holds exactly the permissions the pipeline needs.
  $api_role = $env('REAL_DRUPAL7_API_ROLE');
  $rid = real_drupal7_set_role($api_role, json_decode($env('REAL_DRUPAL7_API_PERMISSIONS'), TRUE));
  $api = user_load_by_name($env('REAL_DRUPAL7_API_LOGIN'));
  $edit = ['pass' => $env('REAL_DRUPAL7_API_PASSWORD'), 'roles' => [DRUPAL_AUTHENTICATED_RID => TRUE, $rid => TRUE]];
  if (!$api) {
    $edit += ['name' => $env('REAL_DRUPAL7_API_LOGIN'), 'mail' => $env('REAL_DRUPAL7_API_EMAIL'), 'status' => 1,
      'init' => $env('REAL_DRUPAL7_API_EMAIL')];
  }
  $api = user_save($api ?: drupal_anonymous_user(), $edit);
  if (!$api) {
    fwrite(STDERR, "install.php: could not save the API user\n");
    exit(1);
  }
  drupal_flush_all_caches();
  $roles = [];
  foreach (user_roles() as $role_id => $name) {
    $roles[$name] = (int) $role_id;
  }
  $result([
    'api_user_id' => (int) $api->uid,
    'api_role_id' => $rid,
    'roles' => $roles,
    'admin_role_id' => (int) variable_get('user_admin_role', 0),
    'languages' => array_keys(language_list()),
    'drupal_version' => VERSION,
  ]);
  exit(0);
}

if ($step === 'permissions') {
  $rid = real_drupal7_set_role($env('REAL_DRUPAL7_API_ROLE'), json_decode($env('REAL_DRUPAL7_API_PERMISSIONS'), TRUE));
  $result(['permissions' => array_keys(user_role_permissions([$rid => $env('REAL_DRUPAL7_API_ROLE')])[$rid] ?? [])]);
  exit(0);
}

if ($step === 'variable') {
  $change = json_decode($env('REAL_DRUPAL7_VARIABLE'), TRUE);
  variable_set($change['name'], $change['value']);
  $result(['name' => $change['name'], 'value' => variable_get($change['name'])]);
  exit(0);
}

fwrite(STDERR, "install.php: unknown step '$step' (install, configure, permissions, variable)\n");
exit(2);
