//! Bringing the computer up: the session's files, the display, the window
//! manager and panel, the browser, the VNC server, and the setup script.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::process::Child;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt as _};
use x11rb::rust_connection::RustConnection;

use crate::exec::Environment;
use crate::proto::{DisplaySize, HostConfig, SessionConfig, SetupResult};

/// The display number inside every computer.
pub const DISPLAY: &str = ":1";
/// Where x11vnc listens inside the computer (its own network namespace).
pub const VNC_PORT: u16 = 5900;
const SECRETS_DIR: &str = "/session/secrets";
const CODE_DIR: &str = "/session/code";
/// How much of setup's output the control plane is told.
const SETUP_TAIL: usize = 4096;
const DISPLAY_TIMEOUT: Duration = Duration::from_secs(10);
const BROWSER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DesktopError {
    let what = what.into();
    move |source| DesktopError::Io { what, source }
}

/// Secret names become file names and variable names: letters, digits and `_`.
fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `path` is on a tmpfs (memory only).
fn on_tmpfs(path: &str) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(false)
}

/// Writes instructions, setup.sh and the secrets (0600) into `/session`.
/// Secrets go only to a tmpfs: a computer whose `/session/secrets` is on
/// its disk fails to start rather than keep them there.
pub async fn write_session_files(config: &SessionConfig) -> Result<(), DesktopError> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::create_dir_all(CODE_DIR)
        .await
        .map_err(io("creating /session/code"))?;
    if let Some(text) = &config.instructions {
        tokio::fs::write(format!("{CODE_DIR}/instructions.md"), text)
            .await
            .map_err(io("writing instructions.md"))?;
    }
    if let Some(script) = &config.setup {
        tokio::fs::write(format!("{CODE_DIR}/setup.sh"), script)
            .await
            .map_err(io("writing setup.sh"))?;
    }
    if config.secrets.is_empty() {
        return Ok(());
    }
    if !on_tmpfs(SECRETS_DIR) {
        return Err(DesktopError::Failed(format!(
            "{SECRETS_DIR} is not a tmpfs; the secrets would reach the disk"
        )));
    }
    tokio::fs::set_permissions(SECRETS_DIR, std::fs::Permissions::from_mode(0o700))
        .await
        .map_err(io("protecting /session/secrets"))?;
    for (name, value) in &config.secrets {
        if !valid_secret_name(name) {
            return Err(DesktopError::Failed(format!(
                "secret name {name:?} is not a valid variable name"
            )));
        }
        let path = format!("{SECRETS_DIR}/{name}");
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .await
            .map_err(io(format!("writing secret {name}")))?;
        file.write_all(value.as_bytes())
            .await
            .map_err(io(format!("writing secret {name}")))?;
        // An existing file keeps its old mode on open; make sure of 0600.
        tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .await
            .map_err(io(format!("protecting secret {name}")))?;
    }
    Ok(())
}

/// The processes of the desktop, stopped in reverse order of start.
pub struct Desktop {
    pub display: Child,
    others: Vec<(&'static str, Child)>,
    vnc: Option<Child>,
}

fn spawn(
    env: &Environment,
    name: &'static str,
    program: &str,
    args: &[&str],
) -> Result<Child, DesktopError> {
    env.command(program)
        .args(args)
        .current_dir("/home/computer")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io(format!("starting {name}")))
}

