# A Debian 12 machine with systemd as PID 1, for installing our deb, rpm and Arch packages for
# real. rpm is Debian's rpm 4.18: it runs the rpm scriptlets (installed with --nodeps); pacman is
# Debian's pacman 6.0 (its scriptlet shell is /bin/sh, dash, where Arch's is bash).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends systemd systemd-sysv procps rpm \
      pacman-package-manager \
 && rm -rf /var/lib/apt/lists/* \
 && systemctl mask systemd-udevd.service systemd-udev-trigger.service getty.target \
      console-getty.service systemd-logind.service \
 && mkdir -p /etc/rpm /var/lib/rpm \
 && echo "%_dbpath /var/lib/rpm" > /etc/rpm/macros && rpm --initdb \
 && mkdir -p /var/lib/pacman
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
