<?php
// cmsuser-bee-program: 1
// operation: facts
// operation: find_users
// operation: users_by_id
// operation: create_users
// operation: send_password_mails
//
// The named operations the Backdrop backend (cms_operators/backdrop/backend.py) runs through
// `bee eval` on the site's own server. BeeHook sends this file (without its first line) and the
// call's JSON on stdin, as {"program", "operation", "arguments"}; the command line carries only a
// fixed bootstrap, so no personal data shows in `ps` or a shell history. The answer is printed
// between markers, so bee's own output around it (messages, colours) is ignored:
//
//   @@cmsuser:item@@ {...}      create_users: one line per account, as soon as it is saved
//   @@cmsuser:answer@@ {...}    the whole answer, last
//
// and the process exits 0 (answer given), 2 (the call itself was wrong: unknown operation, bad
// arguments) or 3 (the site failed: e.g. its database), bee's own 0-on-error notwithstanding.
// The sandbox's emulator (sandbox/backdrop/bee.py) implements the operations declared above and
// refuses any other; only a real Backdrop runs this PHP.

function cmsuser_emit($marker, $value) {
  echo "\n@@cmsuser:" . $marker . "@@ " . json_encode($value, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE) . "\n";
  if (function_exists('ob_get_level')) {
    while (ob_get_level() > 0) {
      ob_end_flush();
    }
  }
  flush();
}

function cmsuser_finish($status, $answer) {
  cmsuser_emit('answer', $answer);
  exit($status);
}

function cmsuser_user_row($account) {
  $roles = array();
  foreach ((array) $account->roles as $role) {
    if ($role !== BACKDROP_AUTHENTICATED_ROLE && $role !== BACKDROP_ANONYMOUS_ROLE) {
      $roles[] = $role;
    }
  }
  sort($roles);
  return array(
    'uid' => (int) $account->uid,
    'name' => (string) $account->name,
    'mail' => (string) $account->mail,
    'status' => (int) $account->status,
    'roles' => $roles,
    'created' => (int) $account->created,
    'language' => (string) (isset($account->language) ? $account->language : ''),
  );
}

function cmsuser_load_rows($uids) {
  $uids = array_values(array_unique(array_filter(array_map('intval', (array) $uids))));
  $rows = array();
  foreach (array_chunk($uids, 200) as $chunk) {
    foreach (user_load_multiple($chunk, array(), TRUE) as $account) {
      $rows[] = cmsuser_user_row($account);
    }
  }
  usort($rows, function ($a, $b) { return $a['uid'] - $b['uid']; });
  return $rows;
}

function cmsuser_user_fields() {
  $fields = array();
  foreach (field_info_instances('user', 'user') as $name => $instance) {
    $info = field_info_field($name);
    $fields[$name] = array('type' => $info ? $info['type'] : '', 'label' => $instance['label']);
  }
  ksort($fields);
  return $fields;
}

function cmsuser_facts() {
  $roles = array();
  foreach (user_roles(TRUE) as $name => $label) {
    if ($name !== BACKDROP_AUTHENTICATED_ROLE) {
      $roles[$name] = (string) $label;
    }
  }
  $languages = array();
  foreach (language_list(TRUE) as $code => $language) {
    $languages[] = (string) $code;
  }
  sort($languages);
  return array(
    'version' => BACKDROP_VERSION,
    'site_name' => (string) config_get('system.core', 'site_name'),
    'roles' => $roles,
    'admin_role' => (string) config_get('system.core', 'user_admin_role'),
    'fields' => cmsuser_user_fields(),
    'languages' => $languages,
    'default_language' => (string) language_default()->langcode,
    'mail_notify' => config_get('system.core', 'user_mail_register_admin_created_notify') !== FALSE,
    'max_uid' => (int) db_query('SELECT MAX(uid) FROM {users}')->fetchField(),
  );
}

