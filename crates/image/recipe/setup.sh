#!/bin/sh
# Runs inside the new rootfs (chroot) after the packages are installed.
# Changing this file changes the image's digest.
set -eu

# The unprivileged user everything in a computer runs as.
if ! id computer >/dev/null 2>&1; then
    groupadd --gid 1000 computer
    useradd --uid 1000 --gid 1000 --create-home --home-dir /home/computer --shell /bin/bash computer
fi

# The session's directories: code (setup.sh, instructions), data, secrets.
mkdir -p /session/code /session/data /session/secrets
chown -R computer:computer /session
chmod 0700 /session/secrets

# A browser run as a normal user needs a world-writable /tmp.
chmod 1777 /tmp

# Chromium: no first-run pages, no background traffic to a network the
# computer usually does not have.
mkdir -p /etc/chromium.d
cat > /etc/chromium.d/raworc <<'FLAGS'
export CHROMIUM_FLAGS="$CHROMIUM_FLAGS --no-first-run --disable-background-networking --disable-component-update --disable-sync --disable-quic --disable-gpu --password-store=basic"
FLAGS
# Where computers refuse user namespaces, Chromium runs with --no-sandbox
# (the computer is its sandbox); the policy below keeps the warning bar
# about that flag off the screen.
mkdir -p /etc/chromium/policies/managed
cat > /etc/chromium/policies/managed/raworc.json <<'POLICY'
{
  "BrowserSignin": 0,
  "CommandLineFlagSecurityWarningsEnabled": false,
  "DefaultBrowserSettingEnabled": false,
  "MetricsReportingEnabled": false,
  "PromotionalTabsEnabled": false,
  "SyncDisabled": true
}
POLICY

# A panel with a launcher for the browser, the terminal and the file manager.
mkdir -p /home/computer/.config/openbox /home/computer/.config/tint2
cat > /home/computer/.config/openbox/autostart <<'AUTOSTART'
tint2 &
AUTOSTART
cp /etc/xdg/tint2/tint2rc /home/computer/.config/tint2/tint2rc
sed -i 's|^launcher_item_app = .*||' /home/computer/.config/tint2/tint2rc
cat >> /home/computer/.config/tint2/tint2rc <<'LAUNCHERS'
launcher_item_app = /usr/share/applications/chromium.desktop
launcher_item_app = /usr/share/applications/debian-xterm.desktop
launcher_item_app = /usr/share/applications/pcmanfm.desktop
LAUNCHERS
chown -R computer:computer /home/computer

# Chromium's first run (its profile, databases and caches) once here rather
# than in every new computer; the computers' disks start from this profile.
su computer -s /bin/sh -c 'cd /home/computer && timeout 120 chromium --headless --no-sandbox \
    --disable-gpu --no-first-run --no-default-browser-check --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir=/home/computer/.config/chromium \
    --dump-dom about:blank' >/dev/null 2>&1 || echo "warning: the browser's first run failed" >&2
rm -rf /home/computer/.config/chromium/Singleton* /home/computer/.config/chromium/Crash\ Reports

# Font caches made once here instead of at each computer's first start.
fc-cache -s

# Keep the image small: no package lists or caches.
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
