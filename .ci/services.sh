#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on the addresses the tests use (start them if installed but
# stopped) and that Chromium is there for the page tests. With --install (`make test`, CI), install what is
# missing from Debian's packages first, where this user can (root with apt-get); otherwise say what to install.
set -euo pipefail

PGHOST=${PGHOST:-127.0.0.1}; PGPORT=${PGPORT:-5432}
REDIS_HOST=${REDIS_HOST:-127.0.0.1}; REDIS_PORT=${REDIS_PORT:-6379}
install=${1:-}

pg_up() { pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; }
redis_up() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "cannot install $* here (needs root and apt-get): install it, then run again" >&2
    return 0  # the check at the end names what is missing
  fi
  echo "installing $* from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! pg_up; then
  if ! command -v pg_ctlcluster >/dev/null && [ "$install" = --install ]; then apt_install postgresql; fi
  if command -v pg_ctlcluster >/dev/null; then
    version=$(ls /etc/postgresql | sort -V | tail -1)
    echo "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    # Tests connect over TCP as postgres without a password (as this machine is set up).
    for _ in $(seq 30); do pg_up && break; sleep 1; done
  fi
fi
if ! redis_up; then
  if ! command -v redis-server >/dev/null && [ "$install" = --install ]; then apt_install redis-server; fi
  if command -v redis-server >/dev/null; then
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 30); do redis_up && break; sleep 0.5; done
  fi
fi

# The page tests drive Debian's Chromium through Playwright (never a downloaded browser).
if ! [ -x /usr/bin/chromium ] && [ "$install" = --install ]; then apt_install chromium; fi

missing=()
pg_up || missing+=("PostgreSQL on $PGHOST:$PGPORT (Debian package: postgresql; or set DATABASE_URL)")
redis_up || missing+=("Redis on $REDIS_HOST:$REDIS_PORT (Debian package: redis-server; or set REDIS_URL)")
[ -x /usr/bin/chromium ] || missing+=("Chromium at /usr/bin/chromium for the browser tests (Debian package: chromium)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "The tests need real services that are not running and could not be started:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi
