#!/bin/sh
# PHP's sendmail_path for the real test sites (sandbox/real_*/start.sh): every mail a site sends
# through mail() is written, as the raw message PHP hands to sendmail, into a file of its own
# (<nanoseconds>-<pid>.eml) in the folder given as the first argument (php -S does not pass its
# environment to mail(), and Backdrop's bee runs it as the site's SSH user). Nothing is delivered.
# Written under a dot-name first and renamed, so a reader never sees half a mail. Exit 0 tells PHP
# the mail went out; a file named "fail" in that folder makes it answer 1 (a broken mail system).
# Usage: capture-mail.sh [--umask MASK] DIR [sendmail's options, ignored]; the files' umask is 077
# unless given.
mask=077
if [ "$1" = --umask ]; then mask=$2; shift 2; fi
dir=$1
[ -n "$dir" ] && [ -d "$dir" ] || exit 1
[ -e "$dir/fail" ] && { cat >/dev/null; exit 1; }
name=$(date +%s%N)-$$
umask "$mask"
cat >"$dir/.$name.tmp" && mv "$dir/.$name.tmp" "$dir/$name.eml"
