//! `raworc serve` settings: flags with environment equivalents.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Where Raworc keeps its files by default: `$RAWORC_HOME` (when not empty),
/// else `~/.raworc` — the same rule as the CLI's, so `raworc start` and
/// `raworc serve` agree on the data dir.
pub fn raworc_home() -> PathBuf {
    if let Some(h) = std::env::var_os("RAWORC_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".raworc")
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = "RAWORC_BIND", default_value = "127.0.0.1:9000")]
    pub bind: SocketAddr,
    /// Directory for the database, keys and logs [default: ~/.raworc/data].
    #[arg(long, env = "RAWORC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// sqlite://…, postgres://… or mysql://… [default: SQLite in the data dir].
    #[arg(long, env = "RAWORC_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "RAWORC_BODY_LIMIT", default_value_t = 10 * 1024 * 1024)]
    pub body_limit: usize,
    /// Lifetime of login tokens, in seconds.
    #[arg(long, env = "RAWORC_TOKEN_TTL", default_value_t = 24 * 3600)]
    pub token_ttl_s: u64,
    /// Password of the `admin` operator created on first start.
    #[arg(long, env = "RAWORC_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Base64 of the 32-byte key that encrypts secrets [default: key file in the data dir].
    #[arg(long, env = "RAWORC_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Login attempts allowed per operator name per minute.
    #[arg(long, env = "RAWORC_LOGIN_LIMIT_PER_NAME", default_value_t = 10)]
    pub login_limit_per_name: u32,
    /// Login attempts allowed per client address per minute.
    #[arg(long, env = "RAWORC_LOGIN_LIMIT_PER_ADDR", default_value_t = 60)]
    pub login_limit_per_addr: u32,
    /// Where computers run: `local` (namespaces on this machine; needs root)
    /// or `none` (sessions are kept but get no computer).
    #[arg(long, env = "RAWORC_RUNTIME", value_enum, default_value_t = RuntimeKind::Local)]
    pub runtime: RuntimeKind,
    /// Where computer images live [default: <data-dir>/images].
    #[arg(long, env = "RAWORC_IMAGES_DIR")]
    pub images_dir: Option<PathBuf>,
    /// Computers that may run at once; creating more answers 429.
    #[arg(long, env = "RAWORC_MAX_SESSIONS", default_value_t = 64)]
    pub max_sessions: usize,
    /// Memory (MiB) of each computer, swap included.
    #[arg(long, env = "RAWORC_COMPUTER_MEMORY_MB", default_value_t = 2048)]
    pub computer_memory_mb: u64,
    /// Processes and threads of each computer.
    #[arg(long, env = "RAWORC_COMPUTER_PIDS", default_value_t = 2048)]
    pub computer_pids: u64,
    /// CPU of each computer, in thousandths of a core.
    #[arg(long, env = "RAWORC_COMPUTER_MILLICORES", default_value_t = 1000)]
    pub computer_millicores: u64,
    /// Keep computers' disks on a btrfs file system in a sparse file of this
    /// many GiB (`<data-dir>/disks.btrfs`, mounted at `<data-dir>/computers`),
    /// so that remixing a running session snapshots its disk instead of
    /// copying it. 0, or a machine where it cannot be set up, keeps disks as
    /// plain directories in the data dir.
    #[arg(long, env = "RAWORC_DISK_IMAGE_SIZE", default_value_t = 64)]
    pub disk_image_size: u64,
    /// Screen size of each computer, `WIDTHxHEIGHT`.
    #[arg(long, env = "RAWORC_DISPLAY_SIZE", default_value = "1024x768", value_parser = parse_display)]
    pub display_size: (u16, u16),
    /// Pause a running session unused for this many seconds (0: never).
    #[arg(long, env = "RAWORC_IDLE_PAUSE_S", default_value_t = 0)]
    pub idle_pause_s: u64,
    /// Close a running or paused session unused for this many seconds (0: never).
    #[arg(long, env = "RAWORC_IDLE_CLOSE_S", default_value_t = 0)]
    pub idle_close_s: u64,
    /// Let processes in computers make user namespaces. Off by default: in a
    /// new user namespace an unprivileged process reaches much more of the
    /// kernel. With it on, the browser also builds its own sandbox.
    #[arg(long, env = "RAWORC_ALLOW_USER_NAMESPACES")]
    pub allow_user_namespaces: bool,
    /// Computers kept started, painted and frozen, so that a create claims
    /// one instead of waiting for a start (0: no pool). Local runtime only.
    #[arg(long, env = "RAWORC_WARM_POOL", default_value_t = 2)]
    pub warm_pool: usize,
    /// How often the operator looks at every session, in milliseconds.
    #[arg(
        long,
        env = "RAWORC_OPERATOR_RESYNC_MS",
        default_value_t = 10_000,
        hide = true
    )]
    pub operator_resync_ms: u64,
    /// The raworc binary bound into computers [default: this one].
    #[arg(long, env = "RAWORC_HOST_BINARY", hide = true)]
    pub host_binary: Option<PathBuf>,
    /// The agent's model provider [default: anthropic when a key is
    /// configured, else mock: no model, simple requests done on the computer].
    #[arg(long, env = "RAWORC_LLM", value_enum)]
    pub llm: Option<LlmKind>,
    /// The model the agent asks.
    #[arg(long, env = "RAWORC_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Base URL of the Anthropic API (a proxy or a test server may stand in).
    #[arg(long, env = "ANTHROPIC_BASE_URL", default_value = raworc_agent::provider::anthropic::DEFAULT_BASE_URL)]
    pub anthropic_base_url: String,
    /// The Anthropic API key (it stays in the control plane; computers never see it).
    #[arg(long, env = "ANTHROPIC_API_KEY", hide_env_values = true, value_parser = ApiKey::parse)]
    pub anthropic_api_key: Option<ApiKey>,
    /// A file holding the Anthropic API key (instead of the variable).
    #[arg(long, env = "RAWORC_ANTHROPIC_KEY_FILE")]
    pub anthropic_key_file: Option<PathBuf>,
    /// Base URL of an OpenAI-compatible API (`--llm openai`: OpenAI, vLLM, Ollama, llama.cpp).
    #[arg(long, env = "OPENAI_BASE_URL", default_value = raworc_agent::provider::openai::DEFAULT_BASE_URL)]
    pub openai_base_url: String,
    /// The key of the OpenAI-compatible API (local servers may need none).
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true, value_parser = ApiKey::parse)]
    pub openai_api_key: Option<ApiKey>,
    /// Stream the model's answers (server-sent events) rather than wait for whole ones.
    #[arg(long, env = "RAWORC_LLM_STREAM", default_value_t = true, action = clap::ArgAction::Set)]
    pub llm_stream: bool,
    /// Retries of a failed model call (429, 5xx, 529, broken answers).
    #[arg(long, env = "RAWORC_LLM_RETRIES", default_value_t = 4)]
    pub llm_retries: u32,
    /// The web page's folder (`public/` and its npm packages) [default: the
    /// `web/` folder of the source tree this binary was built from].
    #[arg(long, env = "RAWORC_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Model turns per user message before the agent stops.
    #[arg(long, env = "RAWORC_AGENT_MAX_STEPS", default_value_t = 50)]
    pub agent_max_steps: u32,
}

