//! Retries of model calls (they have no side effects, so retrying is safe):
//! the server's `retry-after-ms` / `retry-after` when it gives one within a
//! minute, else exponential back-off with jitter, as Anthropic's SDKs do.

use std::future::Future;
use std::time::Duration;

use reqwest::header::HeaderMap;

use super::{AttemptError, ModelError, ModelReply};

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Back-off before the first retry when the server names no time.
    pub initial: Duration,
    /// Longest back-off.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            initial: Duration::from_millis(500),
            max: Duration::from_secs(8),
        }
    }
}

/// The wait a server asks for in `retry-after-ms` or `retry-after`
/// (seconds, possibly fractional); HTTP dates and waits over a minute are
/// ignored.
pub(crate) fn server_delay(headers: &HeaderMap) -> Option<Duration> {
    let read = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let secs = read("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| read("retry-after"))?;
    (secs > 0.0 && secs <= 60.0).then(|| Duration::from_secs_f64(secs))
}

/// Whether the server says to retry (`x-should-retry`), overriding the status.
pub(crate) fn should_retry(headers: &HeaderMap, status: u16) -> bool {
    match headers.get("x-should-retry").and_then(|v| v.to_str().ok()) {
        Some("true") => true,
        Some("false") => false,
        _ => matches!(status, 408 | 409 | 429) || status >= 500,
    }
}

impl RetryPolicy {
    fn backoff(&self, retry: u32) -> Duration {
        let base = self.initial.as_secs_f64() * 2f64.powi(retry as i32);
        let capped = base.min(self.max.as_secs_f64());
        let jitter = 1.0 - 0.25 * rand::random::<f64>();
        Duration::from_secs_f64(capped * jitter)
    }

    /// A model turn, tried as [`RetryPolicy::run`] tries; the reply counts
    /// the attempts it took.
    pub(crate) async fn turn<F, Fut>(&self, attempt: F) -> Result<ModelReply, ModelError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<ModelReply, AttemptError>>,
    {
        let (mut reply, attempts) = self.run(attempt).await?;
        reply.attempts = attempts;
        Ok(reply)
    }

    /// Runs `attempt` (given its number, from 1) until it succeeds, fails
    /// for good, or retries run out.
    pub(crate) async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<(T, u32), ModelError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt(tries).await {
                Ok(v) => return Ok((v, tries)),
                Err(e) if !e.retry => {
                    return Err(ModelError::Refused {
                        status: e.status,
                        kind: e.kind,
                        message: e.message,
                    })
                }
                Err(e) => {
                    if tries > self.max_retries {
                        return Err(ModelError::Exhausted {
                            attempts: tries,
                            last: e.describe(),
                        });
                    }
                    let wait = e.after.unwrap_or_else(|| self.backoff(tries - 1));
                    tracing::warn!(attempt = tries, wait_ms = wait.as_millis() as u64, error = %e.describe(), "model call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn the_servers_delay_wins_within_a_minute() {
        let mut h = HeaderMap::new();
        assert_eq!(server_delay(&h), None);
        h.insert("retry-after", HeaderValue::from_static("1.5"));
        assert_eq!(server_delay(&h), Some(Duration::from_millis(1500)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(server_delay(&h), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3600"));
        assert_eq!(server_delay(&h), None);
    }

    #[test]
    fn which_statuses_are_retried() {
        let h = HeaderMap::new();
        for s in [408, 409, 429, 500, 502, 529] {
            assert!(should_retry(&h, s), "{s}");
        }
        for s in [400, 401, 403, 404, 413] {
            assert!(!should_retry(&h, s), "{s}");
        }
        let mut h = HeaderMap::new();
        h.insert("x-should-retry", HeaderValue::from_static("false"));
        assert!(!should_retry(&h, 529));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_after_the_limit_and_refusals_at_once() {
        let policy = RetryPolicy::default();
        let mut calls = 0;
        let out: Result<((), u32), _> = policy
            .run(|n| {
                calls += 1;
                assert_eq!(n, calls);
                async { Err(AttemptError::transient("overloaded_error", "busy")) }
            })
            .await;
        assert_eq!(calls, 5);
        assert!(matches!(
            out,
            Err(ModelError::Exhausted { attempts: 5, .. })
        ));
        let mut calls = 0;
        let out: Result<((), u32), _> = policy
            .run(|n| {
                calls += 1;
                assert_eq!(n, calls);
                async {
                    Err(AttemptError {
                        retry: false,
                        after: None,
                        status: 401,
                        kind: "authentication_error".into(),
                        message: "bad key".into(),
                    })
                }
            })
            .await;
        assert_eq!(calls, 1);
        assert!(matches!(out, Err(ModelError::Refused { status: 401, .. })));
    }
}
