//! A fuzz run of the CSV and Parquet readers, through the import itself: valid seed files are
//! damaged in many ways (bits flipped, bytes overwritten, inserted, deleted or repeated, the
//! file cut short, quotes, separators, line breaks, NULs and invalid UTF-8 dropped in) and each
//! is imported. No input may panic or abort; each is either accepted or rejected with errors
//! that name the file, and a rejected run commits nothing.
//!
//! The cases come from a fixed seed, so a run repeats; it stops after `RXCUBE_FUZZ_SECS`
//! seconds (20 by default; CI runs it with the default) or `RXCUBE_FUZZ_CASES` cases. Before
//! each case its input is copied to `fuzz-last.<ext>` under Cargo's test temporary directory:
//! after an abort (which no test can catch) that file is the reproducer, and the seed of the
//! case is in its sibling `fuzz-last.txt`. `RXCUBE_FUZZ_SHOW=1` prints each case's outcome.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rxcube_ingest::{ImportOptions, NoProgress, Status, import};
use rxcube_model::TableName;
use rxcube_warehouse::Warehouse;

const PHARMACIES: &str = "\
pharmacy_id,valid_from,valid_to,name,local_area,service_area,region,timezone,employees,hours_per_week
RX101,2024-01-01,,Main St,LA-1,SA-1,West,America/Los_Angeles,12,84
00423,2024-01-01,2024-06-30,\"Elm St, North\",LA-2,SA-1,West,,30,168
";

fn fills_csv() -> String {
    let mut csv = String::from("rx_id,fill_no,pharmacy_id,channel,received_at,filled_at\n");
    for i in 0..600 {
        let (ph, channel) = if i % 3 == 0 {
            ("00423", "crp")
        } else {
            ("RX101", "local")
        };
        csv.push_str(&format!(
            "T{i:05},{},{ph},{channel},2024-03-{:02}T09:{:02}:00-08:00,2024-03-{:02}T10:{:02}:00-08:00\n",
            i % 2,
            1 + i % 28,
            i % 60,
            1 + i % 28,
            (i * 7) % 60
        ));
    }
    csv
}

/// One way of damaging a file.
fn damage(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>) -> &'static str {
    const SPECIAL: &[&[u8]] = &[
        b"\"",
        b",",
        b"\n",
        b"\r",
        b"\r\n",
        b"\0",
        b"\xff",
        b"\xc3",
        b"\xef\xbb\xbf",
        b"\\",
        b"\"\"",
        b"9999999999999999999999",
        b"-",
        b"NaN",
        b"\t",
    ];
    if bytes.is_empty() {
        bytes.push(rng.random());
        return "grown from nothing";
    }
    let len = bytes.len();
    match rng.random_range(0..8) {
        0 => {
            for _ in 0..rng.random_range(1..=8) {
                let i = rng.random_range(0..len);
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
            "bits flipped"
        }
        1 => {
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=16).min(len - i);
            for b in &mut bytes[i..i + n] {
                *b = rng.random();
            }
            "bytes overwritten"
        }
        2 => {
            bytes.truncate(rng.random_range(0..len));
            "cut short"
        }
        3 => {
            let i = rng.random_range(0..=len);
            let n = rng.random_range(1..=32);
            let noise: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            bytes.splice(i..i, noise);
            "bytes inserted"
        }
        4 => {
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=64).min(len - i);
            bytes.drain(i..i + n);
            "bytes deleted"
        }
        5 => {
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=256).min(len - i);
            let piece = bytes[i..i + n].to_vec();
            let at = rng.random_range(0..=len);
            bytes.splice(at..at, piece);
            "a slice repeated"
        }
        6 => {
            let i = rng.random_range(0..=len);
            let s = SPECIAL[rng.random_range(0..SPECIAL.len())];
            bytes.splice(i..i, s.iter().copied());
            "a special character inserted"
        }
        _ => {
            // A 4-byte field (a Parquet length, offset or count) set to an extreme.
            let i = rng.random_range(0..len.saturating_sub(4).max(1));
            let v: u32 = [0, 1, u32::MAX, i32::MAX as u32, 0x8000_0000][rng.random_range(0..5)];
            for (k, b) in v.to_le_bytes().iter().enumerate() {
                if let Some(slot) = bytes.get_mut(i + k) {
                    *slot = *b;
                }
            }
            "a length set to an extreme"
        }
    }
}

