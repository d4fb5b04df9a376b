//! The sqllogictest harness, the way DataFusion tests itself: every `.slt` suite of the cube and
//! of the access layer, discovered from the tree and run in every mode that applies to it, each
//! (suite, mode) one trial. Every suite's answers were worked out by hand in its fixture's README.
//!
//! * `rxcube-cube/tests/slt/*.slt`, the cube's suites, run in three modes:
//!   - `raw`: the cube with no rollups, from the landed tables;
//!   - `rollups`: every rollup built, and every cube relation a statement reads must be served by
//!     one;
//!   - `scoped`: through the session of a user scoped to the division (`division:ALL`), as the
//!     server serves it: the access layer must not change an answer.
//!
//!   Header lines (comments before the first record) choose what a suite runs over:
//!   `# fixture: NAME` (the chain in `rxcube-cube/tests/fixtures/NAME`, default `tiny`),
//!   `# cube: FILE` (a file of `rxcube-cube/tests/fixtures` appended to the built-in `cube.toml`),
//!   `# pay_period_anchor: YYYY-MM-DD` (the anchor in place of the built-in one). The definition
//!   is written to the warehouse (`_rxcube/cube.toml`), as a user would.
//! * `rxcube-access/tests/slt/[FIXTURE/]LEVEL__NODE.slt`, the scopes' suites, run as a user
//!   scoped to `LEVEL:NODE` over the chain `tests/fixtures/FIXTURE` (default the cube's `tiny`),
//!   `raw` and `rollups`.
//!
//! `cargo test --test sqllogictests -- edges` runs the trials whose name holds `edges`;
//! `-- --list` lists every trial.

#[path = "../../rxcube-cube/tests/support/slt_support.rs"]
mod slt_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use libtest_mimic::{Arguments, Failed, Trial};
use rxcube_access::{Principal, Privilege, Scope, Snapshot};
use rxcube_cube::CubeDef;
use sqllogictest::{DBOutput, DefaultColumnType};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Raw,
    Rollups,
    Scoped,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Raw => "raw",
            Mode::Rollups => "rollups",
            Mode::Scoped => "scoped",
        }
    }
}

/// One suite: its file, the chain it runs over, its definition and, for the scopes' suites, the
/// scope it runs as.
#[derive(Debug, Clone)]
struct Suite {
    /// The trial name's prefix: `cube/edges`, `access/small_cells/pharmacy__1`.
    name: String,
    path: PathBuf,
    fixture: PathBuf,
    definition: String,
    scope: Option<Scope>,
}

fn cube_tests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rxcube-cube/tests")
}

fn access_tests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// The `.slt` files under `dir` (and its subdirectories when `deep`), sorted.
fn slt_files(dir: &Path, deep: bool) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() && deep {
            files.extend(slt_files(&path, false));
        } else if path.extension().is_some_and(|e| e == "slt") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// A cube suite, from its header lines.
fn cube_suite(path: PathBuf) -> Result<Suite, String> {
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("utf8 name");
    let mut fixture = "tiny".to_string();
    let mut definition = rxcube_cube::definition::BUILT_IN.to_string();
    for line in text
        .lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
    {
        let Some((key, value)) = line.trim_start_matches('#').split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "fixture" => fixture = value.to_string(),
            "cube" => {
                let file = cube_tests().join("fixtures").join(value);
                let extra = std::fs::read_to_string(&file)
                    .map_err(|e| format!("{}: cube: {}: {e}", path.display(), file.display()))?;
                definition = format!("{definition}\n{extra}");
            }
            "pay_period_anchor" => {
                let built_in = "pay_period_anchor = \"2024-01-07\"";
                if !definition.contains(built_in) {
                    return Err(format!("{}: the built-in anchor moved", path.display()));
                }
                definition =
                    definition.replace(built_in, &format!("pay_period_anchor = \"{value}\""));
            }
            _ => {}
        }
    }
    CubeDef::parse(&definition, stem).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Suite {
        name: format!("cube/{stem}"),
        fixture: cube_tests().join("fixtures").join(&fixture),
        path,
        definition,
        scope: None,
    })
}

