<?php
/**
 * @file
 * Configures a freshly installed test-session Backdrop (sandbox/real_backdrop/start.sh), run from the
 * site's root with PHP CLI: telemetry and update checks off, registration by administrators only,
 * roles member and volunteer, a user field field_member_number (text), the language module with
 * French besides English. Prints one JSON line of facts for the session's state.
 */

define('BACKDROP_ROOT', getcwd());
$_SERVER['HTTP_HOST'] = 'localhost';
$_SERVER['REMOTE_ADDR'] = '127.0.0.1';
$_SERVER['REQUEST_METHOD'] = 'GET';
$_SERVER['SCRIPT_NAME'] = '/index.php';
require_once BACKDROP_ROOT . '/core/includes/bootstrap.inc';
backdrop_bootstrap(BACKDROP_BOOTSTRAP_FULL);

module_disable(array('telemetry', 'update'), FALSE);
module_enable(array('language'));

config_set('system.core', 'user_register', 'admin_only');
config_set('system.core', 'site_mail', 'site@example.test');

foreach (array('member' => 'Member', 'volunteer' => 'Volunteer') as $name => $label) {
  if (!user_role_load($name)) {
    user_role_save((object) array('name' => $name, 'label' => $label));
  }
}

if (!field_info_field('field_member_number')) {
  field_create_field(array('field_name' => 'field_member_number', 'type' => 'text', 'cardinality' => 1,
    'settings' => array('max_length' => 64)));
  field_create_instance(array('field_name' => 'field_member_number', 'entity_type' => 'user', 'bundle' => 'user',
    'label' => 'Member number', 'widget' => array('type' => 'text_textfield')));
}

$languages = language_list();
if (!isset($languages['fr'])) {
  language_save((object) array('langcode' => 'fr', 'name' => 'French', 'native' => 'Français', 'direction' => 0,
    'enabled' => 1, 'weight' => 1));
}
backdrop_flush_all_caches();

echo json_encode(array(
  'backdrop_version' => BACKDROP_VERSION,
  'roles' => array_keys(user_roles(TRUE)),
  'admin_role' => config_get('system.core', 'user_admin_role'),
  'languages' => array_keys(language_list(TRUE)),
  'modules' => array('telemetry' => module_exists('telemetry'), 'update' => module_exists('update'),
    'language' => module_exists('language')),
  'max_uid' => (int) db_query('SELECT MAX(uid) FROM {users}')->fetchField(),
)) . "\n";
