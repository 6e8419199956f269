//! The command line of `raworc session`: its flags, the rewriting of the
//! two-letter ones clap cannot read, and the [`Plan`] they are turned into
//! before anything is sent.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use raworc_api::{CreateSession, RemixSession};

#[derive(clap::Args, Debug, Default)]
pub struct SessionArgs {
    /// Restore a closed (or errored) session, or attach to a running one
    #[arg(
        short = 'r',
        long = "restore",
        value_name = "ID",
        conflicts_with_all = ["remix", "secrets", "instructions", "instructions_file", "setup", "setup_file", "name"]
    )]
    pub restore: Option<String>,
    /// Remix a session: a new session with a copy of its computer
    #[arg(
        short = 'R',
        long = "remix",
        value_name = "ID",
        conflicts_with_all = ["secrets", "instructions", "instructions_file", "setup", "setup_file"]
    )]
    pub remix: Option<String>,
    /// With --remix: copy the parent's /session/data (default true)
    #[arg(short = 'd', long = "data", value_name = "BOOL", requires = "remix",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub data: Option<bool>,
    /// With --remix: copy the parent's /session/code, instructions and setup (default true)
    #[arg(short = 'c', long = "code", value_name = "BOOL", requires = "remix",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub code: Option<bool>,
    /// Secrets of a new session, a JSON object of name → value
    #[arg(short = 'S', long = "secrets", value_name = "JSON")]
    pub secrets: Option<String>,
    /// Instructions for the agent of a new session
    #[arg(short = 'i', long = "instructions", value_name = "TEXT")]
    pub instructions: Option<String>,
    /// Instructions from a file (also `-if PATH`); after --instructions if both are given
    #[arg(long = "instructions-file", value_name = "PATH")]
    pub instructions_file: Option<PathBuf>,
    /// A shell script run in a new session's computer before it is ready
    #[arg(short = 's', long = "setup", value_name = "TEXT")]
    pub setup: Option<String>,
    /// The setup script from a file (also `-sf PATH`); after --setup if both are given
    #[arg(long = "setup-file", value_name = "PATH")]
    pub setup_file: Option<PathBuf>,
    /// The first message; without a terminal on stdin, print its reply and exit
    #[arg(short = 'p', long = "prompt", value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Name of the new session (or of the remix)
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    pub name: Option<String>,
}

/// Two-letter short flags of `raworc session` and their long forms.
const TWO_LETTER_FLAGS: [(&str, &str); 2] =
    [("-if", "--instructions-file"), ("-sf", "--setup-file")];

/// Rewrites `raworc session`'s two-letter flags `-if` and `-sf` (seed 000's
/// spelling) to `--instructions-file` and `--setup-file` before clap parses
/// the command line: clap's short flags are one character, and it would read
/// `-if PATH` as `-i f` followed by a stray `PATH`. Only whole tokens in flag
/// position after the `session` subcommand are touched (`-if=PATH` too); the
/// value of another flag and anything after `--` are left alone.
pub fn expand_args<I>(args: I) -> Vec<OsString>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // The subcommand is the first word that is not a flag (the top level
    // has no options that take values).
    let Some(sub) = args
        .iter()
        .skip(1)
        .position(|a| !a.to_string_lossy().starts_with('-'))
        .map(|i| i + 1)
    else {
        return args;
    };
    if args[sub] != "session" {
        return args;
    }
    let takes_value = value_flags();
    let mut i = sub + 1;
    while i < args.len() {
        let Some(token) = args[i].to_str().map(str::to_owned) else {
            i += 1;
            continue;
        };
        if token == "--" {
            break;
        }
        let (flag, value) = match token.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (token.as_str(), None),
        };
        let flag = match TWO_LETTER_FLAGS.iter().find(|(short, _)| *short == flag) {
            Some((_, long)) => {
                args[i] = match value {
                    Some(v) => format!("{long}={v}").into(),
                    None => (*long).into(),
                };
                *long
            }
            None => flag,
        };
        // A flag given as `--flag value` (not `--flag=value`): skip its value.
        if value.is_none() && takes_value.iter().any(|f| f == flag) {
            i += 1;
        }
        i += 1;
    }
    args
}

/// `-x` and `--long` spellings of `raworc session`'s flags that take a value.
fn value_flags() -> Vec<String> {
    use clap::Args as _;
    let cmd = SessionArgs::augment_args(clap::Command::new("session"));
    let mut out = Vec::new();
    for arg in cmd.get_arguments() {
        if !arg.get_action().takes_values() {
            continue;
        }
        if let Some(c) = arg.get_short() {
            out.push(format!("-{c}"));
        }
        if let Some(l) = arg.get_long() {
            out.push(format!("--{l}"));
        }
    }
    out
}

/// What the command was asked to do, checked and read before anything is
/// sent, so that bad input leaves nothing behind on the server.
#[derive(Debug)]
pub(super) enum Target {
    New(Box<CreateSession>),
    Restore(String),
    Remix { parent: String, body: RemixSession },
}

