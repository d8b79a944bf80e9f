#!/bin/sh
# PHP's sendmail_path for a test-session Backdrop (sandbox/real_backdrop/start.sh): every mail the site
# sends through mail() - bee runs PHP CLI as the SSH test user, whose PHP reads this through the
# session's php.ini (PHP_INI_SCAN_DIR, set by the private sshd) - is written, as the raw message PHP
# hands to sendmail, into a file of its own in the folder given as the first argument. Nothing is
# delivered. Exit 0 tells PHP the mail went out; a file named "fail" in that folder makes it answer 1
# (a broken mail system, for tests).
dir=$1
[ -n "$dir" ] && [ -d "$dir" ] || exit 1
[ -e "$dir/fail" ] && { cat >/dev/null; exit 1; }
name=$(date +%s%N)-$$
umask 022
cat >"$dir/.$name.tmp" && mv "$dir/.$name.tmp" "$dir/$name.eml"
