#!/bin/sh
# rpm %posttrans: runs once after the whole transaction, for installs and upgrades alike
# ($1 is 0 on rpm < 4.12, Fleet #18534), after any old package's %preun/%postun. Older Fleet
# packages disable the service in %preun on upgrade; enabling here undoes that.
set -e
if command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
