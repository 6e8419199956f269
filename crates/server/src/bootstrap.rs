//! First-start set-up: the `admin` operator and the default-password rule.

use std::net::SocketAddr;

use anyhow::bail;
use raworc_api::OperatorRole;
use raworc_store::{NewOperator, Store};

use crate::auth::password;

const DEFAULT_ADMIN: &str = "admin";
const DEFAULT_PASSWORD: &str = "admin";

/// Creates `admin` when there is no operator yet. The password is
/// `RAWORC_ADMIN_PASSWORD`, else `admin` — which is refused unless the
/// server listens on loopback only.
pub async fn ensure_admin(
    store: &Store,
    bind: SocketAddr,
    admin_password: Option<&str>,
) -> anyhow::Result<()> {
    if store.count_operators().await? == 0 {
        let pass = admin_password.unwrap_or(DEFAULT_PASSWORD).to_string();
        let pass_hash =
            tokio::task::spawn_blocking(move || password::hash_blocking(&pass)).await??;
        let created = store
            .create_operator(
                NewOperator {
                    name: DEFAULT_ADMIN.into(),
                    pass_hash,
                    role: OperatorRole::Admin,
                    description: Some("created on first start".into()),
                },
                None,
            )
            .await;
        match created {
            Ok(_) => tracing::info!("created operator 'admin'"),
            // Another replica won the race.
            Err(raworc_store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !bind.ip().is_loopback() {
        if let Some(admin) = store.get_operator(DEFAULT_ADMIN).await? {
            let hash = admin.pass_hash.clone();
            let default = tokio::task::spawn_blocking(move || {
                password::verify_blocking(DEFAULT_PASSWORD, &hash)
            })
            .await?;
            if default {
                bail!(
                    "refusing to listen on {bind} while operator 'admin' has the default password: \
                     set RAWORC_ADMIN_PASSWORD on first start or change the password, or bind to 127.0.0.1"
                );
            }
        }
    }
    Ok(())
}
