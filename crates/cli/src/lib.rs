//! The client side of the `raworc` binary: every subcommand except `serve`.
//!
//! The binary flattens [`ClientCommand`] next to its own commands and calls
//! [`run`]. Everything that talks HTTP takes a base URL and everything that
//! touches files takes a path, so tests can drive it without global state.

pub mod api;
pub mod auth;
pub mod config;
pub mod http;
pub mod process;
pub mod service;
pub mod session;

use std::path::PathBuf;

pub use api::ApiArgs;
pub use auth::{AuthArgs, LoginArgs, TokenArgs};
pub use service::{CleanArgs, ResetArgs, StartArgs, StopArgs};
pub use session::{expand_args, SessionArgs};

/// The client subcommands of `raworc`.
#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Log in as an operator and save the token
    Login(LoginArgs),
    /// Save a token you already have, or show who you are logged in as
    Auth(AuthArgs),
    /// Forget the saved token (the server URL is kept)
    Logout,
    /// Mint a token for a principal (admins only); prints the token
    Token(TokenArgs),
    /// Call any REST endpoint, e.g. `raworc api sessions`
    Api(ApiArgs),
    /// Talk to a session's agent: create, restore (-r) or remix (-R) a session, then chat
    Session(Box<SessionArgs>),
    /// Start the Raworc server on this machine in the background
    Start(StartArgs),
    /// Stop the server started by `raworc start`
    Stop(StopArgs),
    /// Stop the server and delete its data (database, keys, logs)
    Clean(CleanArgs),
    /// Stop, clean and forget the saved login: back to a fresh install
    Reset(ResetArgs),
}

/// What the commands need from the environment, gathered once so the rest
/// of the crate can be tested without touching process-global state.
#[derive(Debug, Clone)]
pub struct Context {
    /// Where `config.json` lives (see [`raworc_home`]).
    pub home: PathBuf,
    /// `RAWORC_SERVER`, used when no server is saved.
    pub env_server: Option<String>,
}

impl Context {
    /// Reads `RAWORC_HOME` and `RAWORC_SERVER`.
    pub fn from_env() -> Self {
        Context {
            home: raworc_home(),
            env_server: non_empty_env("RAWORC_SERVER"),
        }
    }

    /// The data dir a server started from this home uses by default.
    pub fn default_data_dir(&self) -> PathBuf {
        self.home.join("data")
    }
}

/// Runs one client command with settings taken from the environment.
pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    run_in(cmd, &Context::from_env()).await
}

/// Runs one client command in an explicit [`Context`].
pub async fn run_in(cmd: ClientCommand, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Login(args) => auth::login(ctx, args).await,
        ClientCommand::Auth(args) => auth::auth(ctx, args).await,
        ClientCommand::Logout => auth::logout(ctx),
        ClientCommand::Token(args) => auth::token(ctx, args).await,
        ClientCommand::Api(args) => api::api(ctx, args).await,
        ClientCommand::Session(args) => session::session(ctx, *args).await,
        ClientCommand::Start(args) => service::start(ctx, args).await,
        ClientCommand::Stop(args) => service::stop(ctx, args).await,
        ClientCommand::Clean(args) => service::clean(ctx, args).await,
        ClientCommand::Reset(args) => service::reset(ctx, args).await,
    }
}

/// Where config lives: $RAWORC_HOME if set, else ~/.raworc
pub fn raworc_home() -> PathBuf {
    if let Some(home) = non_empty_env("RAWORC_HOME") {
        return PathBuf::from(home);
    }
    dirs::home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".raworc")
}

/// Default data dir of the server: <raworc_home>/data
pub fn default_data_dir() -> PathBuf {
    raworc_home().join("data")
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
