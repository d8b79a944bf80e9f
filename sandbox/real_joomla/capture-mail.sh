#!/bin/sh
# PHP's sendmail_path for a real_joomla session: every mail Joomla sends (mailer "mail", i.e.
# PHP's mail()) is written, headers and body as handed to sendmail, into the folder named by
# the first argument, one file per mail (<nanoseconds>-<pid>.eml); nothing is ever delivered.
# Written under a dot-name first and renamed, so a reader never sees half a mail.
dir=${1:?capture-mail.sh: the mail folder is the first argument}
tmp="$dir/.$$.$(date +%s%N).tmp"
cat >"$tmp" && mv "$tmp" "$dir/$(date +%s%N)-$$.eml"
