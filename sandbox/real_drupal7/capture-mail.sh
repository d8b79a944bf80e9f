#!/bin/sh
# PHP's sendmail_path for a test-session Drupal 7 (sandbox/real_drupal7/start.sh): every mail the site
# sends through mail() is written, as the raw message PHP hands to sendmail, into a file of its own
# in REAL_DRUPAL_MAIL_DIR (passed as the first argument, since php -S does not pass its environment
# to mail()). Nothing is delivered. Exit status 0 tells PHP the mail went out; a file named
# "fail" in that folder makes it answer 1 instead (a broken mail system, for tests).
dir=$1
[ -n "$dir" ] && [ -d "$dir" ] || exit 1
[ -e "$dir/fail" ] && { cat >/dev/null; exit 1; }
name=$(date +%s%N)-$$
umask 077
cat >"$dir/.$name.tmp" && mv "$dir/.$name.tmp" "$dir/$name.eml"
