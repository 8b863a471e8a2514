#!/bin/sh
# TEST-ONLY stand-in for the official redis image's docker-entrypoint.sh (same behaviour for
# what docker-compose.yml uses): see seed-images.sh.
set -e
# A first argument that is an option or a .conf file runs redis-server with it.
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi
# As root: own the data directory, then run as redis.
if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec gosu redis "$0" "$@"
fi
# Protected mode is pointless in a container (ports are published explicitly); the official
# entrypoint turns it off unless a config file sets it.
if [ "$1" = 'redis-server' ]; then
  if [ -f "$2" ] && grep -q '^protected-mode' "$2"; then :; else
    shift
    set -- redis-server "$@" --protected-mode no
  fi
fi
exec "$@"
