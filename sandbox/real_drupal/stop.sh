#!/usr/bin/env bash
# Stop what sandbox/real_drupal/start.sh started for one session: its PHP server (the whole
# process group, workers included), and MariaDB only if that start had to start it.
#
# Usage: stop.sh [--purge] [DIR | DIR/state.json | a --json FILE of start.sh]   (or env REAL_DRUPAL_DIR)
#   Without --purge the site stays for a warm start.sh --dir DIR.
#   --purge    also drop the session's database and DB user and delete the session folder.
#   stop.sh --orphans
#              purges the sites whose session folder is gone (a reboot empties /dev/shm, or the
#              folder was deleted): found in /var/tmp/cmsuser-real-drupal, where start.sh records
#              each site's database and folder.
# Touches nothing that a state file or that record does not name.
set -euo pipefail

TAG=real-drupal
SBX_PREFIX=drupal_sbx_
. "$(dirname "${BASH_SOURCE[0]}")/../realsite.sh"
TARGET=${REAL_DRUPAL_DIR:-}
WEB_ROOT=site/web   # what an orphan's server names after -t
stop_main "$@"
