#!/usr/bin/env bash
# Installs what Lifeboat needs to build and test on Debian, if anything is missing:
# libzstd (build), attr (xattr tests), and for the remote-site tests openssl, htpasswd (apache2-utils),
# curl, restic, rclone and moto_server (PyPI: moto[server]); for the database recipes (tests/integration/databases.sh)
# PostgreSQL 15 (postgresql-15, postgresql-client-15), MariaDB (mariadb-server, mariadb-client), Redis (redis-server,
# redis-tools: redis-cli --rdb, redis-check-rdb) and sqlite3: the
# suite starts servers of its own on sockets under its work folder, and neither uses nor stops the system services
# these packages may start; the agent's state database needs libsqlite3-dev (GRDB), and its suite a real
# Prometheus server and promtool (prometheus); the suites use setsid and runuser (util-linux), ps/pgrep (procps), ss (iproute2) and
# chattr (e2fsprogs); the HA store's tests a real etcd (etcd-server, etcd-client: 3.4, its JSON gateway), and the HA
# suite (tests/integration/ha.sh: network namespaces, ip from iproute2) its writer's PostgreSQL driver (python3-psycopg2,
# run with /usr/bin/python3); the dashboard's browser test headless Chromium (chromium) driven over the DevTools
# protocol (python3-websocket, with /usr/bin/python3).
set -euo pipefail
need=()
for pkg in libzstd-dev pkg-config attr openssl apache2-utils curl restic rclone procps util-linux iproute2 e2fsprogs \
           postgresql-15 postgresql-client-15 mariadb-server mariadb-client redis-server redis-tools sqlite3 libsqlite3-dev prometheus \
           etcd-server etcd-client python3-psycopg2 chromium python3-websocket; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ "${#need[@]}" -gt 0 ]; then
  $SUDO apt-get update
  $SUDO apt-get install -y "${need[@]}"
fi
if ! command -v moto_server >/dev/null 2>&1 || ! python3 -c "import flask, boto3" >/dev/null 2>&1; then
  python3 -m pip install --quiet 'moto[server]'
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
command -v swift >/dev/null 2>&1 || { echo "swift not found: install Swift 6 (expected at /opt/swift/usr/bin)" >&2; exit 1; }
