#!/usr/bin/env bash
# Runs the real-client tests against an Eddy server on 127.0.0.1:PORT.
# Usage: tests/clients/run.sh PORT    (run tests/clients/install.sh first)
set -uo pipefail
PORT="${1:?usage: run.sh PORT}"
HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="${EDDY_CLIENTS_DIR:-$HOME/.cache/eddy-clients}"
JAR=/usr/share/java/postgresql.jar
LIMIT="${EDDY_CLIENT_TEST_TIMEOUT:-300}"   # seconds per client, so a server hang fails the run

failed=()
run() {
  local name="$1"; shift
  echo "== $name"
  timeout "$LIMIT" "$@"
  local rc=$?
  if [ $rc -ne 0 ]; then
    [ $rc -eq 124 ] && echo "== $name timed out after ${LIMIT}s"
    echo "== $name FAILED (exit $rc)"
    failed+=("$name")
  fi
}

run psycopg "$DIR/venv/bin/python" "$HERE/python/psycopg_cursors.py" "$PORT"
run sqlalchemy-pandas "$DIR/venv/bin/python" "$HERE/python/sqlalchemy_pandas.py" "$PORT"
run python-drivers "$DIR/venv/bin/python" "$HERE/python/drivers.py" "$PORT"
run python-push-queries "$DIR/venv/bin/python" "$HERE/python/push_queries.py" "$PORT"
run node-postgres env NODE_PATH="$DIR/node/node_modules" node "$HERE/node/pg_cursor.js" "$PORT"
run node-postgres-types env NODE_PATH="$DIR/node/node_modules" node "$HERE/node/pg_types.js" "$PORT"
run pgjdbc java -cp "$JAR" "$HERE/java/FetchSize.java" "$PORT"
run pgjdbc-metadata java -cp "$JAR" "$HERE/java/MetaData.java" "$PORT"

if [ ${#failed[@]} -gt 0 ]; then
  echo "clients: ${#failed[@]} of 8 failed: ${failed[*]}"
  exit 1
fi
echo "clients: all 8 passed"