// Names and mails are compared by the database, under the columns' collation: what Backdrop's own
// uniqueness checks (LIKE) see, case-insensitive.
function cmsuser_find_users($emails, $names) {
  $uids = array();
  foreach (array_chunk(array_values(array_filter((array) $emails, 'strlen')), 200) as $chunk) {
    $uids = array_merge($uids, db_query('SELECT uid FROM {users} WHERE uid > 0 AND mail IN (:v)', array(':v' => $chunk))->fetchCol());
  }
  foreach (array_chunk(array_values(array_filter((array) $names, 'strlen')), 200) as $chunk) {
    $uids = array_merge($uids, db_query('SELECT uid FROM {users} WHERE uid > 0 AND name IN (:v)', array(':v' => $chunk))->fetchCol());
  }
  return cmsuser_load_rows($uids);
}

function cmsuser_taken($column, $value) {
  return (int) db_select('users')->fields('users', array('uid'))
    ->condition('uid', 0, '>')
    ->condition($column, db_like($value), 'LIKE')
    ->range(0, 1)->execute()->fetchField();
}

// One account: validated as Backdrop's account form would (user_validate_name, the email, name and
// mail taken, roles, fields), then saved on its own (user_save is one transaction): a crash later in
// the call leaves it whole and findable by its mail.
function cmsuser_create_one($request, $roles, $fields, $languages) {
  $name = isset($request['name']) ? (string) $request['name'] : '';
  $mail = isset($request['mail']) ? trim((string) $request['mail']) : '';
  $problem = user_validate_name($name);
  if ($problem) {
    return array('error' => 'invalid_name', 'field' => 'name', 'message' => strip_tags((string) $problem));
  }
  if ($mail === '' || backdrop_strlen($mail) > 254 || !valid_email_address($mail)) {
    return array('error' => 'invalid_mail', 'field' => 'mail', 'message' => 'The email address is not valid.');
  }
  if (($uid = cmsuser_taken('name', $name))) {
    return array('error' => 'name_taken', 'field' => 'name', 'uid' => $uid, 'message' => 'The name is already taken.');
  }
  if (($uid = cmsuser_taken('mail', $mail))) {
    return array('error' => 'mail_taken', 'field' => 'mail', 'uid' => $uid, 'message' => 'The email address is already taken.');
  }
  $account_roles = array();
  foreach ((array) (isset($request['roles']) ? $request['roles'] : array()) as $role) {
    if (!isset($roles[$role])) {
      return array('error' => 'unknown_role', 'field' => 'roles', 'message' => 'The role ' . $role . ' does not exist.');
    }
    $account_roles[] = $role;
  }
  $values = array(
    'name' => $name,
    'mail' => $mail,
    'init' => $mail,
    'pass' => user_password(32),
    'status' => 1,
    'roles' => $account_roles,
  );
  $language = isset($request['language']) ? (string) $request['language'] : '';
  if ($language !== '' && isset($languages[$language])) {
    $values['language'] = $language;
  }
  foreach ((array) (isset($request['fields']) ? $request['fields'] : array()) as $field => $value) {
    if (!isset($fields[$field])) {
      return array('error' => 'unknown_field', 'field' => $field, 'message' => 'The user field ' . $field . ' does not exist.');
    }
    $values[$field] = array(LANGUAGE_NONE => array(array('value' => (string) $value)));
  }
  try {
    $account = entity_create('user', $values);
    $account->save();
  }
  catch (Exception $e) {
    watchdog_exception('cmsuser', $e);
    // The unique key on name settles a race with another writer; anything else is the site's fault.
    if (($uid = cmsuser_taken('name', $name))) {
      return array('error' => 'name_taken', 'field' => 'name', 'uid' => $uid, 'message' => 'The name is already taken.');
    }
    return array('error' => 'save_failed', 'field' => '', 'message' => get_class($e) . ' while saving the account');
  }
  $saved = user_load($account->uid, TRUE);
  return array('user' => cmsuser_user_row($saved));
}

