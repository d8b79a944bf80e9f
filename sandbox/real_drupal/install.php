<?php

/**
 * @file
 * Installs and configures one test-session Drupal 10 for sandbox/real_drupal/start.sh.
 *
 * Usage (from start.sh, with the working directory set to the site's web/ folder):
 *   php install.php install      core's installer, non-interactive (standard profile, MariaDB)
 *   php install.php configure    modules, JSON:API writable, mail, roles, a user field, the API user
 *   php install.php permissions  give the API user's role exactly REAL_DRUPAL_API_PERMISSIONS
 *   php install.php config       set one configuration value (REAL_DRUPAL_CONFIG, JSON)
 *
 * Our own script: it calls Drupal's public API (install_drupal(), DrupalKernel, the entity and
 * config APIs) the way core's InstallCommand does; nothing of Drupal is copied here. Settings come
 * from the environment (REAL_DRUPAL_*); the result of a step is written as JSON to
 * REAL_DRUPAL_RESULT. Secrets are never printed.
 */

declare(strict_types=1);

use Drupal\Core\DrupalKernel;
use Symfony\Component\HttpFoundation\Request;

if (PHP_SAPI !== 'cli') {
  exit(1);
}

$step = $argv[1] ?? '';
$root = getcwd();
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
  $path = $env('REAL_DRUPAL_RESULT');
  $old = umask(077);
  file_put_contents($path, json_encode($data, JSON_UNESCAPED_SLASHES) . "\n");
  umask($old);
};

[$host, $port] = explode(':', $env('REAL_DRUPAL_HOST'));
// Drupal reads the request's host to pick sites/default and to build absolute URLs.
$_SERVER['HTTP_HOST'] = "$host:$port";
$_SERVER['SERVER_NAME'] = $host;
$_SERVER['SERVER_PORT'] = $port;
$_SERVER['REMOTE_ADDR'] = '127.0.0.1';
$_SERVER['SERVER_SOFTWARE'] = 'real-drupal-installer';
$_SERVER['REQUEST_METHOD'] = 'GET';
$_SERVER['SCRIPT_NAME'] = '/index.php';
$_SERVER['SCRIPT_FILENAME'] = "$root/index.php";
$_SERVER['REQUEST_URI'] = '/';

$class_loader = require "$root/autoload.php";

if ($step === 'install') {
  require_once "$root/core/includes/install.core.inc";
  $password = $env('REAL_DRUPAL_ADMIN_PASSWORD');
  $parameters = [
    'interactive' => FALSE,
    'site_path' => 'sites/default',
    'parameters' => ['profile' => 'standard', 'langcode' => 'en'],
    'forms' => [
      'install_settings_form' => [
        'driver' => 'mysql',
        'mysql' => [
          'database' => $env('REAL_DRUPAL_DB_NAME'),
          'username' => $env('REAL_DRUPAL_DB_USER'),
          'password' => $env('REAL_DRUPAL_DB_PASSWORD'),
          'host' => $env('REAL_DRUPAL_DB_HOST'),
          'port' => $env('REAL_DRUPAL_DB_PORT'),
          'prefix' => '',
        ],
      ],
      'install_configure_form' => [
        'site_name' => 'cmsuser real Drupal',
        'site_mail' => 'site@example.test',
        'account' => [
          'name' => $env('REAL_DRUPAL_ADMIN_LOGIN'),
          'mail' => $env('REAL_DRUPAL_ADMIN_EMAIL'),
          'pass' => ['pass1' => $password, 'pass2' => $password],
        ],
        'enable_update_status_module' => NULL,
        'enable_update_status_emails' => NULL,
      ],
    ],
  ];
  install_drupal($class_loader, $parameters);
  $result(['installed' => TRUE, 'drupal_version' => \Drupal::VERSION]);
  exit(0);
}

// The other steps run inside a booted Drupal.
$request = Request::createFromGlobals();
$kernel = DrupalKernel::createFromRequest($request, $class_loader, 'prod');
$kernel->boot();
$kernel->preHandle($request);
\Drupal::service('account_switcher')->switchTo(\Drupal\user\Entity\User::load(1));

/**
 * Gives $role_id exactly $permissions (the role is created when missing).
 */
function real_drupal_set_role(string $role_id, string $label, array $permissions): void {
  $role = \Drupal\user\Entity\Role::load($role_id) ?? \Drupal\user\Entity\Role::create(['id' => $role_id, 'label' => $label]);
  foreach ($role->getPermissions() as $permission) {
    $role->revokePermission($permission);
  }
  foreach ($permissions as $permission) {
    $role->grantPermission($permission);
  }
  $role->save();
}