/// The data files of a table, as a Delta write left them: real Parquet (compressed pages,
/// dictionaries, statistics) with the table's columns.
fn data_file(table: &Path) -> PathBuf {
    let mut stack = vec![table.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('_') {
                continue;
            }
            if e.file_type().expect("type").is_dir() {
                stack.push(e.path());
            } else if name.ends_with(".parquet") {
                return e.path();
            }
        }
    }
    panic!("no data file under {}", table.display());
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_csv_and_parquet_files_are_rejected_by_name_and_never_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let warehouse = Warehouse::open(dir.path().join("w").to_str().expect("utf8")).expect("open");
    let options = ImportOptions::default();
    let land = |table: TableName, path: PathBuf| {
        let warehouse = warehouse.clone();
        let options = options.clone();
        async move {
            import(&warehouse, table, &[path], &options, &NoProgress)
                .await
                .expect("import runs")
        }
    };
    let ph = dir.path().join("pharmacies.csv");
    std::fs::write(&ph, PHARMACIES).expect("write");
    assert_eq!(
        land(TableName::Pharmacies, ph.clone()).await.status,
        Status::Accepted
    );
    let fills = dir.path().join("fills.csv");
    std::fs::write(&fills, fills_csv()).expect("write");
    let r = land(TableName::RxFills, fills.clone()).await;
    assert_eq!(
        (r.status, r.inserted),
        (Status::Accepted, 600),
        "{:?}",
        r.errors
    );
    // A seed Parquet file: one that the table's own writer made, read back as an import.
    let parquet = dir.path().join("fills.parquet");
    std::fs::copy(data_file(&dir.path().join("w").join("rx_fills")), &parquet).expect("copy");
    let r = land(TableName::RxFills, parquet.clone()).await;
    assert_eq!(r.status, Status::Accepted, "{:?}", r.errors);

    let seeds: [(TableName, &str, Vec<u8>); 3] = [
        (
            TableName::RxFills,
            "csv",
            std::fs::read(&fills).expect("read"),
        ),
        (TableName::Pharmacies, "csv", PHARMACIES.as_bytes().to_vec()),
        (
            TableName::RxFills,
            "parquet",
            std::fs::read(&parquet).expect("read"),
        ),
    ];
    let budget = Duration::from_secs(env_number("RXCUBE_FUZZ_SECS", 20));
    let max_cases = env_number("RXCUBE_FUZZ_CASES", u64::MAX);
    let last = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let t0 = Instant::now();
    let (mut cases, mut rejected, mut accepted) = (0u64, 0u64, 0u64);
    while t0.elapsed() < budget && cases < max_cases {
        let seed = cases;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (table, ext, original) = &seeds[rng.random_range(0..seeds.len())];
        let mut bytes = original.clone();
        let mut how = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            how.push(damage(&mut rng, &mut bytes));
        }
        let case = format!("case-{seed}.{ext}");
        let path = dir.path().join(&case);
        std::fs::write(&path, &bytes).expect("write");
        std::fs::write(last.join(format!("fuzz-last.{ext}")), &bytes).expect("write");
        std::fs::write(
            last.join("fuzz-last.txt"),
            format!(
                "seed {seed}, table {}, {}\n",
                table.def().name,
                how.join(", ")
            ),
        )
        .expect("write");
        let what = format!("seed {seed} ({}, {})", ext, how.join(", "));
        // A panic inside the import fails this case by name.
        let run = std::panic::AssertUnwindSafe(land_outcome(&warehouse, *table, &path, &options))
            .catch_unwind()
            .await;
        let Ok(outcome) = run else {
            panic!("{what}: the import panicked");
        };
        if std::env::var_os("RXCUBE_FUZZ_SHOW").is_some() {
            eprintln!("{what}: {outcome:?}");
        }
        match outcome {
            Ok((Status::Accepted, _, _)) => accepted += 1,
            Ok((Status::Rejected, errors, version)) => {
                rejected += 1;
                assert!(!errors.is_empty(), "{what}: rejected with no error");
                assert_eq!(version, None, "{what}: a rejected run committed");
                for e in &errors {
                    assert!(
                        e.contains(&case),
                        "{what}: an error does not name the file: {e}"
                    );
                }
            }
            Err(e) => {
                // An import that stops before judging the records names the file too.
                assert!(
                    e.contains(&case),
                    "{what}: the error does not name the file: {e}"
                );
                rejected += 1;
            }
        }
        std::fs::remove_file(&path).ok();
        cases += 1;
    }
    eprintln!(
        "fuzz: {cases} cases in {:.1} s: {accepted} accepted, {rejected} rejected",
        t0.elapsed().as_secs_f64()
    );
    assert!(cases >= 20, "only {cases} cases ran in {budget:?}");
    // The damage is real: most cases are rejected; the table still reads.
    assert!(rejected * 2 > cases, "{rejected} of {cases} rejected");
}

/// The outcome of importing `path`: the status, the errors' one-line forms and the version
/// committed, or the error that stopped the run.
async fn land_outcome(
    warehouse: &Warehouse,
    table: TableName,
    path: &Path,
    options: &ImportOptions,
) -> Result<(Status, Vec<String>, Option<i64>), String> {
    match import(
        warehouse,
        table,
        &[path.to_path_buf()],
        options,
        &NoProgress,
    )
    .await
    {
        Ok(r) => Ok((
            r.status,
            r.errors.iter().map(ToString::to_string).collect(),
            r.version,
        )),
        Err(e) => Err(e.to_string()),
    }
}
