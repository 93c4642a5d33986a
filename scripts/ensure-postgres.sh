#!/usr/bin/env bash
# Makes sure a PostgreSQL answers at $TURNPIKE_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test):
# uses the one running, or starts the installed cluster, or installs Debian's package and starts it.
# Prints what it did; exits non-zero with what to do next if none of that works.
set -euo pipefail
url="${TURNPIKE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
ready() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -c "$1"; else sudo -u postgres sh -c "$1"; fi; }

if ready; then
  echo "PostgreSQL is running on 127.0.0.1:5432"
else
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  fi
  version="$(ls /etc/postgresql | sort -n | tail -1)"
  echo "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do ready && break; sleep 1; done
  ready || { echo "PostgreSQL did not start; see /var/log/postgresql/, or set TURNPIKE_TEST_POSTGRES_URL to a server that runs" >&2; exit 1; }
fi

# The tests connect over TCP as the URL's user without a password (trust), as this machine is set up;
# a fresh Debian install asks for a password on TCP, so give the user one and say so.
if ! psql "$url" -qAtc 'SELECT 1' >/dev/null 2>&1; then
  as_postgres "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
  as_postgres "psql -qAtc \"SELECT 1 FROM pg_database WHERE datname = 'test'\" | grep -q 1 || createdb test"
  echo "note: PostgreSQL asks for a password here; tests use postgres://postgres:postgres@127.0.0.1:5432/test"
  echo "export TURNPIKE_TEST_POSTGRES_URL=postgres://postgres:postgres@127.0.0.1:5432/test" > .postgres-env
fi
echo "PostgreSQL answers"