function cmsuser_create_users($requests) {
  $roles = user_roles(TRUE);
  unset($roles[BACKDROP_AUTHENTICATED_ROLE]);
  $fields = cmsuser_user_fields();
  $languages = language_list(TRUE);
  $results = array();
  foreach (array_values((array) $requests) as $index => $request) {
    $result = cmsuser_create_one((array) $request, $roles, $fields, $languages) + array('index' => $index);
    cmsuser_emit('item', $result);
    $results[] = $result;
  }
  return $results;
}

// Backdrop's own "account created by an administrator" mail (user.mail register_admin_created: a
// one-time login link to set the password), as its people page sends it with "Notify user"; or, for
// the reset group and tag, its "password reset" mail (password_reset), as "Request new password" does.
function cmsuser_send_password_mails($uids, $mail) {
  $results = array();
  foreach (array_values(array_unique(array_map('intval', (array) $uids))) as $uid) {
    $account = $uid > 0 ? user_load($uid, TRUE) : FALSE;
    if (!$account) {
      $results[] = array('uid' => $uid, 'error' => 'no_user', 'message' => 'There is no account ' . $uid . '.');
      continue;
    }
    if (!$account->status) {
      $results[] = array('uid' => $uid, 'error' => 'blocked', 'message' => 'Account ' . $uid . ' is blocked.');
      continue;
    }
    $sent = _user_mail_notify($mail, $account);
    if ($sent === NULL) {
      $results[] = array('uid' => $uid, 'error' => 'notify_off', 'message' => 'The site does not send the "created by an administrator" mail (user mail settings).');
    }
    elseif (!$sent) {
      $results[] = array('uid' => $uid, 'error' => 'mail_failed', 'message' => 'The site could not send the mail.');
    }
    else {
      $results[] = array('uid' => $uid, 'sent' => TRUE);
    }
  }
  return $results;
}

function cmsuser_main($operation, $arguments) {
  $arguments = is_array($arguments) ? $arguments : array();
  try {
    switch ($operation) {
      case 'facts':
        cmsuser_finish(0, array('facts' => cmsuser_facts()));
      case 'find_users':
        cmsuser_finish(0, array('users' => cmsuser_find_users(
          isset($arguments['emails']) ? $arguments['emails'] : array(),
          isset($arguments['names']) ? $arguments['names'] : array())));
      case 'users_by_id':
        cmsuser_finish(0, array('users' => cmsuser_load_rows(isset($arguments['uids']) ? $arguments['uids'] : array())));
      case 'create_users':
        if (!isset($arguments['users']) || !is_array($arguments['users'])) {
          cmsuser_finish(2, array('error' => 'bad_arguments', 'message' => 'create_users needs a list "users".'));
        }
        cmsuser_finish(0, array('results' => cmsuser_create_users($arguments['users'])));
      case 'send_password_mails':
        // a new account's mail, or the reset mail; no other user mail may be sent through here
        $mail = isset($arguments['mail']) ? $arguments['mail'] : 'register_admin_created';
        if (!in_array($mail, array('register_admin_created', 'password_reset'), TRUE)) {
          cmsuser_finish(2, array('error' => 'bad_arguments', 'message' => 'send_password_mails: no mail ' . $mail . '.'));
        }
        cmsuser_finish(0, array('results' => cmsuser_send_password_mails(isset($arguments['uids']) ? $arguments['uids'] : array(), $mail)));
      default:
        cmsuser_finish(2, array('error' => 'unknown_operation', 'message' => 'No operation ' . $operation . '.'));
    }
  }
  catch (Throwable $e) {
    cmsuser_finish(3, array('error' => 'site_error', 'message' => get_class($e) . ' on the site (see its log)'));
  }
}

cmsuser_main($cmsuser_call['operation'], isset($cmsuser_call['arguments']) ? $cmsuser_call['arguments'] : array());
