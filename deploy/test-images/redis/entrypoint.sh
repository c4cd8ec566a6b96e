#!/bin/sh
# As the official redis image: options alone mean redis-server; without a config file, protected mode
# is off (redis would otherwise refuse every client but localhost).
set -eu
case "${1:-}" in
  -*|*.conf) set -- redis-server "$@" ;;
esac
if [ "${1:-}" = redis-server ]; then
  case "${2:-}" in
    *.conf) ;;
    *) shift; set -- redis-server --protected-mode no "$@" ;;
  esac
fi
exec "$@"
