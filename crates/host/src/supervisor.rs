//! The supervisor's life: read the start configuration, serve the socket,
//! bring the desktop up, and stop it gracefully when asked.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::{TcpStream, UnixListener};
use tokio::sync::{watch, Mutex, Notify};

use crate::bash::Bash;
use crate::computer::Computer;
use crate::desktop::{self, Desktop, DISPLAY, VNC_PORT};
use crate::editor::Editor;
use crate::exec::Environment;
use crate::painted;
use crate::proto::{DesktopReady, HostConfig, Ready, SessionConfig, CONFIG, SOCKET, VNC_SOCKET};
use crate::screen::Screen;
use crate::server::{self, HostState, Painted, Readiness};

/// How long bring-up waits for the desktop to paint after the browser's
/// window is mapped; past it the computer is ready anyway (and says why in
/// its log).
const PAINT_BOUND: Duration = Duration::from_secs(10);
/// How long the panel's start waits for the window manager.
const WM_BOUND: Duration = Duration::from_secs(2);

/// Runs the supervisor with its files in `run_dir` (the bound run
/// directory). Starts its own async runtime: call it from a plain `main`.
pub fn run(run_dir: PathBuf) -> anyhow::Result<()> {
    crate::init::split_off_reaper().context("forking the reaper")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(supervise(run_dir))
}

fn read_config(run_dir: &Path) -> anyhow::Result<HostConfig> {
    let path = run_dir.join(CONFIG);
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

fn listen(run_dir: &Path, name: &str) -> anyhow::Result<UnixListener> {
    let path = run_dir.join(name);
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("protecting {}", path.display()))?;
    Ok(listener)
}

async fn supervise(run_dir: PathBuf) -> anyhow::Result<()> {
    let config = read_config(&run_dir)?;
    let env = Environment::base(DISPLAY);
    let listener = listen(&run_dir, SOCKET)?;
    let vnc = listen(&run_dir, VNC_SOCKET)?;

    let (ready_tx, ready_rx) = watch::channel::<Readiness>(None);
    let (painted_tx, painted_rx) = watch::channel(None);
    let (session_tx, session_rx) = watch::channel(None);
    let shutdown = Arc::new(Notify::new());
    let state = Arc::new(HostState {
        env: env.clone(),
        session_env: OnceLock::new(),
        session: session_tx,
        ready: ready_rx,
        painted: painted_rx,
        computer: OnceLock::new(),
        bash: Bash::new("/session"),
        editor: Editor::new(),
        shutdown: shutdown.clone(),
    });
    let desktop: Arc<Mutex<Option<Desktop>>> = Arc::default();
    tokio::spawn(relay_vnc(vnc, desktop.clone(), env.clone()));

    let bring_up = {
        let state = state.clone();
        let desktop = desktop.clone();
        tokio::spawn(async move {
            let outcome = bring_up(&config, &env, &state, &desktop, painted_tx, session_rx).await;
            if let Err(reason) = &outcome {
                tracing::error!(%reason, "the computer did not come up");
            }
            let _ = ready_tx.send(Some(outcome));
        })
    };

    let app = server::router(state.clone());
    let stop = shutdown.clone();
    let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
        stop.notified().await;
    });
    let display_died = async {
        // Without its display the computer is of no use: end it.
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut guard = desktop.lock().await;
            if let Some(d) = guard.as_mut() {
                if let Ok(Some(status)) = d.display.try_wait() {
                    return status;
                }
            }
        }
    };
    tokio::select! {
        served = serving => served.context("serving the host socket")?,
        status = display_died => anyhow::bail!("the display exited ({status})"),
    }
    bring_up.abort();
    if let Some(mut d) = desktop.lock().await.take() {
        d.stop().await;
    }
    Ok(())
}

/// Milliseconds since `began`, for the log's milestones.
fn ms(began: Instant) -> u64 {
    began.elapsed().as_millis() as u64
}

