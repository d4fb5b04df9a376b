//! `rxcube import --follow DIR`: continuous ingestion from a landing directory
//! ([`rxcube_ingest::follow`]): each scan's new files of a table in one import run (file by
//! file when that run does not accept them all), each moved aside once its run is over.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rxcube_ingest::follow::{Arrival, Landing};
use rxcube_ingest::{NoProgress, Status, import};
use rxcube_model::TableName;
use rxcube_warehouse::Warehouse;

use crate::import_cmd::{ImportArgs, error_lines, options, summary};

/// The longest wait before a file whose run failed (not rejected) is tried again.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// The most files that arrived together one import run takes.
const MAX_BATCH: usize = 256;

/// `println!` that is flushed at once: a log read while the command runs.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($arg)*);
        let _ = out.flush();
    }};
}

/// Stops the loop at the first Ctrl-C or SIGTERM (after the file being imported); a second
/// one ends the process at once (an import stopped midway commits nothing).
fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        for _ in 0..2 {
            signal().await;
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!("rxcube import: stopped");
                std::process::exit(130);
            }
            eprintln!("rxcube import: stopping after the file being imported (again to stop now)");
        }
    });
    stop
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// A file whose run failed: when it may be tried again, and the wait after that.
struct Retry {
    at: Instant,
    wait: Duration,
}