/// An API key: printed as `***`, so that no debug output or log shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(pub String);

impl ApiKey {
    fn parse(s: &str) -> Result<ApiKey, String> {
        let key = s.trim();
        if key.is_empty() {
            return Err("the key is empty".into());
        }
        Ok(ApiKey(key.to_owned()))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The model asked when none is named.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5";

/// The agent's model provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LlmKind {
    /// Anthropic's Messages API with the computer-use tools.
    Anthropic,
    /// An OpenAI-compatible chat completions API, the tools as functions.
    Openai,
    /// No model: simple requests ("run `CMD`", "open URL", "take a
    /// screenshot", "type TEXT", "click X Y") done on the computer.
    Mock,
}

/// `WIDTHxHEIGHT`, each between 320 and 4096 pixels.
fn parse_display(s: &str) -> Result<(u16, u16), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("'{s}' is not WIDTHxHEIGHT"))?;
    let dim = |v: &str| -> Result<u16, String> {
        v.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| (320..=4096).contains(n))
            .ok_or_else(|| format!("'{v}' is not a size between 320 and 4096"))
    };
    Ok((dim(w)?, dim(h)?))
}

/// Where computers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// A sandbox of Linux namespaces per computer, on this machine.
    Local,
    /// No computers: the API and store only.
    None,
}

impl ServerConfig {
    /// Defaults for a server bound to `bind`, as `raworc serve` without flags.
    pub fn new(bind: SocketAddr, data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            bind,
            data_dir: Some(data_dir),
            database_url: None,
            body_limit: 10 * 1024 * 1024,
            token_ttl_s: 24 * 3600,
            admin_password: None,
            secret_key: None,
            login_limit_per_name: 10,
            login_limit_per_addr: 60,
            runtime: RuntimeKind::Local,
            images_dir: None,
            max_sessions: 64,
            computer_memory_mb: 2048,
            computer_pids: 2048,
            computer_millicores: 1000,
            disk_image_size: 64,
            display_size: (1024, 768),
            idle_pause_s: 0,
            idle_close_s: 0,
            allow_user_namespaces: false,
            warm_pool: 2,
            operator_resync_ms: 10_000,
            host_binary: None,
            llm: None,
            model: DEFAULT_MODEL.to_owned(),
            anthropic_base_url: raworc_agent::provider::anthropic::DEFAULT_BASE_URL.to_owned(),
            anthropic_api_key: None,
            anthropic_key_file: None,
            openai_base_url: raworc_agent::provider::openai::DEFAULT_BASE_URL.to_owned(),
            openai_api_key: None,
            llm_stream: true,
            llm_retries: 4,
            agent_max_steps: 50,
            web_dir: None,
        }
    }

    pub fn images_dir(&self) -> PathBuf {
        self.images_dir
            .clone()
            .unwrap_or_else(|| self.data_dir().join("images"))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| raworc_home().join("data"))
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir().join("raworc.db").display()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn display_sizes_parse_within_bounds() {
        assert_eq!(super::parse_display("1280x800"), Ok((1280, 800)));
        for bad in ["1280", "x800", "100x100", "1280x99999", "axb"] {
            assert!(super::parse_display(bad).is_err(), "{bad}");
        }
    }
}
