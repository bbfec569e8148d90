#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every
# test: formatting, lints, unit tests, integration tests and sqllogictest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Keep build output outside the checkout so fresh clones reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/eddy-target}"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# psql drives the psql integration tests (which also use `kill` from
# procps and `stdbuf` from coreutils); a C toolchain builds the librdkafka
# that rdkafka vendors; python3 reads cargo's install list below.
packages=()
command -v psql >/dev/null 2>&1 || packages+=(postgresql-client)
type -P kill >/dev/null 2>&1 || packages+=(procps)  # the builtin does not count
command -v stdbuf >/dev/null 2>&1 || packages+=(coreutils)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
{ command -v cc && command -v make && command -v perl; } >/dev/null 2>&1 || packages+=(build-essential perl)
if [ ${#packages[@]} -gt 0 ]; then
  echo "== installing ${packages[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
fi

# tansu is the Kafka-protocol broker the Kafka tests start (one per test),
# with its SQLite storage (libsql), which fetches from inside a batch as
# Kafka does; the benchmarks use its memory storage (dynostore). Cargo
# caches it in ~/.cargo/bin; the first install takes about 30 minutes.
tansu_features() {
  python3 - <<'PY' 2>/dev/null
import json, os
path = os.path.expanduser("~/.cargo/.crates2.json")
for key, info in json.load(open(path)).get("installs", {}).items():
    if key.startswith("tansu "):
        print(",".join(sorted(info.get("features", []))))
PY
}
case ",$(tansu_features)," in
  *,dynostore,*libsql,*) ;;
  *)
    echo "== installing tansu (Kafka broker for the tests)"
    CARGO_TARGET_DIR="$HOME/.cache/tansu-target" cargo install --locked tansu --features dynostore,libsql
    ;;
esac

# The real drivers the client tests run: psycopg 3, node-postgres with
# pg-cursor, pgjdbc.
bash tests/clients/install.sh

for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component"
  fi
done

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== build"
cargo build --workspace --all-targets

echo "== tests"
cargo test --workspace --no-fail-fast
