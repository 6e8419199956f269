//! `login`, `auth`, `logout` and `token`: getting, checking and forgetting
//! the bearer token the other commands send.

use anyhow::Result;
use chrono::SecondsFormat;
use raworc_api::{PrincipalType, Timestamp};

use crate::config::{self, Config};
use crate::http;
use crate::Context;

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Operator name
    #[arg(short = 'u', long = "user", value_name = "NAME")]
    pub user: String,
    /// Operator password
    #[arg(short = 'p', long = "pass", value_name = "PASS")]
    pub pass: String,
    /// Server URL (default: the saved one, else $RAWORC_SERVER, else http://127.0.0.1:9000)
    #[arg(short = 's', long = "server", value_name = "URL")]
    pub server: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct AuthArgs {
    /// A token to check and save; without it, show the current login
    #[arg(short = 't', long = "token", value_name = "TOKEN")]
    pub token: Option<String>,
    /// Server URL (default: the saved one, else $RAWORC_SERVER, else http://127.0.0.1:9000)
    #[arg(short = 's', long = "server", value_name = "URL")]
    pub server: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// Who the token is for
    #[arg(short = 'p', long = "principal", value_name = "NAME")]
    pub principal: String,
    /// User or Operator
    #[arg(short = 't', long = "type", value_name = "TYPE", value_parser = parse_principal_type)]
    pub principal_type: PrincipalType,
    /// Lifetime in seconds (default: the server's token lifetime)
    #[arg(long = "expires-in", value_name = "SECONDS")]
    pub expires_in: Option<u64>,
}

/// `User`/`Operator`, any case.
pub fn parse_principal_type(raw: &str) -> Result<PrincipalType, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "user" => Ok(PrincipalType::User),
        "operator" => Ok(PrincipalType::Operator),
        _ => Err(format!(
            "'{raw}' is not a principal type: use User or Operator"
        )),
    }
}

