//! `rxcube generate`: write a synthetic chain to a directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use chrono::NaiveDate;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rxcube_gen::{Format, GenConfig, generate};

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Writes <table>.<ext> for the eight contract tables and corrections/<table>.<ext> for the \
correction files, which replace earlier records and must be imported after them. The same \
options always give the same files. Memory stays bounded at any size: 100M fills stream out.")]
pub struct GenerateArgs {
    /// Directory to write into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Number of pharmacies.
    #[arg(long, default_value_t = GenConfig::default().pharmacies, value_parser = clap::value_parser!(u32).range(1..))]
    pharmacies: u32,
    /// Number of days of events.
    #[arg(long, default_value_t = GenConfig::default().days, value_parser = clap::value_parser!(u32).range(1..))]
    days: u32,
    /// First day of events (YYYY-MM-DD).
    #[arg(long, default_value_t = GenConfig::default().start)]
    start: NaiveDate,
    /// Random seed: the same seed gives the same chain.
    #[arg(long, default_value_t = GenConfig::default().seed)]
    seed: u64,
    /// File format.
    #[arg(long, default_value = "csv", value_parser = ["csv", "parquet"])]
    format: String,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let format: Format = args
        .format
        .parse()
        .map_err(|e| anyhow::anyhow!("--format: {e}"))?;
    let config = GenConfig {
        pharmacies: args.pharmacies,
        days: args.days,
        start: args.start,
        seed: args.seed,
        format,
    };
    let bar =
        ProgressBar::with_draw_target(Some(u64::from(args.days)), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} generating [{bar:30}] day {pos}/{len} {msg} ({eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let summary = generate(&config, &args.out, |p| {
        bar.set_position(u64::from(p.day));
        bar.set_message(format!("{} rows", p.rows_written));
    });
    bar.finish_and_clear();
    let summary = summary?;
    let mut total = 0;
    for f in &summary.files {
        total += f.rows;
        println!("{:>12} rows  {}", f.rows, f.path.display());
    }
    println!(
        "generated {total} rows in {} files under {} in {:.2} s",
        summary.files.len(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
