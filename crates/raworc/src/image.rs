//! `raworc image build`: make the computer image from the built-in recipe.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use raworc_image::{BuildOptions, Images, Progress, Recipe};

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build the computer image if it is missing (a no-op when it is up to date)
    Build(BuildArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Where images live [default: <data-dir>/images]
    #[arg(long, env = "RAWORC_IMAGES_DIR")]
    images_dir: Option<PathBuf>,
    /// Debian mirror to install from
    #[arg(long, env = "RAWORC_DEBIAN_MIRROR")]
    mirror: Option<String>,
}

pub fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Build(args) => build(args),
    }
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let dir = args.images_dir.unwrap_or_else(|| {
        raworc_cli::Context::from_env()
            .default_data_dir()
            .join("images")
    });
    let mut options = BuildOptions::default();
    if let Some(m) = args.mirror.filter(|m| !m.is_empty()) {
        options.mirror = m;
    }
    let image = ensure(&dir, &options)?;
    println!("{}", image.dir.display());
    Ok(())
}

/// The image in `dir`, built first (with progress on stdout) when missing.
fn ensure(dir: &Path, options: &BuildOptions) -> anyhow::Result<raworc_image::Image> {
    let (image, built) =
        Images::new(dir).ensure(&Recipe::builtin(), options, &mut |p| match p {
            Progress::Step { number, of, what } => println!("[{number}/{of}] {what}"),
            Progress::Done { name, seconds } => println!("built {name} in {seconds} s"),
        })?;
    if !built {
        println!("{} is up to date", image.manifest.name);
    }
    Ok(image)
}

/// Before `raworc start` spawns a server with the local runtime: build the
/// image here, in the foreground with progress, rather than inside a
/// background server whose start would seem to hang.
pub fn ensure_for_start(data_dir: Option<&Path>) -> anyhow::Result<()> {
    let runtime = std::env::var("RAWORC_RUNTIME").unwrap_or_default();
    if runtime == "none" || !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let dir = match std::env::var_os("RAWORC_IMAGES_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => data_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| raworc_cli::Context::from_env().default_data_dir())
            .join("images"),
    };
    ensure(&dir, &BuildOptions::default()).map(|_| ())
}
