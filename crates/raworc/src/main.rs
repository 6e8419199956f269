//! `raworc`: the server (`raworc serve`) and the CLI, in one binary.

mod image;

use clap::{Parser, Subcommand};
use raworc_server::ServerConfig;

/// The server allocates many small, short-lived buffers per request; mimalloc
/// serves them with less locking and less fragmentation than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "raworc", version, about = "Remote Agentic Work Orchestrator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the control plane in the foreground
    Serve(Box<ServerConfig>),
    /// Manage the computer image
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Supervise a computer from inside it (started by the runtime)
    Host {
        /// The run directory bound into the computer
        #[arg(long, default_value = raworc_host::proto::RUN_DIR)]
        run_dir: std::path::PathBuf,
    },
    #[command(flatten)]
    Client(raworc_cli::ClientCommand),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn main() {
    // `raworc session` has two-letter short flags (`-if`, `-sf`) that clap
    // cannot parse as such; they are spelled out before it parses.
    let cli = Cli::parse_from(raworc_cli::expand_args(std::env::args_os()));
    // The host forks (as PID 1 of its computer) before any thread starts,
    // so it builds its own runtime.
    let cli = match cli.command {
        Command::Host { run_dir } => {
            init_tracing();
            if let Err(e) = raworc_host::run(run_dir) {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
            return;
        }
        command => Cli { command },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(config) => {
                init_tracing();
                raworc_server::serve(*config).await
            }
            Command::Image(cmd) => tokio::task::spawn_blocking(move || image::run(cmd))
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r),
            Command::Client(raworc_cli::ClientCommand::Start(args)) => {
                let data_dir = args.data_dir.clone();
                tokio::task::spawn_blocking(move || image::ensure_for_start(data_dir.as_deref()))
                    .await??;
                raworc_cli::run(raworc_cli::ClientCommand::Start(args)).await
            }
            Command::Client(cmd) => raworc_cli::run(cmd).await,
            // Handled above, before the runtime started.
            Command::Host { .. } => Ok(()),
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