/// Everything before the computer counts as running: the desktop painted
/// (reported on its own, for computers that wait in a pool), and the
/// session's files written and its setup run once the session is known.
async fn bring_up(
    config: &HostConfig,
    env: &Environment,
    state: &HostState,
    desktop: &Mutex<Option<Desktop>>,
    painted_tx: watch::Sender<Painted>,
    mut session_rx: watch::Receiver<Option<SessionConfig>>,
) -> Result<Ready, String> {
    let began = Instant::now();
    let mut started = Desktop::start_display(env, config.display)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(ms = ms(began), "display up");
    let screen = Screen::connect(DISPLAY).map_err(|e| e.to_string())?;
    let size = screen.size();
    let computer = Computer::new(screen);
    let _ = state.computer.set(computer.clone());
    // The window manager and the browser at once (the browser is the
    // longest step); the panel once the window manager has set up the
    // screen: started before that, it waits a whole second (measured).
    let wm = started.start_window_manager(env);
    let browser = started.start_browser(env, config);
    *desktop.lock().await = Some(started);
    wm.map_err(|e| e.to_string())?;
    browser.map_err(|e| e.to_string())?;

    // The panel and the paint, while the session (files, setup) goes ahead.
    let painted = async {
        if desktop::await_window_manager(WM_BOUND).await {
            tracing::info!(ms = ms(began), "window manager up");
        } else {
            tracing::warn!(
                ms = ms(began),
                "no window manager yet; starting the panel anyway"
            );
        }
        if let Some(d) = desktop.lock().await.as_mut() {
            d.start_panel(env).map_err(|e| e.to_string())?;
        }
        desktop::await_browser_window()
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(ms = ms(began), "browser window mapped");
        match painted::await_painted(DISPLAY, &computer, PAINT_BOUND).await {
            painted::Outcome::Painted => tracing::info!(ms = ms(began), "desktop painted"),
            painted::Outcome::GaveUp(missing) => tracing::warn!(
                ms = ms(began),
                waited_for = %missing,
                "gave up waiting for a painted desktop; ready without it"
            ),
        }
        let ready = DesktopReady {
            display: size,
            painted_ms: ms(began),
        };
        let _ = painted_tx.send(Some(Ok(ready.clone())));
        Ok::<_, String>(ready)
    };
    let session = async {
        let session = session_rx
            .wait_for(|s| s.is_some())
            .await
            .map_err(|_| "the host is shutting down".to_owned())?
            .clone()
            .unwrap_or_default();
        tracing::info!(ms = ms(began), "session received");
        desktop::write_session_files(&session)
            .await
            .map_err(|e| e.to_string())?;
        let env = env.clone().with(session.secrets.clone());
        let _ = state.session_env.set(env.clone());
        let setup = match &session.setup {
            Some(_) => {
                let timeout = Duration::from_secs(session.setup_timeout_s);
                let result = desktop::run_setup(&env, timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(ms = ms(began), exit_code = result.exit_code, "setup done");
                Some(result)
            }
            None => None,
        };
        Ok::<_, String>(setup)
    };
    let (painted, setup) = tokio::join!(painted, session);
    if let Err(reason) = &painted {
        let _ = painted_tx.send(Some(Err(reason.clone())));
    }
    let setup = setup?;
    painted?;
    if let Some(result) = &setup {
        if result.exit_code != 0 {
            return Err(format!(
                "setup.sh exited with {}: {}",
                result.exit_code,
                result.output_tail.trim_end()
            ));
        }
    }
    tracing::info!(ms = ms(began), "ready");
    Ok(Ready {
        display: size,
        setup,
    })
}

/// How long a first look at the desktop waits for the VNC server to listen.
const VNC_START: Duration = Duration::from_secs(10);

/// Each connection to the VNC socket is relayed to the VNC server, which
/// listens on loopback inside the computer and is started by the first
/// connection.
async fn relay_vnc(listener: UnixListener, desktop: Arc<Mutex<Option<Desktop>>>, env: Environment) {
    loop {
        let Ok((mut outside, _)) = listener.accept().await else {
            continue;
        };
        let started = match desktop.lock().await.as_mut() {
            Some(d) => d.ensure_vnc(&env).map_err(|e| e.to_string()),
            None => Err("the display is not up yet".to_owned()),
        };
        if let Err(e) = &started {
            tracing::warn!(error = %e, "cannot start the VNC server");
            continue;
        }
        tokio::spawn(async move {
            let deadline = Instant::now() + VNC_START;
            let inside = loop {
                match TcpStream::connect(("127.0.0.1", VNC_PORT)).await {
                    Ok(inside) => break Some(inside),
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(10)).await
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the VNC server is not reachable");
                        break None;
                    }
                }
            };
            if let Some(mut inside) = inside {
                let _ = tokio::io::copy_bidirectional(&mut outside, &mut inside).await;
            }
        });
    }
}
