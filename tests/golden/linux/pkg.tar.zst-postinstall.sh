#!/bin/sh
# pkg.tar.zst post-install. deb: $1=configure ($2=old version on upgrade). rpm: $1=1 install,
# $1=2 upgrade; on rpm the service is (re)started by %posttrans, after the old package's
# scripts have run, so an upgrade never ends with the agent stopped. pkg.tar.zst: pacman runs
# this as post_install ($1=new version) and as post_upgrade ($1=new, $2=old version).
set -e
if command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload >/dev/null 2>&1 || true
      systemctl enable orbit.service >/dev/null 2>&1 || true
      # Orbit sets INSTALLER_PATH when it installs its own update: restart later, not from
      # inside the running agent (Fleet's "safe restart").
      if [ -z "${INSTALLER_PATH:-}" ]; then
        systemctl restart orbit.service >/dev/null 2>&1 || true
      elif command -v systemd-run >/dev/null 2>&1; then
        # AccuracySec=1s: at 60 s, not anywhere up to 120 s (timers coalesce by 1 min by
        # default); the second form is for a systemd-run without --timer-property.
        systemd-run --on-active=60 --timer-property=AccuracySec=1s --working-directory=/ \
            systemctl restart --no-block orbit.service >/dev/null 2>&1 ||
          systemd-run --on-active=60 --working-directory=/ \
            systemctl restart --no-block orbit.service >/dev/null 2>&1 || true
      fi
fi
exit 0
