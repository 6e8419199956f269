//! `raworc image build`: make the computer image from the built-in recipe.

use std::path::PathBuf;

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
    let recipe = Recipe::builtin();
    let images = Images::new(&dir);
    let (image, built) = images.ensure(&recipe, &options, &mut |p| match p {
        Progress::Step { number, of, what } => println!("[{number}/{of}] {what}"),
        Progress::Done { name, seconds } => println!("built {name} in {seconds} s"),
    })?;
    if !built {
        println!("{} is up to date", image.manifest.name);
    }
    println!("{}", image.dir.display());
    Ok(())
}