/// A timestamp as `2026-01-02T03:04:05Z`.
pub fn show_time(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The server for this command and the config it was resolved from.
fn server_and_config(ctx: &Context, flag: Option<&str>) -> Result<(String, Config)> {
    let cfg = Config::load(&ctx.home)?;
    let server = config::resolve_server(flag, cfg.server.as_deref(), ctx.env_server.as_deref())?;
    Ok((server, cfg))
}

/// The saved server and token, or the "not logged in" error.
pub fn logged_in(ctx: &Context) -> Result<(String, Config, String)> {
    let (server, cfg) = server_and_config(ctx, None)?;
    match cfg.token() {
        Some(token) => {
            let token = token.to_string();
            Ok((server, cfg, token))
        }
        None => anyhow::bail!("not logged in: run 'raworc login -u admin -p admin'"),
    }
}

/// `raworc login`.
pub async fn login(ctx: &Context, args: LoginArgs) -> Result<()> {
    let (server, mut cfg) = server_and_config(ctx, args.server.as_deref())?;
    let user = args.user.trim();
    if user.is_empty() {
        anyhow::bail!("empty user name: use -u NAME");
    }
    let resp = http::login(&http::client()?, &server, user, &args.pass).await?;
    cfg.server = Some(server.clone());
    cfg.token = Some(resp.token);
    cfg.user = Some(resp.user.clone());
    cfg.save(&ctx.home)?;
    println!(
        "Logged in to {server} as {} ({}); token expires {}",
        resp.user,
        resp.role.as_str(),
        show_time(&resp.expires_at)
    );
    Ok(())
}

/// `raworc auth`: save a given token, or show the current login.
pub async fn auth(ctx: &Context, args: AuthArgs) -> Result<()> {
    let (server, mut cfg) = server_and_config(ctx, args.server.as_deref())?;
    let http = http::client()?;
    if let Some(token) = args.token {
        let token = token.trim().to_string();
        if token.is_empty() {
            anyhow::bail!("empty token: use -t TOKEN");
        }
        let info = http::auth_info(&http, &server, &token).await?;
        cfg.server = Some(server.clone());
        cfg.token = Some(token);
        cfg.user = Some(info.user.clone());
        cfg.save(&ctx.home)?;
        println!(
            "Authenticated to {server} as {} ({}, {}); token expires {}",
            info.user,
            info.role.as_str(),
            info.principal_type.as_str(),
            show_time(&info.expires_at)
        );
        return Ok(());
    }

    println!("Server: {server}");
    let Some(token) = cfg.token() else {
        anyhow::bail!("not logged in: run 'raworc login -u admin -p admin'");
    };
    if let Some(user) = &cfg.user {
        println!("User:   {user}");
    }
    let info = http::auth_info(&http, &server, token).await?;
    println!(
        "Token:  valid for {} ({}, {}) until {}",
        info.user,
        info.role.as_str(),
        info.principal_type.as_str(),
        show_time(&info.expires_at)
    );
    Ok(())
}

/// `raworc logout`: drop the token, keep the server.
pub fn logout(ctx: &Context) -> Result<()> {
    let mut cfg = Config::load(&ctx.home)?;
    if cfg.token.is_none() && cfg.user.is_none() {
        println!("Not logged in; nothing to do.");
        return Ok(());
    }
    cfg.token = None;
    cfg.user = None;
    cfg.save(&ctx.home)?;
    match &cfg.server {
        Some(server) => println!("Logged out of {server}."),
        None => println!("Logged out."),
    }
    Ok(())
}

/// `raworc token`: mint a token; the token alone goes to stdout.
pub async fn token(ctx: &Context, args: TokenArgs) -> Result<()> {
    let (server, _cfg, token) = logged_in(ctx)?;
    let principal = args.principal.trim();
    if principal.is_empty() {
        anyhow::bail!("empty principal name: use -p NAME");
    }
    let resp = http::mint_token(
        &http::client()?,
        &server,
        &token,
        principal,
        args.principal_type,
        args.expires_in,
    )
    .await?;
    println!("{}", resp.token);
    eprintln!(
        "Token for {} {principal} expires {}",
        args.principal_type.as_str(),
        show_time(&resp.expires_at)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_types_parse_in_any_case() {
        assert_eq!(parse_principal_type("User"), Ok(PrincipalType::User));
        assert_eq!(parse_principal_type("user"), Ok(PrincipalType::User));
        assert_eq!(
            parse_principal_type("OPERATOR"),
            Ok(PrincipalType::Operator)
        );
        assert_eq!(
            parse_principal_type(" Operator "),
            Ok(PrincipalType::Operator)
        );
        assert!(parse_principal_type("admin").is_err());
        assert!(parse_principal_type("").is_err());
    }

    #[test]
    fn principal_types_are_sent_capitalised() {
        let body = raworc_api::TokenRequest {
            principal: "bob".into(),
            principal_type: PrincipalType::User,
            expires_in_s: None,
        };
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["principal_type"], "User");
        assert_eq!(v["principal"], "bob");
    }

    #[test]
    fn not_logged_in_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context {
            home: dir.path().to_path_buf(),
            env_server: None,
        };
        let err = logged_in(&ctx).unwrap_err().to_string();
        assert_eq!(err, "not logged in: run 'raworc login -u admin -p admin'");
    }

    #[test]
    fn logout_keeps_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context {
            home: dir.path().to_path_buf(),
            env_server: None,
        };
        Config {
            server: Some("http://h:1".into()),
            token: Some("t".into()),
            user: Some("admin".into()),
            extra: Default::default(),
        }
        .save(&ctx.home)
        .unwrap();
        logout(&ctx).unwrap();
        let cfg = Config::load(&ctx.home).unwrap();
        assert_eq!(cfg.server.as_deref(), Some("http://h:1"));
        assert_eq!(cfg.token, None);
        assert_eq!(cfg.user, None);
    }
}
