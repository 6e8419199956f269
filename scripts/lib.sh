# Shared helpers of the set-up scripts. Source, don't run.

# Runs a command as root (directly, or through sudo).
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs Debian/Ubuntu packages that are missing.
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# A C toolchain and Rust (via rustup when cargo is missing).
ensure_build_tools() {
    if command -v apt-get >/dev/null 2>&1; then
        apt_install build-essential pkg-config curl ca-certificates
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        else
            echo "==> installing Rust with rustup"
            curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
            export PATH="$HOME/.cargo/bin:$PATH"
        fi
    fi
}

# What building and running computers needs on the host: debootstrap (the
# image), util-linux (unshare, mount, nsenter), iproute2 and nftables (egress),
# btrfs-progs (disks on a btrfs image: snapshots for remixes of running sessions).
ensure_computer_tools() {
    if command -v apt-get >/dev/null 2>&1; then
        apt_install debootstrap util-linux iproute2 nftables btrfs-progs
    fi
}

# Node and npm, for the web page's packages (noVNC; Playwright for its tests).
ensure_node() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
}

# The web page's npm packages, installed into web/node_modules as the lock
# file pins them; `--omit=dev` leaves out what only its tests need.
install_web_packages() {
    ensure_node
    echo "==> installing the web page's packages (npm ci $*)"
    (cd web && npm ci --no-audit --no-fund --loglevel=error "$@")
}
