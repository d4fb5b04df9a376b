//! `rxcube rollup`: build, refresh and inspect the cube's materialized rollups.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rxcube_cube::rollup::{self, Mode, Rollups};

use crate::WarehouseArg;

/// `println!` that ends the process quietly when stdout is closed (`| head`): a closed pipe is
/// the reader's choice, not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Rollups are declared in the cube definition ([[rollup]] in cube.toml: name, grain, measures) and \
stored as Delta tables under <warehouse>/_rxcube/rollups/. Each holds mergeable partial states \
(component sums, exact histograms for medians) per pharmacy, org version and period, and records \
the table versions it was computed from. Queries on the cube use the coarsest rollup that \
answers them exactly. A stale one answers caught up: its stored rows outside the periods and \
pharmacies that imports since its watermark touched, the raw tables' rows inside them (EXPLAIN \
says which); a refresh writes those rows, so the catching up stays small. `rxcube serve` \
refreshes by itself.

Every write is one atomic Delta commit: readers see the old rollup or the new one, and a job \
killed at any moment leaves the old one; run it again to finish.

Examples:
  rxcube rollup build            (everything, from scratch)
  rxcube rollup refresh          (only what imports and reference changes touched)
  rxcube rollup status")]
pub struct RollupArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Recompute every rollup from the landed tables (finest first; coarser ones merge finer).
    Build(Target),
    /// Bring every rollup up to date: recompute only the periods that imports since its
    /// watermark touched, and the pharmacies whose zone, org dates or target minutes changed.
    Refresh(Target),
    /// Show each rollup's watermark, size and whether it is fresh (and if not, why).
    Status(Target),
}

#[derive(Debug, clap::Args)]
struct Target {
    #[command(flatten)]
    warehouse: WarehouseArg,
}

pub async fn run(args: RollupArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Build(t) => job(t, Mode::Build).await,
        Action::Refresh(t) => job(t, Mode::Refresh).await,
        Action::Status(t) => status(t).await,
    }
}

async fn job(target: Target, mode: Mode) -> anyhow::Result<ExitCode> {
    let warehouse = target.warehouse.open().await?;
    refresh(&warehouse, mode, true).await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs a rollup job on `warehouse` with a spinner; `print`: one line per rollup on stdout.
pub async fn refresh(
    warehouse: &rxcube_warehouse::Warehouse,
    mode: Mode,
    print: bool,
) -> anyhow::Result<()> {
    let def = Arc::new(rxcube_cube::definition_for(warehouse)?);
    if def.rollups.is_empty() {
        if print {
            say!("the cube definition declares no rollups");
        }
        return Ok(());
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:>8} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut progress = |name: &str, what: &str| {
        bar.set_prefix(name.to_string());
        bar.set_message(what.to_string());
    };
    let reports = rollup::run(warehouse, def, mode, &mut progress).await;
    bar.finish_and_clear();
    for r in reports?.into_iter().filter(|_| print) {
        let version = match (r.action, r.version) {
            ("up to date", Some(v)) => format!(" at version {v}"),
            (_, Some(v)) => format!(" -> version {v}"),
            _ => String::new(),
        };
        let from = if r.from.is_empty() {
            String::new()
        } else {
            format!(" from {}", r.from)
        };
        if r.action == "up to date" {
            say!("{:<10} up to date{version}", r.rollup);
            continue;
        }
        say!(
            "{:<10} {:<10} {}{from}{version} ({:.2} s)",
            r.rollup,
            r.action,
            r.part,
            r.seconds
        );
    }
    Ok(())
}

async fn status(target: Target) -> anyhow::Result<ExitCode> {
    let warehouse = target.warehouse.open().await?;
    let def = rxcube_cube::definition_for(&warehouse)?;
    let ctx = rxcube_cube::base_session();
    let versions = rxcube_warehouse::catalog::register_tables(&ctx, &warehouse).await?;
    let rollups = Rollups::load(&ctx, &warehouse, &def, &versions).await?;
    if rollups.states.is_empty() {
        say!("the cube definition declares no rollups");
    }
    for s in &rollups.states {
        let rows = match s.version {
            Some(_) => {
                let batches = ctx
                    .sql(&format!("SELECT COUNT(*) FROM {}", s.table()))
                    .await?
                    .collect()
                    .await?;
                batches
                    .first()
                    .and_then(|b| {
                        b.column(0)
                            .as_any()
                            .downcast_ref::<arrow::array::Int64Array>()
                            .map(|a| a.value(0))
                    })
                    .unwrap_or(0)
            }
            None => 0,
        };
        let state = match (s.is_fresh(), s.behind_since) {
            (true, _) => "fresh".to_string(),
            (false, Some(since)) => format!(
                "stale for {} (since {}): {}",
                lag(chrono::Utc::now() - since),
                since.format("%Y-%m-%dT%H:%M:%SZ"),
                s.stale.join("; ")
            ),
            (false, None) => format!("stale: {}", s.stale.join("; ")),
        };
        say!(
            "{:<10} grain {:<10} {:>9} rows  {state}",
            s.def.name,
            s.def.grain.as_str(),
            rows
        );
        if let (Some(v), Some(w)) = (s.version, &s.watermark) {
            say!(
                "{:<10} version {v}, built {}, watermark {}",
                "",
                w.built_at,
                w.sources_text()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A lag in words: `42 s`, `3 min 12 s`, `5 h 4 min`, `2 d 3 h`.
fn lag(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lags_are_written_in_two_units_at_most() {
        let lag = |s| super::lag(chrono::TimeDelta::seconds(s));
        assert_eq!(lag(-3), "0 s");
        assert_eq!(lag(59), "59 s");
        assert_eq!(lag(192), "3 min 12 s");
        assert_eq!(lag(5 * 3600 + 4 * 60 + 9), "5 h 4 min");
        assert_eq!(lag(2 * 86400 + 3 * 3600 + 1), "2 d 3 h");
    }
}