/// The checked command line: the session to talk to and the first prompt.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) target: Target,
    pub(super) prompt: Option<String>,
}

impl Plan {
    pub(super) fn from_args(args: SessionArgs) -> Result<Plan> {
        let prompt = match args.prompt {
            Some(p) if p.trim().is_empty() => anyhow::bail!("--prompt is empty"),
            other => other,
        };
        let target = if let Some(id) = args.restore {
            Target::Restore(non_empty_id(&id, "--restore")?)
        } else if let Some(id) = args.remix {
            Target::Remix {
                parent: non_empty_id(&id, "--remix")?,
                body: RemixSession {
                    data: args.data.unwrap_or(true),
                    code: args.code.unwrap_or(true),
                    name: args.name,
                    prompt: None,
                },
            }
        } else {
            let secrets = args.secrets.as_deref().map(parse_secrets).transpose()?;
            let instructions = text_and_file(
                args.instructions,
                args.instructions_file.as_ref(),
                "instructions",
                "\n\n",
            )?;
            let setup = text_and_file(args.setup, args.setup_file.as_ref(), "setup", "\n")?;
            Target::New(Box::new(CreateSession {
                name: args.name,
                instructions,
                setup,
                secrets,
                ..Default::default()
            }))
        };
        Ok(Plan { target, prompt })
    }
}

fn non_empty_id(id: &str, flag: &str) -> Result<String> {
    let id = id.trim();
    if id.is_empty() {
        anyhow::bail!("{flag} needs a session id");
    }
    Ok(id.to_string())
}

/// `-S`: a JSON object of secret name → value. Errors say where, never
/// what: serde's messages can quote the value, and that may be a secret.
fn parse_secrets(raw: &str) -> Result<BTreeMap<String, String>> {
    serde_json::from_str(raw).map_err(|e| {
        let why = match e.classify() {
            serde_json::error::Category::Data => "a value that is not a string, or not an object",
            _ => "not valid JSON",
        };
        anyhow::anyhow!(
            "--secrets must be a JSON object of name → value, e.g. '{{\"API_KEY\":\"value\"}}' \
             ({why} at line {}, column {})",
            e.line(),
            e.column()
        )
    })
}

