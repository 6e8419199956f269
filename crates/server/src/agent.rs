//! Wiring of the agent: the model `--llm` asks for (the mock agent when no
//! key is configured, said loudly), and the hooks through which the agent
//! reaches the operator, the secrets and the metrics.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use raworc_agent::provider::anthropic::{Anthropic, AnthropicConfig};
use raworc_agent::provider::mock::Mock;
use raworc_agent::provider::openai::{OpenAi, OpenAiConfig};
use raworc_agent::provider::RetryPolicy;
use raworc_agent::wire::Usage;
use raworc_agent::{AgentConfig, Agents, Delta, Hooks, Model, Shots};
use raworc_api::EventDelta;
use raworc_operator::Operator;
use raworc_runtime::Runtime;
use raworc_store::Store;

use crate::config::{LlmKind, ServerConfig};
use crate::crypto::SecretBox;
use crate::metrics::TokenCounters;
use crate::routes::events::{publish_delta, DeltaHub};

/// The Anthropic key from the flag, the variable or the key file.
fn anthropic_key(config: &ServerConfig) -> anyhow::Result<Option<String>> {
    if let Some(key) = &config.anthropic_api_key {
        return Ok(Some(key.0.clone()));
    }
    match &config.anthropic_key_file {
        Some(path) => {
            let key = std::fs::read_to_string(path)
                .with_context(|| format!("reading the key file {}", path.display()))?;
            let key = key.trim();
            anyhow::ensure!(!key.is_empty(), "the key file {} is empty", path.display());
            Ok(Some(key.to_owned()))
        }
        None => Ok(None),
    }
}

/// The model the configuration asks for.
pub fn model(config: &ServerConfig) -> anyhow::Result<Arc<dyn Model>> {
    let key = anthropic_key(config)?;
    let kind = config.llm.unwrap_or(if key.is_some() {
        LlmKind::Anthropic
    } else {
        LlmKind::Mock
    });
    Ok(match kind {
        LlmKind::Mock => {
            tracing::warn!(
                "no model key is configured (ANTHROPIC_API_KEY): the agent is the MOCK agent, \
                 which understands only simple requests (run `CMD`, open URL, take a screenshot, \
                 type TEXT, click X Y)"
            );
            Arc::new(Mock)
        }
        LlmKind::Openai => {
            tracing::info!(model = %config.model, base_url = %config.openai_base_url, "the agent uses an OpenAI-compatible API");
            Arc::new(OpenAi::new(OpenAiConfig {
                base_url: config.openai_base_url.clone(),
                api_key: config.openai_api_key.as_ref().map(|k| k.0.clone()),
                model: config.model.clone(),
                max_tokens: 4096,
                stream: config.llm_stream,
                retry: RetryPolicy {
                    max_retries: config.llm_retries,
                    ..RetryPolicy::default()
                },
                timeout: Duration::from_secs(600),
            }))
        }
        LlmKind::Anthropic => {
            let api_key = key.context(
                "--llm anthropic needs a key: set ANTHROPIC_API_KEY or --anthropic-key-file",
            )?;
            tracing::info!(model = %config.model, base_url = %config.anthropic_base_url, "the agent uses Anthropic's API");
            Arc::new(Anthropic::new(AnthropicConfig {
                base_url: config.anthropic_base_url.clone(),
                api_key,
                model: config.model.clone(),
                max_tokens: 16384,
                stream: config.llm_stream,
                retry: RetryPolicy {
                    max_retries: config.llm_retries,
                    ..RetryPolicy::default()
                },
                timeout: Duration::from_secs(600),
            }))
        }
    })
}

struct ServerHooks {
    operator: Option<Arc<Operator>>,
    store: Store,
    secrets: Arc<SecretBox>,
    tokens: TokenCounters,
    deltas: DeltaHub,
}

impl Hooks for ServerHooks {
    fn wake_operator(&self, id: &str) {
        if let Some(op) = &self.operator {
            op.wake(id);
        }
    }

    fn touch(&self, id: &str) {
        if let Some(op) = &self.operator {
            op.touch(id);
        }
    }

    fn session_secrets<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Vec<(String, String)>> {
        Box::pin(async move {
            let sealed = self.store.session_secrets(id).await.unwrap_or_default();
            sealed
                .into_iter()
                .filter_map(|(name, sealed)| {
                    let value = self.secrets.open(&name, &sealed).ok()?;
                    Some((name, value))
                })
                .collect()
        })
    }

    fn model_usage(&self, provider: &str, model: &str, usage: Usage) {
        self.tokens.add(provider, model, usage);
    }

    fn delta(&self, id: &str, after: i64, delta: &Delta) {
        let delta = EventDelta {
            session_id: id.to_owned(),
            kind: delta.kind.as_str().to_owned(),
            index: delta.index,
            attempt: delta.attempt,
            text: delta.text.clone(),
        };
        publish_delta(&self.deltas, after, delta);
    }
}

/// The agents of this server.
pub fn agents(
    config: &ServerConfig,
    store: &Store,
    runtime: Option<Arc<dyn Runtime>>,
    operator: Option<Arc<Operator>>,
    secrets: Arc<SecretBox>,
    tokens: TokenCounters,
    deltas: DeltaHub,
) -> anyhow::Result<Agents> {
    let model = model(config)?;
    let hooks = Arc::new(ServerHooks {
        operator,
        store: store.clone(),
        secrets,
        tokens,
        deltas,
    });
    Ok(Agents::new(
        store.clone(),
        runtime,
        model,
        Shots::new(config.data_dir().join("shots")),
        AgentConfig {
            max_steps: config.agent_max_steps.max(1),
            display_width: config.display_size.0,
            display_height: config.display_size.1,
            ..AgentConfig::default()
        },
        hooks,
    ))
}
