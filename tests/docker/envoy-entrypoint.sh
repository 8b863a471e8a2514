#!/usr/bin/env sh
# TEST-ONLY stand-in for the official envoyproxy/envoy image's /docker-entrypoint.sh (same
# behaviour): see seed-images.sh.
set -e
loglevel="${loglevel:-}"
USERID=$(id -u)
# A first argument that looks like an option runs Envoy with it.
if [ "${1#-}" != "$1" ]; then
  set -- envoy "$@"
fi
if [ "$1" = 'envoy' ] && [ -n "$loglevel" ]; then
  set -- "$@" --log-level "$loglevel"
fi
if [ "$ENVOY_UID" != "0" ] && [ "$USERID" = 0 ]; then
  if [ -n "$ENVOY_UID" ]; then usermod -u "$ENVOY_UID" envoy; fi
  if [ -n "$ENVOY_GID" ]; then groupmod -g "$ENVOY_GID" envoy; fi
  chown envoy:envoy /dev/stdout /dev/stderr
  exec su-exec envoy "$@"
else
  exec "$@"
fi
