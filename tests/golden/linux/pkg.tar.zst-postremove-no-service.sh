#!/bin/sh
# pkg.tar.zst post-removal. Clean up what Orbit created at run time only on a real removal:
# deb $1=remove|purge, rpm $1=0. Never on upgrade (rpm $1=1, Fleet #14380). pacman runs
# post_remove only for a real removal ($1 is the removed version).
case "${1:-}" in
  *)
    rm -rf /var/lib/orbit /var/log/orbit /usr/local/bin/orbit /etc/default/orbit \
      /usr/lib/systemd/system/orbit.service /opt/orbit
    if command -v systemctl >/dev/null 2>&1; then
      systemctl daemon-reload >/dev/null 2>&1 || true
    fi
    ;;
esac
exit 0
