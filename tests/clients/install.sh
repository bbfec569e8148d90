#!/usr/bin/env bash
# Installs the real clients used by tests/clients/*: idempotent, quick when done.
#   Python venv with psycopg 3, psycopg2, asyncpg, SQLAlchemy 2, pandas -> $EDDY_CLIENTS_DIR/venv
#   node-postgres + pg-cursor    -> $EDDY_CLIENTS_DIR/node/node_modules
#   puppeteer-core               -> $EDDY_CLIENTS_DIR/node/node_modules (drives chromium)
#   chromium (Debian package)    -> /usr/bin/chromium, for the console's browser test
#   pgjdbc (Debian package)      -> /usr/share/java/postgresql.jar
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="${EDDY_CLIENTS_DIR:-$HOME/.cache/eddy-clients}"
PSYCOPG_VERSION=3.3.9
# Pinned Python packages besides psycopg 3.
PYTHON_PACKAGES=(psycopg2-binary==2.9.13 SQLAlchemy==2.1.9 pandas==3.1.1 asyncpg==0.32.0)
mkdir -p "$DIR"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "install.sh: apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Toolchains (only what is missing).
command -v python3 >/dev/null || apt_install python3
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
command -v npm >/dev/null || apt_install nodejs npm
# Single-file source launch needs the compiler module, so a JDK, not a JRE.
java --list-modules 2>/dev/null | grep -q '^jdk.compiler' || apt_install default-jdk-headless

# Python: psycopg 3 and the analytics stack in a venv.
VENV="$DIR/venv"
if ! "$VENV/bin/python" -c "import psycopg, sys; sys.exit(psycopg.__version__ != '$PSYCOPG_VERSION')" 2>/dev/null; then
  echo "install.sh: psycopg[binary]==$PSYCOPG_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "psycopg[binary]==$PSYCOPG_VERSION"
fi
if ! "$VENV/bin/pip" freeze 2>/dev/null | grep -qix "${PYTHON_PACKAGES[0]}" \
   || ! "$VENV/bin/python" -c "import sqlalchemy, pandas, psycopg2, asyncpg, sys; sys.exit(sqlalchemy.__version__ != '2.1.9' or pandas.__version__ != '3.1.1' or asyncpg.__version__ != '0.32.0')" 2>/dev/null; then
  echo "install.sh: ${PYTHON_PACKAGES[*]} into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PYTHON_PACKAGES[@]}"
fi

# Node: pg, pg-cursor and puppeteer-core, pinned by node/package.json and
# node/package-lock.json.
NODE_DIR="$DIR/node"
if ! cmp -s "$HERE/node/package-lock.json" "$NODE_DIR/package-lock.json" \
   || [ ! -f "$NODE_DIR/node_modules/pg-cursor/package.json" ] \
   || [ ! -f "$NODE_DIR/node_modules/puppeteer-core/package.json" ]; then
  echo "install.sh: npm ci pg, pg-cursor, puppeteer-core into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  cp "$HERE/node/package.json" "$HERE/node/package-lock.json" "$NODE_DIR/"
  npm ci --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error >/dev/null
fi

# A headless browser for the console's test: Debian's chromium.
command -v chromium >/dev/null || apt_install chromium

# openssl makes the TLS tests' CA and server certificate.
command -v openssl >/dev/null || apt_install openssl

# Java: pgjdbc from Debian.
if [ ! -f /usr/share/java/postgresql.jar ]; then
  apt_install libpostgresql-jdbc-java
fi

echo "install.sh: clients ready in $DIR"
