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
install_web_packages --omit=dev
echo "==> building raworc (release)"
cargo build --release --locked -p raworc
# Link the binary where PATH looks: /usr/local/bin for root, else
# ~/.local/bin (and say so when that is not on PATH).
# Where cargo put it (CARGO_TARGET_DIR moves it out of the tree).
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$target_dir/release/raworc"
if [ "$(id -u)" = 0 ]; then link_dir=/usr/local/bin; else link_dir="$HOME/.local/bin"; fi
mkdir -p "$link_dir"
ln -sf "$bin" "$link_dir/raworc"
case ":$PATH:" in
    *":$link_dir:"*) echo "==> raworc is linked at $link_dir/raworc" ;;
    *) echo "==> $link_dir is not on your PATH: call $bin, or add it with"
       echo "      export PATH=\"$link_dir:\$PATH\"" ;;
esac
# As root, `raworc start` builds the computer image first when it is
# missing (a few minutes, once), with progress.
if [ "$(id -u)" != 0 ]; then
    echo "==> not root: starting without computers (--runtime none); run as root for computers"
    export RAWORC_RUNTIME=none
fi
exec "$bin" start "$@"