/// A scope's suite: `[FIXTURE/]LEVEL__NODE.slt`.
fn scope_suite(path: PathBuf) -> Result<Suite, String> {
    let root = access_tests().join("slt");
    let relative = path.strip_prefix(&root).expect("under tests/slt");
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("utf8 name");
    let fixture = match relative.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => access_tests().join("fixtures").join(dir),
        None => cube_tests().join("fixtures/tiny"),
    };
    let (level, node) = stem
        .split_once("__")
        .ok_or_else(|| format!("{}: a scope suite is named LEVEL__NODE.slt", path.display()))?;
    let scope: Scope = format!("{level}:{node}")
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Suite {
        name: format!("access/{}", relative.with_extension("").display()),
        fixture,
        path,
        definition: rxcube_cube::definition::BUILT_IN.to_string(),
        scope: Some(scope),
    })
}

struct Db {
    ctx: SessionContext,
    /// Every cube relation must be served by a rollup.
    from_rollups: bool,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DataFusionError> {
        let (batches, served) = rxcube_cube::run_statement(&self.ctx, sql).await?;
        if self.from_rollups && !served.iter().all(|s| s.contains(": rollup ")) {
            return Err(DataFusionError::Plan(format!(
                "not served by a rollup: {served:?}"
            )));
        }
        slt_support::output(&batches)
    }

    async fn shutdown(&mut self) {}
}

/// Lands the suite's chain, builds its rollups (in `rollups` mode) and runs the file in the
/// session of the mode.
async fn run(suite: &Suite, mode: Mode) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let warehouse = slt_support::land(&suite.fixture, &dir.path().join("w")).await;
    let mut def = CubeDef::parse(&suite.definition, &suite.name).map_err(|e| e.to_string())?;
    if suite.definition != rxcube_cube::definition::BUILT_IN {
        let file = dir.path().join("w").join(rxcube_cube::WAREHOUSE_DEFINITION);
        std::fs::create_dir_all(file.parent().expect("parent")).map_err(|e| e.to_string())?;
        std::fs::write(&file, &suite.definition).map_err(|e| e.to_string())?;
    }
    if mode == Mode::Rollups {
        rxcube_cube::rollup::run(
            &warehouse,
            Arc::new(def.clone()),
            rxcube_cube::rollup::Mode::Build,
            &mut |_, _| {},
        )
        .await
        .map_err(|e| format!("building the rollups: {e}"))?;
    }
    let ctx = match (&suite.scope, mode) {
        (None, Mode::Raw) => {
            def.rollups.clear();
            rxcube_cube::session(&warehouse, def)
                .await
                .map_err(|e| e.to_string())?
        }
        (None, Mode::Rollups) => rxcube_cube::session(&warehouse, def)
            .await
            .map_err(|e| e.to_string())?,
        (scope, _) => {
            let snapshot = Snapshot::load(&warehouse)
                .await
                .map_err(|e| format!("snapshot: {e}"))?;
            let scope = scope
                .clone()
                .unwrap_or_else(|| "division:ALL".parse().expect("scope"));
            snapshot
                .org
                .check(&scope)
                .map_err(|e| format!("scope {scope}: {e}"))?;
            let principal = Principal {
                name: "slt_user".into(),
                scope,
                privileges: BTreeSet::from([Privilege::Query]),
            };
            snapshot
                .user_session(&principal)
                .await
                .map_err(|e| format!("user session: {e}"))?
        }
    };
    let from_rollups = mode == Mode::Rollups;
    let mut runner = sqllogictest::Runner::new(move || {
        let ctx = ctx.clone();
        async move { Ok(Db { ctx, from_rollups }) }
    });
    runner
        .run_file_async(&suite.path)
        .await
        .map_err(|e| format!("{}: {e}", suite.path.display()))
}

fn trials() -> Result<Vec<Trial>, String> {
    let mut suites = Vec::new();
    for path in slt_files(&cube_tests().join("slt"), false) {
        let suite = cube_suite(path)?;
        suites.extend([Mode::Raw, Mode::Rollups, Mode::Scoped].map(|m| (suite.clone(), m)));
    }
    for path in slt_files(&access_tests().join("slt"), true) {
        let suite = scope_suite(path)?;
        suites.extend([Mode::Raw, Mode::Rollups].map(|m| (suite.clone(), m)));
    }
    Ok(suites
        .into_iter()
        .map(|(suite, mode)| {
            Trial::test(format!("{}::{}", suite.name, mode.name()), move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| Failed::from(e.to_string()))?;
                runtime.block_on(run(&suite, mode)).map_err(Failed::from)
            })
        })
        .collect())
}

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    match trials() {
        Ok(trials) => libtest_mimic::run(&args, trials).exit_code(),
        Err(e) => {
            eprintln!("sqllogictests: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
