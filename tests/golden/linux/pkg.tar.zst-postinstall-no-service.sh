#!/bin/sh
# pkg.tar.zst post-install. deb: $1=configure ($2=old version on upgrade). rpm: $1=1 install,
# $1=2 upgrade; on rpm the service is (re)started by %posttrans, after the old package's
# scripts have run, so an upgrade never ends with the agent stopped. pkg.tar.zst: pacman runs
# this as post_install ($1=new version) and as post_upgrade ($1=new, $2=old version).
set -e
if command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
