#!/bin/sh
# rpm pre-removal. Only a real removal stops the agent: deb $1=remove|deconfigure,
# rpm $1=0. Upgrades (deb $1=upgrade|failed-upgrade, rpm $1>=1) leave it running (Fleet #15006).
# pacman runs pre_remove only for a real removal ($1 is the removed version), never on upgrade.
case "${1:-}" in
  remove|deconfigure|0)
    if command -v systemctl >/dev/null 2>&1; then
      systemctl disable --now orbit.service >/dev/null 2>&1 || true
    fi
    pkill fleet-desktop >/dev/null 2>&1 || true
    ;;
esac
exit 0