/// Waits until the X server accepts connections.
async fn await_display() -> Result<RustConnection, DesktopError> {
    let deadline = Instant::now() + DISPLAY_TIMEOUT;
    loop {
        match RustConnection::connect(Some(DISPLAY)) {
            Ok((conn, _)) => return Ok(conn),
            Err(e) if Instant::now() > deadline => {
                return Err(DesktopError::Failed(format!(
                    "the display did not start within {DISPLAY_TIMEOUT:?}: {e}"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

impl Desktop {
    /// Starts the display and waits until it accepts connections.
    pub async fn start_display(
        env: &Environment,
        size: DisplaySize,
    ) -> Result<Desktop, DesktopError> {
        tokio::fs::create_dir_all("/tmp/runtime-computer")
            .await
            .map_err(io("creating the runtime dir"))?;
        // A display that ended with the last start left its lock and
        // socket on the kept disk; Xvfb would take them for a live server.
        let number = DISPLAY.trim_start_matches(':');
        for stale in [
            format!("/tmp/.X{number}-lock"),
            format!("/tmp/.X11-unix/X{number}"),
        ] {
            match tokio::fs::remove_file(&stale).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("removing {stale}"))(e)),
            }
        }
        let screen = format!("{}x{}x24", size.width, size.height);
        let display = spawn(
            env,
            "the display",
            "/usr/bin/Xvfb",
            &[
                DISPLAY,
                "-screen",
                "0",
                &screen,
                "-nolisten",
                "tcp",
                "-dpi",
                "96",
                // Without it the server resets whenever its last client
                // leaves, dropping connections made in that moment.
                "-noreset",
            ],
        )?;
        await_display().await?;
        Ok(Desktop {
            display,
            others: Vec::new(),
            vnc: None,
        })
    }

    /// Starts the VNC server unless it runs: on the first look at the
    /// desktop, not at every start (a computer nobody watches needs none).
    pub fn ensure_vnc(&mut self, env: &Environment) -> Result<(), DesktopError> {
        if let Some(vnc) = self.vnc.as_mut() {
            if matches!(vnc.try_wait(), Ok(None)) {
                return Ok(());
            }
        }
        let port = VNC_PORT.to_string();
        let vnc = spawn(
            env,
            "x11vnc",
            "/usr/bin/x11vnc",
            &[
                "-display",
                DISPLAY,
                "-forever",
                "-shared",
                "-localhost",
                "-rfbport",
                &port,
                "-nopw",
                "-quiet",
                "-noxdamage",
            ],
        )?;
        self.vnc = Some(vnc);
        Ok(())
    }

    /// Starts the window manager.
    pub fn start_window_manager(&mut self, env: &Environment) -> Result<(), DesktopError> {
        self.others
            .push(("openbox", spawn(env, "openbox", "/usr/bin/openbox", &[])?));
        Ok(())
    }

    /// Starts the panel.
    pub fn start_panel(&mut self, env: &Environment) -> Result<(), DesktopError> {
        self.others
            .push(("tint2", spawn(env, "tint2", "/usr/bin/tint2", &[])?));
        Ok(())
    }

    /// Starts the browser, maximised on an empty page.
    pub fn start_browser(
        &mut self,
        env: &Environment,
        config: &HostConfig,
    ) -> Result<(), DesktopError> {
        let size = config.display;
        let window = format!("--window-size={},{}", size.width, size.height);
        forget_browser_locks();
        let mut args = vec![
            "--start-maximized",
            "--window-position=0,0",
            &window,
            "--hide-crash-restore-bubble",
            "--disable-session-crashed-bubble",
            // No GPU behind Xvfb: without this Chromium first tries one.
            "--disable-gpu",
            // Nothing a fresh desktop needs, all of it start-up time
            // (and, without egress, connections that only time out).
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ];
        // Chromium's own sandbox is made of user namespaces; where the
        // computer refuses them, the computer's sandbox is the browser's
        // (the image's policy turns off the warning about the flag).
        if !config.browser_sandbox {
            args.push("--no-sandbox");
        }
        args.push("about:blank");
        self.others.push((
            "chromium",
            spawn(env, "chromium", "/usr/bin/chromium", &args)?,
        ));
        Ok(())
    }

    /// Closes the browser gracefully (its profile is saved, no "restore
    /// pages" next time), then stops the rest.
    pub async fn stop(&mut self) {
        let mut vnc = self.vnc.take().map(|child| ("x11vnc", child));
        for (name, child) in self.others.iter_mut().chain(vnc.as_mut()).rev() {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let grace = if *name == "chromium" { 10 } else { 2 };
            if tokio::time::timeout(Duration::from_secs(grace), child.wait())
                .await
                .is_err()
            {
                tracing::warn!(program = name, "did not stop in time; killing it");
                let _ = child.kill().await;
            }
        }
        let _ = self.display.kill().await;
    }
}

/// Root properties a window manager sets once it has taken the screen;
/// the panel reads them as it starts (started before they are there, it
/// waits a whole second: measured).
const WM_PROPERTIES: [&[u8]; 3] = [
    b"_NET_SUPPORTING_WM_CHECK",
    b"_NET_NUMBER_OF_DESKTOPS",
    b"_NET_CURRENT_DESKTOP",
];

/// Waits until a window manager has taken the screen and published its
/// desktops, or `bound` passes; true when it has.
pub async fn await_window_manager(bound: Duration) -> bool {
    let Ok((conn, screen)) = RustConnection::connect(Some(DISPLAY)) else {
        return false;
    };
    let root = conn.setup().roots[screen].root;
    let mut atoms = Vec::new();
    for name in WM_PROPERTIES {
        match conn.intern_atom(false, name).map(|c| c.reply()) {
            Ok(Ok(reply)) => atoms.push(reply.atom),
            _ => return false,
        }
    }
    let deadline = Instant::now() + bound;
    loop {
        let set = atoms.iter().all(|atom| {
            conn.get_property(false, root, *atom, AtomEnum::ANY, 0, 1)
                .ok()
                .and_then(|c| c.reply().ok())
                .is_some_and(|r| !r.value.is_empty())
        });
        if set {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until a browser window is on screen.
pub async fn await_browser_window() -> Result<(), DesktopError> {
    let (conn, screen) = RustConnection::connect(Some(DISPLAY))
        .map_err(|e| DesktopError::Failed(format!("cannot connect to the display: {e}")))?;
    let root = conn.setup().roots[screen].root;
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    loop {
        if crate::painted::find_windows(&conn, root).is_ok_and(|w| w.browser.is_some()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(DesktopError::Failed(format!(
                "the browser did not open a window within {BROWSER_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `/session/code/setup.sh`, keeping its output in `setup.log`.
pub async fn run_setup(env: &Environment, timeout: Duration) -> Result<SetupResult, DesktopError> {
    let script = Path::new(CODE_DIR).join("setup.sh");
    let log_path = Path::new(CODE_DIR).join("setup.log");
    let log = std::fs::File::create(&log_path).map_err(io("creating setup.log"))?;
    let log_err = log.try_clone().map_err(io("creating setup.log"))?;
    let mut child = env
        .command("/bin/bash")
        .arg(&script)
        .current_dir(CODE_DIR)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(io("starting setup.sh"))?;
    let (exit_code, _) = crate::exec::wait_bounded(&mut child, timeout)
        .await
        .map_err(io("waiting for setup.sh"))?;
    let output = tokio::fs::read(&log_path).await.unwrap_or_default();
    let start = output.len().saturating_sub(SETUP_TAIL);
    Ok(SetupResult {
        exit_code,
        output_tail: String::from_utf8_lossy(&output[start..]).into_owned(),
    })
}

/// Chromium refuses a profile whose lock names another host: a remixed
/// computer (another host name) inherits its parent's lock, and one that
/// was killed keeps its own. This computer runs the only browser of its
/// profile, so the locks can go.
fn forget_browser_locks() {
    let profile = std::path::Path::new("/home/computer/.config/chromium");
    for lock in ["SingletonLock", "SingletonSocket", "SingletonCookie"] {
        let _ = std::fs::remove_file(profile.join(lock));
    }
}
