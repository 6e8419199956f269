#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, and every test against
# SQLite, PostgreSQL and MariaDB (local servers, started here if they are down).
#
#   RAWORC_TEST_DATABASES=sqlite scripts/test.sh   # SQLite only
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_tools
ensure_computer_tools
# The web page's tests drive Debian's Chromium with Playwright, and read
# text off the desktop's screenshots with tesseract.
apt_install chromium tesseract-ocr tesseract-ocr-eng
install_web_packages

dbs="${RAWORC_TEST_DATABASES:-sqlite,postgres,mysql}"
export RAWORC_TEST_DATABASES="$dbs"
export RAWORC_TEST_POSTGRES_URL="${RAWORC_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}"
export RAWORC_TEST_MYSQL_URL="${RAWORC_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306}"
# The computer image is built once per machine and kept here between runs.
export RAWORC_TEST_IMAGES_DIR="${RAWORC_TEST_IMAGES_DIR:-/var/cache/raworc-test/images}"

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
mysql_up() { mysqladmin -h 127.0.0.1 -u root status >/dev/null 2>&1; }

if [[ ",$dbs," == *",postgres,"* ]] && ! postgres_up; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        apt_install postgresql
    fi
    echo "==> starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 60); do postgres_up && break; sleep 0.5; done
    postgres_up || { echo "PostgreSQL is not reachable at 127.0.0.1:5432" >&2; exit 1; }
fi
if [[ ",$dbs," == *",mysql,"* ]] && ! mysql_up; then
    if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
        apt_install mariadb-server
    fi
    echo "==> starting MariaDB"
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
    for _ in $(seq 60); do mysql_up && break; sleep 0.5; done
    mysql_up || { echo "MariaDB is not reachable at 127.0.0.1:3306" >&2; exit 1; }
fi

# Databases left behind by interrupted test runs.
if [[ ",$dbs," == *",postgres,"* ]]; then
    for db in $(psql -h 127.0.0.1 -U postgres -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'raworc_t_%'" postgres 2>/dev/null); do
        psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" postgres >/dev/null 2>&1 || true
    done
fi
if [[ ",$dbs," == *",mysql,"* ]]; then
    for db in $(mysql -h 127.0.0.1 -u root -N -e "SHOW DATABASES LIKE 'raworc\\_t\\_%'" 2>/dev/null); do
        mysql -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS \`$db\`" >/dev/null 2>&1 || true
    done
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "==> cargo test (databases: $dbs)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --workspace --all-targets 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