/// `-i TEXT` and `-if PATH` (or `-s`/`-sf`): either, or both joined.
fn text_and_file(
    text: Option<String>,
    file: Option<&PathBuf>,
    what: &str,
    joiner: &str,
) -> Result<Option<String>> {
    let from_file = file
        .map(|path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the {what} file {}", path.display()))
        })
        .transpose()?;
    Ok(match (text, from_file) {
        (Some(t), Some(f)) => Some(format!("{}{joiner}{f}", t.trim_end_matches('\n'))),
        (t, f) => t.or(f),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Sub {
        Session(SessionArgs),
        Api {
            #[arg(short = 'b')]
            body: Option<String>,
            rest: Vec<String>,
        },
    }

    fn expand(args: &[&str]) -> Vec<String> {
        expand_args(args.iter().copied())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    fn parse(args: &[&str]) -> Result<SessionArgs, clap::Error> {
        let mut argv = vec!["raworc", "session"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(expand_args(argv))?.command {
            Sub::Session(a) => Ok(a),
            Sub::Api { .. } => unreachable!(),
        }
    }

    #[test]
    fn two_letter_flags_are_spelled_out() {
        assert_eq!(
            expand(&["raworc", "session", "-if", "a.md", "-sf", "s.sh"]),
            [
                "raworc",
                "session",
                "--instructions-file",
                "a.md",
                "--setup-file",
                "s.sh"
            ]
        );
        assert_eq!(
            expand(&["raworc", "session", "-if=a.md"]),
            ["raworc", "session", "--instructions-file=a.md"]
        );
        // A value that looks like the flag stays a value.
        assert_eq!(
            expand(&["raworc", "session", "-p", "-if", "-n", "-sf"]),
            ["raworc", "session", "-p", "-if", "-n", "-sf"]
        );
        assert_eq!(
            expand(&["raworc", "session", "--prompt", "-sf", "-sf", "x"]),
            ["raworc", "session", "--prompt", "-sf", "--setup-file", "x"]
        );
        // Not after `--`, and not for other commands.
        assert_eq!(
            expand(&["raworc", "session", "--", "-if"]),
            ["raworc", "session", "--", "-if"]
        );
        assert_eq!(
            expand(&["raworc", "api", "-if", "x"]),
            ["raworc", "api", "-if", "x"]
        );
        assert_eq!(expand(&["raworc"]), ["raworc"]);
        assert_eq!(expand(&["raworc", "--help"]), ["raworc", "--help"]);
    }

    #[test]
    fn every_flag_of_the_seed_parses() {
        let a = parse(&[
            "-S",
            r#"{"K":"v"}"#,
            "-i",
            "be brief",
            "-if",
            "i.md",
            "-s",
            "echo hi",
            "-sf",
            "s.sh",
            "-p",
            "hello",
            "-n",
            "demo",
        ])
        .unwrap();
        assert_eq!(a.secrets.as_deref(), Some(r#"{"K":"v"}"#));
        assert_eq!(a.instructions.as_deref(), Some("be brief"));
        assert_eq!(a.instructions_file, Some(PathBuf::from("i.md")));
        assert_eq!(a.setup.as_deref(), Some("echo hi"));
        assert_eq!(a.setup_file, Some(PathBuf::from("s.sh")));
        assert_eq!(a.prompt.as_deref(), Some("hello"));
        assert_eq!(a.name.as_deref(), Some("demo"));

        let a = parse(&["-R", "abc", "-d", "false", "-c", "no"]).unwrap();
        assert_eq!(a.remix.as_deref(), Some("abc"));
        assert_eq!((a.data, a.code), (Some(false), Some(false)));
        let a = parse(&["--remix", "abc", "--data", "true"]).unwrap();
        assert_eq!((a.data, a.code), (Some(true), None));
        let a = parse(&["-r", "abc", "-p", "go on"]).unwrap();
        assert_eq!(a.restore.as_deref(), Some("abc"));
    }

    #[test]
    fn flags_that_do_not_go_together_are_refused() {
        for bad in [
            &["-d", "false"][..],
            &["-c", "true"],
            &["-r", "a", "-R", "b"],
            &["-r", "a", "-S", "{}"],
            &["-R", "a", "-i", "x"],
            &["-R", "a", "-sf", "x"],
            &["-r", "a", "-n", "x"],
            &["-R", "a", "-d", "maybe"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn a_new_session_takes_its_settings_from_flags_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let instructions = dir.path().join("i.md");
        let setup = dir.path().join("s.sh");
        std::fs::write(&instructions, "from the file\n").unwrap();
        std::fs::write(&setup, "echo file\n").unwrap();
        let plan = Plan::from_args(SessionArgs {
            secrets: Some(r#"{"TOKEN":"abc","B":"c"}"#.into()),
            instructions: Some("inline\n".into()),
            instructions_file: Some(instructions.clone()),
            setup: Some("echo inline".into()),
            setup_file: Some(setup),
            name: Some("demo".into()),
            prompt: Some("hi".into()),
            ..Default::default()
        })
        .unwrap();
        let Target::New(body) = plan.target else {
            panic!("a new session: {plan:?}")
        };
        assert_eq!(body.name.as_deref(), Some("demo"));
        assert_eq!(
            body.instructions.as_deref(),
            Some("inline\n\nfrom the file\n")
        );
        assert_eq!(body.setup.as_deref(), Some("echo inline\necho file\n"));
        let secrets = body.secrets.unwrap();
        assert_eq!(secrets["TOKEN"], "abc");
        assert_eq!(secrets.len(), 2);
        assert_eq!(body.prompt, None, "the prompt is sent as a message");
        assert_eq!(plan.prompt.as_deref(), Some("hi"));

        let only_file = Plan::from_args(SessionArgs {
            instructions_file: Some(instructions),
            ..Default::default()
        })
        .unwrap();
        let Target::New(body) = only_file.target else {
            panic!()
        };
        assert_eq!(body.instructions.as_deref(), Some("from the file\n"));
        assert_eq!(body.setup, None);
        assert_eq!(body.secrets, None);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let err = |args: SessionArgs| format!("{:#}", Plan::from_args(args).unwrap_err());
        for raw in ["{not json", r#"["a"]"#, r#"{"A":1}"#, "", r#""hunter2""#] {
            let e = err(SessionArgs {
                secrets: Some(raw.into()),
                ..Default::default()
            });
            assert!(e.starts_with("--secrets must be a JSON object"), "{e}");
            assert!(!e.contains("hunter2"), "no value is quoted: {e}");
        }
        let e = err(SessionArgs {
            setup_file: Some("/nonexistent/setup.sh".into()),
            ..Default::default()
        });
        assert!(
            e.starts_with("cannot read the setup file /nonexistent/setup.sh"),
            "{e}"
        );
        let e = err(SessionArgs {
            prompt: Some("  ".into()),
            ..Default::default()
        });
        assert_eq!(e, "--prompt is empty");
        let e = err(SessionArgs {
            restore: Some(" ".into()),
            ..Default::default()
        });
        assert_eq!(e, "--restore needs a session id");
    }

    #[test]
    fn remixes_copy_everything_unless_told() {
        let plan = Plan::from_args(SessionArgs {
            remix: Some("p1".into()),
            data: Some(false),
            name: Some("child".into()),
            ..Default::default()
        })
        .unwrap();
        let Target::Remix { parent, body } = plan.target else {
            panic!()
        };
        assert_eq!(parent, "p1");
        assert!(!body.data);
        assert!(body.code);
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"data": false, "code": true, "name": "child", "prompt": null})
        );
    }
}
