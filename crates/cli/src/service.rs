//! `start`, `stop`, `clean` and `reset`: running a server on this machine
//! in the background and removing what it left behind.

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::config::{self, Config};
use crate::{http, process, Context};

/// How long `stop` waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long `start` waits for `/health` (the first start may be slow).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Where `start` listens unless told otherwise.
pub const DEFAULT_BIND: &str = "127.0.0.1:9000";

#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// Stop a running server first
    #[arg(short = 'r', long = "restart")]
    pub restart: bool,
    /// Address to listen on
    #[arg(long = "bind", value_name = "ADDR", default_value = DEFAULT_BIND)]
    pub bind: String,
    /// Data directory (default: <raworc home>/data)
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL (default: SQLite in the data dir)
    #[arg(long = "database-url", value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Do not ask (accepted for compatibility; stop never asks)
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Data directory of the server to stop (default: <raworc home>/data)
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct CleanArgs {
    /// Do not ask for confirmation
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Also remove computer images (they live in the data dir, so this is the default)
    #[arg(short = 'a', long = "all")]
    pub all: bool,
    /// Data directory to remove (default: <raworc home>/data)
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    /// Do not ask for confirmation
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Only stop the server; keep data and login
    #[arg(short = 's', long = "services-only")]
    pub services_only: bool,
    /// Data directory (default: <raworc home>/data)
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The data dir to use, made absolute so pid files and messages are unambiguous.
fn data_dir(ctx: &Context, flag: Option<PathBuf>) -> Result<PathBuf> {
    let dir = flag.unwrap_or_else(|| ctx.default_data_dir());
    std::path::absolute(&dir).with_context(|| format!("invalid data dir {}", dir.display()))
}

/// The URL a client uses for a bind address: `0.0.0.0`/`[::]` become loopback.
pub fn client_url_for_bind(bind: &str) -> String {
    match bind.trim().parse::<std::net::SocketAddr>() {
        Ok(mut addr) => {
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            format!("http://{addr}")
        }
        Err(_) => format!("http://{}", bind.trim()),
    }
}

/// Everything needed to start a server; `exe` is the `raworc` binary.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub exe: PathBuf,
    pub bind: String,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub ready_timeout: Duration,
}

impl StartOptions {
    /// `serve --bind ADDR --data-dir DIR [--database-url URL]`.
    pub fn serve_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "serve".into(),
            "--bind".into(),
            self.bind.clone().into(),
            "--data-dir".into(),
            self.data_dir.clone().into_os_string(),
        ];
        if let Some(url) = &self.database_url {
            args.push("--database-url".into());
            args.push(url.into());
        }
        args
    }
}

/// A server that answers `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub pid: u32,
    pub url: String,
    pub log: PathBuf,
}

