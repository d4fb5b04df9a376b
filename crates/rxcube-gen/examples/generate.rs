//! Generates a synthetic chain and prints what was written and how fast.
//!
//! ```text
//! cargo run --release -p rxcube-gen --example generate -- OUT_DIR [csv|parquet] [PHARMACIES] [DAYS]
//! ```
//!
//! Without the optional arguments it writes the default chain (12 pharmacies, 120 days from
//! 2024-01-07, seed 42) as CSV.

use std::path::PathBuf;
use std::time::Instant;

use rxcube_gen::{GenConfig, generate};
use rxcube_model::TableName;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .ok_or("usage: generate OUT_DIR [csv|parquet] [PHARMACIES] [DAYS]")?,
    );
    let mut config = GenConfig::default();
    if let Some(format) = args.next() {
        config.format = format.parse()?;
    }
    if let Some(n) = args.next() {
        config.pharmacies = n.parse()?;
    }
    if let Some(n) = args.next() {
        config.days = n.parse()?;
    }

    let started = Instant::now();
    let summary = generate(&config, &out, |_| {})?;
    let seconds = started.elapsed().as_secs_f64();

    let mut bytes = 0;
    println!("{:<26} {:>12} {:>14}", "file", "rows", "bytes");
    for f in &summary.files {
        let size = std::fs::metadata(&f.path)?.len();
        bytes += size;
        let name = f
            .path
            .strip_prefix(&out)
            .unwrap_or(&f.path)
            .display()
            .to_string();
        println!("{name:<26} {:>12} {size:>14}", f.rows);
    }
    let fills = summary.file(TableName::RxFills).map_or(0, |f| f.rows);
    println!("{:<26} {:>12} {bytes:>14}", "total", summary.total_rows());
    println!(
        "{seconds:.2} s: {:.0} fills/s, {:.0} rows/s, {:.1} MB/s",
        fills as f64 / seconds,
        summary.total_rows() as f64 / seconds,
        bytes as f64 / seconds / 1e6
    );
    Ok(())
}
