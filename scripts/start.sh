#!/usr/bin/env bash
# Builds Raworc and starts it in the background on its embedded defaults
# (SQLite and keys in ~/.raworc/data, the local runtime), then prints the
# URL and credentials. Run as root to get computers (the local runtime
# needs namespaces, mounts and cgroups); otherwise the server starts with
# `--runtime none`. Extra arguments go to `raworc start` (e.g. --bind 127.0.0.1:9001).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_tools
ensure_computer_tools
echo "==> building raworc (release)"
cargo build --release --locked -p raworc
mkdir -p "$HOME/.local/bin"
ln -sf "$PWD/target/release/raworc" "$HOME/.local/bin/raworc" 2>/dev/null || true
# As root, `raworc start` builds the computer image first when it is
# missing (a few minutes, once), with progress.
if [ "$(id -u)" != 0 ]; then
    echo "==> not root: starting without computers (--runtime none); run as root for computers"
    export RAWORC_RUNTIME=none
fi
exec target/release/raworc start "$@"