pub async fn follow(
    warehouse: &Warehouse,
    dir: &Path,
    args: &ImportArgs,
) -> anyhow::Result<ExitCode> {
    let mut landing = Landing::new(dir, args.table)?;
    let poll = Duration::from_secs_f64(args.poll);
    let stop = stop_on_signal();
    match args.table {
        Some(t) => say!(
            "following {} for {t} files (every {:.1} s; Ctrl-C stops)",
            dir.display(),
            args.poll
        ),
        None => say!(
            "following {}/<table>/ (every {:.1} s; Ctrl-C stops)",
            dir.display(),
            args.poll
        ),
    }
    let mut retries: HashMap<PathBuf, Retry> = HashMap::new();
    // Files imported into each table since it was last compacted.
    let mut since_compacted: HashMap<TableName, usize> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        let (ready, notes) = landing
            .scan()
            .with_context(|| format!("cannot scan the landing directory {}", dir.display()))?;
        for note in notes {
            eprintln!("note: {note}");
        }
        retries.retain(|path, _| path.exists());
        let now = Instant::now();
        let ready: Vec<Arrival> = ready
            .into_iter()
            .filter(|a| retries.get(&a.path).is_none_or(|r| now >= r.at))
            .collect();
        // Files that arrived together for one table land in one run (a run costs about the
        // same for one file as for many); a run that does not land them all is done again
        // file by file, so a bad file is set aside alone.
        let mut one_by_one = Vec::new();
        for group in ready.chunk_by(|a, b| a.table == b.table) {
            for batch in group.chunks(MAX_BATCH) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if batch.len() > 1 && land_together(warehouse, &mut landing, batch, args).await? {
                    let n = since_compacted.entry(batch[0].table).or_default();
                    *n += batch.len();
                    if args.compact_every > 0 && *n >= args.compact_every {
                        *n = 0;
                        maintain(warehouse, batch[0].table).await;
                    }
                } else {
                    one_by_one.extend_from_slice(batch);
                }
            }
        }
        for arrival in one_by_one {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            match land(warehouse, &mut landing, &arrival, args).await {
                Ok(accepted) => {
                    retries.remove(&arrival.path);
                    let n = since_compacted.entry(arrival.table).or_default();
                    *n += usize::from(accepted);
                    if args.compact_every > 0 && *n >= args.compact_every {
                        *n = 0;
                        maintain(warehouse, arrival.table).await;
                    }
                }
                Err(Failure::Retry(e)) => {
                    let wait = retries
                        .get(&arrival.path)
                        .map_or(poll.max(Duration::from_secs(1)), |r| {
                            (r.wait * 2).min(MAX_RETRY)
                        });
                    eprintln!(
                        "error: {}: {e:#}; the file stays and is tried again in {} s",
                        arrival.path.display(),
                        wait.as_secs()
                    );
                    retries.insert(
                        arrival.path.clone(),
                        Retry {
                            at: Instant::now() + wait,
                            wait,
                        },
                    );
                }
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
        let slept = Instant::now();
        while slept.elapsed() < poll && !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(poll.min(Duration::from_millis(100))).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Why a file did not land.
enum Failure {
    /// The run failed (not rejected): the file stays and is tried again.
    Retry(anyhow::Error),
    /// The file was handled but cannot be moved out of the way: going on would import it
    /// again and again.
    Fatal(anyhow::Error),
}

/// Compacts `table` and deletes the files no recent version reads; a failure is reported and
/// left for the next time (a compaction that lost a race with a commit changed nothing).
async fn maintain(warehouse: &Warehouse, table: TableName) {
    match warehouse.compact(table.as_str()).await {
        Ok(c) if c.version.is_some() => say!(
            "{table}: compacted {} files into {} (table version {})",
            c.files_removed,
            c.files_added,
            c.version.unwrap_or_default()
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: {table} was not compacted (tried again later): {e}"),
    }
    match warehouse.vacuum(table.as_str()).await {
        Ok(0) => {}
        Ok(n) => say!("{table}: deleted {n} files no version within the retention reads"),
        Err(e) => eprintln!("warning: {table} was not vacuumed (tried again later): {e}"),
    }
}

/// Imports `batch` (files of one table, in arrival order) in one run and moves each file to
/// the imported ones; `false` when the run did not accept them all (nothing was posted: the
/// files stay, to be imported one by one).
async fn land_together(
    warehouse: &Warehouse,
    landing: &mut Landing,
    batch: &[Arrival],
    args: &ImportArgs,
) -> anyhow::Result<bool> {
    let table = batch[0].table;
    let Ok(options) = options(warehouse, table, args) else {
        return Ok(false);
    };
    let paths: Vec<PathBuf> = batch.iter().map(|a| a.path.clone()).collect();
    let report = match import(warehouse, table, &paths, &options, &NoProgress).await {
        Ok(r) if r.status == Status::Accepted => r,
        Ok(_) | Err(_) => {
            say!(
                "{} {table} files were not all accepted in one run: importing them one by one",
                batch.len()
            );
            return Ok(false);
        }
    };
    say!("{} files in one run: {}", batch.len(), summary(&report));
    for arrival in batch {
        let moved = landing.imported(arrival).with_context(|| {
            format!(
                "{} was imported but cannot be moved out of the landing directory",
                arrival.path.display()
            )
        })?;
        say!("{} -> {}", arrival.path.display(), moved.display());
    }
    if args.refresh
        && let Err(e) =
            crate::rollup_cmd::refresh(warehouse, rxcube_cube::rollup::Mode::Refresh, false).await
    {
        eprintln!(
            "warning: the rollups were not refreshed after {} {table} files: {e:#}",
            batch.len()
        );
    }
    Ok(true)
}

/// Imports one arrived file, then moves it out of the landing area; returns whether it was
/// accepted.
async fn land(
    warehouse: &Warehouse,
    landing: &mut Landing,
    arrival: &Arrival,
    args: &ImportArgs,
) -> Result<bool, Failure> {
    let options = options(warehouse, arrival.table, args).map_err(Failure::Retry)?;
    let report = import(
        warehouse,
        arrival.table,
        std::slice::from_ref(&arrival.path),
        &options,
        &NoProgress,
    )
    .await
    .map_err(|e| Failure::Retry(e.into()))?;
    let name = arrival.path.display();
    let moved = match report.status {
        Status::Accepted => landing.imported(arrival),
        Status::Rejected => {
            let mut text = format!("{}\n", summary(&report));
            text.push_str(&format!(
                "the file is as it arrived; fix it and put it back in the landing directory \
                 (or import it with --start-at). Every error of the run: SELECT * FROM \
                 system.import_errors WHERE run_id = '{}'\n\n",
                report.run_id
            ));
            for line in error_lines(&report, usize::MAX, false) {
                text.push_str(&line);
                text.push('\n');
            }
            landing.rejected(arrival, &text)
        }
    }
    .map_err(|e| {
        Failure::Fatal(anyhow::Error::new(e).context(format!(
            "{name} was {} but cannot be moved out of the landing directory",
            match report.status {
                Status::Accepted => "imported",
                Status::Rejected => "rejected",
            }
        )))
    })?;
    match report.status {
        Status::Accepted => say!("{name}: {} -> {}", summary(&report), moved.display()),
        Status::Rejected => say!(
            "{name}: {} -> {} (why: {}.errors.txt)",
            summary(&report),
            moved.display(),
            moved.display()
        ),
    }
    if args.refresh
        && report.status == Status::Accepted
        && let Err(e) =
            crate::rollup_cmd::refresh(warehouse, rxcube_cube::rollup::Mode::Refresh, false).await
    {
        eprintln!("warning: the rollups were not refreshed after {name}: {e:#}");
    }
    Ok(report.status == Status::Accepted)
}