/// Spawns the server detached and waits until `/health` answers 200.
pub async fn start_server(opts: &StartOptions) -> Result<Started> {
    config::create_private_dir(&opts.data_dir)?;
    let url = client_url_for_bind(&opts.bind);
    let http = http::client()?;
    if http::is_healthy(&http, &url).await {
        anyhow::bail!(
            "a server already answers at {url} but was not started from {}; stop it or use --bind",
            opts.data_dir.display()
        );
    }
    let log_path = process::log_path(&opts.data_dir);
    let log = process::open_log(&log_path)?;
    let mut child = process::spawn_detached(&opts.exe, &opts.serve_args(), &log)?;
    let pid = child.id();
    process::write_pid(&opts.data_dir, pid)?;

    let started = Instant::now();
    loop {
        if let Some(status) = child
            .try_wait()
            .context("cannot watch the server process")?
        {
            process::remove_pid(&opts.data_dir)?;
            let tail = process::tail(&log_path, 20);
            if !tail.is_empty() {
                eprintln!("{tail}");
            }
            anyhow::bail!(
                "the server exited during startup ({status}); see {}",
                log_path.display()
            );
        }
        if http::is_healthy(&http, &url).await {
            return Ok(Started {
                pid,
                url,
                log: log_path,
            });
        }
        if started.elapsed() >= opts.ready_timeout {
            anyhow::bail!(
                "the server (pid {pid}) still does not answer at {url}/health after {} s; \
                 see {} or run 'raworc stop'",
                opts.ready_timeout.as_secs(),
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Stops the server of `data_dir`: `Some((pid, killed))`, or `None` if none ran.
pub async fn stop_server(data_dir: &Path) -> Result<Option<(i32, bool)>> {
    let Some(pid) = process::running_pid(data_dir)? else {
        return Ok(None);
    };
    let killed = process::terminate(pid, STOP_GRACE).await?;
    process::remove_pid(data_dir)?;
    Ok(Some((pid, killed)))
}

/// Stops and says so.
async fn stop_and_report(data_dir: &Path) -> Result<()> {
    match stop_server(data_dir).await? {
        Some((pid, false)) => println!("Stopped Raworc (pid {pid})."),
        Some((pid, true)) => println!(
            "Stopped Raworc (pid {pid}) with SIGKILL: it ignored SIGTERM for {} s.",
            STOP_GRACE.as_secs()
        ),
        None => println!(
            "Raworc is not running (no server started from {}).",
            data_dir.display()
        ),
    }
    Ok(())
}

/// `raworc start`.
pub async fn start(ctx: &Context, args: StartArgs) -> Result<()> {
    let data_dir = data_dir(ctx, args.data_dir)?;
    let url = client_url_for_bind(&args.bind);
    if let Some(pid) = process::running_pid(&data_dir)? {
        if !args.restart {
            println!("Raworc is already running (pid {pid}) at {url}");
            println!("Logs: {}", process::log_path(&data_dir).display());
            println!("Use 'raworc start -r' to restart it.");
            return Ok(());
        }
        stop_and_report(&data_dir).await?;
    }
    let exe = std::env::current_exe().context("cannot find the raworc executable")?;
    let opts = StartOptions {
        exe,
        bind: args.bind,
        data_dir,
        database_url: args.database_url,
        ready_timeout: READY_TIMEOUT,
    };
    let started = start_server(&opts).await?;

    let mut cfg = Config::load(&ctx.home)?;
    if cfg.server.is_none() {
        cfg.server = Some(started.url.clone());
        cfg.save(&ctx.home)?;
    }
    let saved = config::resolve_server(None, cfg.server.as_deref(), ctx.env_server.as_deref())?;
    let server_flag = if saved == started.url {
        String::new()
    } else {
        format!(" -s {}", started.url)
    };

    println!("Raworc is running at {} (pid {})", started.url, started.pid);
    println!("Logs: {}", started.log.display());
    if std::env::var_os("RAWORC_ADMIN_PASSWORD").is_some_and(|v| !v.is_empty()) {
        println!("Log in as admin with the password from RAWORC_ADMIN_PASSWORD:");
        println!("  raworc login -u admin -p \"$RAWORC_ADMIN_PASSWORD\"{server_flag}");
    } else {
        println!("First-start credentials: user: admin  password: admin");
        println!("  raworc login -u admin -p admin{server_flag}");
    }
    Ok(())
}

/// `raworc stop`.
pub async fn stop(ctx: &Context, args: StopArgs) -> Result<()> {
    let data_dir = data_dir(ctx, args.data_dir)?;
    stop_and_report(&data_dir).await
}

/// Why deleting `dir` would be a disaster, if it would. `dir` should be
/// canonical; `home` is the user's home dir.
pub fn deletion_refusal(dir: &Path, home: Option<&Path>) -> Option<String> {
    if dir.parent().is_none() {
        return Some(format!(
            "refusing to delete {}: it is the filesystem root",
            dir.display()
        ));
    }
    if let Some(home) = home {
        let home = home.canonicalize().unwrap_or_else(|_| home.to_path_buf());
        if home.starts_with(dir) {
            return Some(format!(
                "refusing to delete {}: it is your home directory or contains it",
                dir.display()
            ));
        }
    }
    None
}

/// Asks `question [y/N]` on the terminal; without one, refuses.
fn confirm(question: &str) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!("not asking without a terminal: pass -y to confirm");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// The canonical data dir if it exists, after the safety checks.
fn deletable(dir: &Path) -> Result<Option<PathBuf>> {
    if !dir.exists() {
        return Ok(None);
    }
    let canonical = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    if let Some(why) = deletion_refusal(&canonical, dirs::home_dir().as_deref()) {
        anyhow::bail!(why);
    }
    if !canonical.is_dir() {
        anyhow::bail!(
            "refusing to delete {}: not a directory",
            canonical.display()
        );
    }
    Ok(Some(canonical))
}

/// Stops the server, then deletes the (already checked) data dir.
async fn remove_data(dir: &Path) -> Result<()> {
    if let Some((pid, _)) = stop_server(dir).await? {
        println!("Stopped Raworc (pid {pid}).");
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    println!("Removed {}", dir.display());
    Ok(())
}

/// `raworc clean`.
pub async fn clean(ctx: &Context, args: CleanArgs) -> Result<()> {
    let data_dir = data_dir(ctx, args.data_dir)?;
    let Some(dir) = deletable(&data_dir)? else {
        println!("Nothing to clean: {} does not exist.", data_dir.display());
        return Ok(());
    };
    if !args.yes && !confirm(&format!("Remove all Raworc data in {}?", dir.display()))? {
        println!("Nothing removed.");
        return Ok(());
    }
    remove_data(&dir).await
}

/// `raworc reset`.
pub async fn reset(ctx: &Context, args: ResetArgs) -> Result<()> {
    let data_dir = data_dir(ctx, args.data_dir)?;
    if args.services_only {
        return stop_and_report(&data_dir).await;
    }
    let dir = deletable(&data_dir)?;
    let config_file = config::config_path(&ctx.home);
    if !args.yes
        && !confirm(&format!(
            "Stop Raworc, remove all its data in {} and the saved login in {}?",
            data_dir.display(),
            config_file.display()
        ))?
    {
        println!("Nothing removed.");
        return Ok(());
    }
    match dir {
        Some(dir) => remove_data(&dir).await?,
        None => stop_and_report(&data_dir).await?,
    }
    if config::remove(&ctx.home)? {
        println!("Removed {}", config_file.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_become_client_urls() {
        assert_eq!(
            client_url_for_bind("127.0.0.1:9000"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(client_url_for_bind("0.0.0.0:9000"), "http://127.0.0.1:9000");
        assert_eq!(client_url_for_bind("[::]:9000"), "http://[::1]:9000");
        assert_eq!(
            client_url_for_bind("localhost:9100"),
            "http://localhost:9100"
        );
    }

    #[test]
    fn serve_args_match_the_binary() {
        let mut opts = StartOptions {
            exe: "raworc".into(),
            bind: "127.0.0.1:9000".into(),
            data_dir: "/d".into(),
            database_url: None,
            ready_timeout: READY_TIMEOUT,
        };
        let args = |o: &StartOptions| -> Vec<String> {
            o.serve_args()
                .into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            args(&opts),
            ["serve", "--bind", "127.0.0.1:9000", "--data-dir", "/d"]
        );
        opts.database_url = Some("postgres://x".into());
        assert_eq!(args(&opts)[5..], ["--database-url", "postgres://x"]);
    }

    #[test]
    fn never_deletes_root_or_home() {
        let home = Path::new("/home/alice");
        assert!(deletion_refusal(Path::new("/"), Some(home)).is_some());
        assert!(deletion_refusal(home, Some(home)).is_some());
        assert!(deletion_refusal(Path::new("/home"), Some(home)).is_some());
        assert!(deletion_refusal(Path::new("/home/alice/.raworc/data"), Some(home)).is_none());
        assert!(deletion_refusal(Path::new("/var/lib/raworc"), None).is_none());
    }

    #[tokio::test]
    async fn clean_removes_only_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context {
            home: dir.path().join("home"),
            env_server: None,
        };
        let data = ctx.default_data_dir();
        std::fs::create_dir_all(data.join("images")).unwrap();
        std::fs::write(data.join("raworc.db"), "x").unwrap();
        Config::default().save(&ctx.home).unwrap();
        clean(
            &ctx,
            CleanArgs {
                yes: true,
                all: false,
                data_dir: None,
            },
        )
        .await
        .unwrap();
        assert!(!data.exists());
        assert!(config::config_path(&ctx.home).exists());
        // Cleaning again is fine.
        clean(
            &ctx,
            CleanArgs {
                yes: true,
                all: true,
                data_dir: None,
            },
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn reset_removes_data_and_login() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context {
            home: dir.path().join("home"),
            env_server: None,
        };
        std::fs::create_dir_all(ctx.default_data_dir()).unwrap();
        Config::default().save(&ctx.home).unwrap();
        reset(
            &ctx,
            ResetArgs {
                yes: true,
                services_only: false,
                data_dir: None,
            },
        )
        .await
        .unwrap();
        assert!(!ctx.default_data_dir().exists());
        assert!(!config::config_path(&ctx.home).exists());
    }

    #[tokio::test]
    async fn stop_without_a_server_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stop_server(dir.path()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_child_that_dies_at_startup_fails_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        // `/bin/false serve ...` exits at once with status 1.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = StartOptions {
            exe: "/bin/false".into(),
            bind: format!("127.0.0.1:{port}"),
            data_dir: dir.path().join("data"),
            database_url: None,
            ready_timeout: Duration::from_secs(10),
        };
        let err = start_server(&opts).await.unwrap_err().to_string();
        assert!(err.contains("exited during startup"), "{err}");
        assert!(!process::pid_path(&opts.data_dir).exists());
    }
}
