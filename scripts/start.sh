#!/usr/bin/env bash
# Builds Raworc and starts it in the background on its embedded defaults
# (SQLite and keys in ~/.raworc/data), then prints the URL and credentials.
# Extra arguments go to `raworc start` (e.g. --bind 127.0.0.1:9001).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_tools
ensure_computer_tools
echo "==> building raworc (release)"
cargo build --release --locked -p raworc
mkdir -p "$HOME/.local/bin"
ln -sf "$PWD/target/release/raworc" "$HOME/.local/bin/raworc" 2>/dev/null || true
exec target/release/raworc start "$@"
