#!/bin/sh
# deb pre-install. The package owns none of the system directories it installs into (dpkg
# removes the directories a package owns once they are empty: /opt, /usr/local/bin on a fresh
# Debian), but dpkg unpacks only into directories that exist, so create any that are missing.
set -e
umask 022
for dir in /etc/default /usr/lib/systemd/system /usr/local/bin /var/log; do
  [ -d "$dir" ] || mkdir -p "$dir"
done
exit 0