if ($step === 'configure') {
  // The API: JSON:API (needs serialization) with HTTP Basic authentication. The language module
  // makes the site multilingual (English and French here) so preferred_langcode can be checked.
  \Drupal::service('module_installer')->install(['serialization', 'basic_auth', 'jsonapi', 'language']);
  \Drupal::configFactory()->getEditable('jsonapi.settings')->set('read_only', FALSE)->save();
  if (!\Drupal\language\Entity\ConfigurableLanguage::load('fr')) {
    \Drupal\language\Entity\ConfigurableLanguage::createFromLangcode('fr')->save();
  }
  // Mails through PHP's mail(), whose sendmail_path (set on the server's command line) is the
  // capture script: what Drupal sends is written into the session folder, never delivered.
  \Drupal::configFactory()->getEditable('system.mail')->set('interface.default', 'php_mail')->save();
  // Only administrators make accounts (the standard profile lets visitors register with approval).
  \Drupal::configFactory()->getEditable('user.settings')->set('register', 'admin_only')->save();

  // A text field on users, for the extra user fields the pipeline may fill.
  $storage = \Drupal\field\Entity\FieldStorageConfig::loadByName('user', 'field_member_number')
    ?? \Drupal\field\Entity\FieldStorageConfig::create([
      'field_name' => 'field_member_number', 'entity_type' => 'user', 'type' => 'string',
      'settings' => ['max_length' => 32],
    ]);
  $storage->save();
  if (!\Drupal\field\Entity\FieldConfig::loadByName('user', 'user', 'field_member_number')) {
    \Drupal\field\Entity\FieldConfig::create([
      'field_storage' => $storage, 'bundle' => 'user', 'label' => 'Member number',
    ])->save();
  }

  // Roles new members get (ordinary ones), and one more administrator role besides core's own.
  real_drupal_set_role('member', 'Member', ['access content']);
  real_drupal_set_role('volunteer', 'Volunteer', ['access content']);
  $boss = \Drupal\user\Entity\Role::load('site_boss') ?? \Drupal\user\Entity\Role::create(['id' => 'site_boss', 'label' => 'Site boss']);
  $boss->setIsAdmin(TRUE)->save();

  // The API user: not an administrator; its role holds exactly the permissions the pipeline needs.
  $api_role = $env('REAL_DRUPAL_API_ROLE');
  real_drupal_set_role($api_role, 'CiviCRM account provisioning', json_decode($env('REAL_DRUPAL_API_PERMISSIONS'), TRUE));
  $api = user_load_by_name($env('REAL_DRUPAL_API_LOGIN'));
  if (!$api) {
    $api = \Drupal\user\Entity\User::create([
      'name' => $env('REAL_DRUPAL_API_LOGIN'), 'mail' => $env('REAL_DRUPAL_API_EMAIL'), 'status' => 1,
    ]);
  }
  $api->setPassword($env('REAL_DRUPAL_API_PASSWORD'));
  $api->addRole($api_role);
  $api->save();

  drupal_flush_all_caches();
  $roles = [];
  foreach (\Drupal\user\Entity\Role::loadMultiple() as $role) {
    $roles[$role->id()] = ['uuid' => $role->uuid(), 'is_admin' => $role->isAdmin()];
  }
  $result([
    'api_user_id' => (int) $api->id(),
    'api_user_uuid' => $api->uuid(),
    'roles' => $roles,
    'languages' => array_keys(\Drupal::languageManager()->getLanguages()),
    'drupal_version' => \Drupal::VERSION,
  ]);
  exit(0);
}

if ($step === 'permissions') {
  real_drupal_set_role($env('REAL_DRUPAL_API_ROLE'), 'CiviCRM account provisioning',
    json_decode($env('REAL_DRUPAL_API_PERMISSIONS'), TRUE));
  $result(['permissions' => \Drupal\user\Entity\Role::load($env('REAL_DRUPAL_API_ROLE'))->getPermissions()]);
  exit(0);
}

if ($step === 'config') {
  // One configuration value, e.g. {"name": "jsonapi.settings", "key": "read_only", "value": true}.
  $change = json_decode($env('REAL_DRUPAL_CONFIG'), TRUE);
  \Drupal::configFactory()->getEditable($change['name'])->set($change['key'], $change['value'])->save();
  drupal_flush_all_caches();
  $result(['name' => $change['name'], 'key' => $change['key'],
    'value' => \Drupal::config($change['name'])->get($change['key'])]);
  exit(0);
}

fwrite(STDERR, "install.php: unknown step '$step' (install, configure, permissions, config)\n");
exit(2);
