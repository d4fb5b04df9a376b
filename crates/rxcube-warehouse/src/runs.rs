//! What an import killed with `kill -9` leaves behind, and its repair by the next import.
//!
//! A killed import never leaves a table half-changed (its commit is one atomic step), but it can
//! leave two things:
//!
//! - **A commit with no log row**, when it was killed between its table commit and its append
//!   to `system.import_log`. Every import commit carries the run's id and summary in its
//!   `commitInfo` ([`RUN_KEY`] and the other `rxcube.*` keys), so the log row can be written
//!   from the commit: the table's history is the truth, the log follows it.
//! - **Data files no commit references**, written by Delta before the commit that never came
//!   (`part-….parquet` in the table's folder). No version of the table reads them; they are
//!   deleted.
//!
//! Both repairs need to know that the run is dead, not still between its write and its commit
//! or log. On a local warehouse every import holds the warehouse's import lock
//! (`_rxcube/import.lock`) shared while it runs, and an import that can take it exclusively is
//! alone: then every run that left something is gone, and it repairs everything before it
//! starts ([`Warehouse::begin_import`]). A lock dies with its process, so a killed run never
//! holds it. On an object store there is no lock: a commit unlogged for
//! [`UNLOGGED_AFTER`] is logged, and uncommitted files are left (they are never read).

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::TryStreamExt;
use rxcube_model::TableName;
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::catalog::{new_session, register_named};
use crate::system::{ImportLogEntry, SystemTable};
use crate::{Result, Warehouse, WarehouseError};

/// The commit metadata key of the import run that made a commit.
pub const RUN_KEY: &str = "rxcube.import_run";

/// On an object store (no lock), a commit of a run with no log row after this long is taken
/// to be a killed run's.
pub const UNLOGGED_AFTER: Duration = Duration::from_secs(15 * 60);

/// The recent commits of each table looked at for runs with no log row.
const RECENT_COMMITS: usize = 20;

/// Held by an import while it runs (a shared hold on the warehouse's import lock).
#[derive(Debug)]
pub struct ImportGuard {
    _lock: Option<File>,
}

/// What [`Warehouse::repair`] did.
#[derive(Debug, Default)]
pub struct Repair {
    /// The log rows written for runs killed after their commit.
    pub logged: Vec<ImportLogEntry>,
    /// The data files removed that no commit referenced.
    pub removed: Vec<Uncommitted>,
}

/// A file under a table's folder that no commit references, with its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncommitted {
    pub table: &'static str,
    /// Relative to the table's folder.
    pub path: String,
}

impl Warehouse {
    /// Begins an import: takes the import lock shared for the guard's lifetime, after repairing
    /// what killed imports left when no other import runs (see the module). Problems of the
    /// repair are logged as warnings; they never stop the import.
    pub async fn begin_import(&self) -> ImportGuard {
        let Ok(root) = self.root().to_file_path() else {
            if let Err(e) = self.repair(None, Some(UNLOGGED_AFTER)).await {
                warn!(error = %e, "cannot check the import log against the tables");
            }
            return ImportGuard { _lock: None };
        };
        let path = root.join("_rxcube").join("import.lock");
        let file = match open_lock(&path) {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, path = %path.display(), "cannot open the import lock");
                return ImportGuard { _lock: None };
            }
        };
        if file.try_lock().is_ok() {
            // Alone: every run that left something behind is dead.
            let t0 = std::time::Instant::now();
            let repaired = self.repair(Some(&root), None).await;
            debug!(
                elapsed_ms = t0.elapsed().as_millis() as u64,
                "repair checked"
            );
            match repaired {
                Ok(r) => {
                    for e in &r.logged {
                        info!(run = %e.run_id, table = %e.table_name, "logged a run killed after its commit");
                    }
                    if !r.removed.is_empty() {
                        info!(
                            files = r.removed.len(),
                            "removed files of killed imports that no commit references"
                        );
                    }
                }
                Err(e) => warn!(error = %e, "cannot repair what killed imports left"),
            }
            let _ = file.unlock();
        }
        let shared = tokio::task::spawn_blocking(move || file.lock_shared().map(|()| file)).await;
        match shared {
            Ok(Ok(file)) => ImportGuard { _lock: Some(file) },
            Ok(Err(e)) => {
                warn!(error = %e, "cannot take the import lock");
                ImportGuard { _lock: None }
            }
            Err(e) => {
                warn!(error = %e, "cannot take the import lock");
                ImportGuard { _lock: None }
            }
        }
    }

    /// Repairs what killed imports left, reading each contract table once: appends a log row
    /// for every recent import commit whose run has none (only commits older than `min_age`,
    /// if given), built from the commit's metadata; and, for the local warehouse at `root`,
    /// deletes the data files under each table's folder that no commit references (neither
    /// the current version's files nor the files removed by a commit that the log still
    /// keeps). Only for an import that is alone (or, without `root`, with `min_age`).
    pub async fn repair(&self, root: Option<&Path>, min_age: Option<Duration>) -> Result<Repair> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut repair = Repair::default();
        let mut unlogged: Vec<ImportLogEntry> = Vec::new();
        for t in TableName::ALL {
            let name = t.def().name;
            let dir = root.map(|r| r.join(name));
            if dir.as_ref().is_some_and(|d| !d.is_dir()) {
                continue;
            }
            let table = self.load_named(name).await?;
            if let Some(table) = &table
                && let Some(latest) = table.version()
            {
                let infos: Vec<_> = table
                    .history(Some(RECENT_COMMITS))
                    .try_collect()
                    .await
                    .map_err(|source| self.delta_err(name, source))?;
                // Newest first: the i-th is version latest - i.
                for (i, c) in infos.into_iter().enumerate() {
                    let Some(run) = c.info.get(RUN_KEY).and_then(Value::as_str) else {
                        continue;
                    };
                    let at_ms = c.timestamp.unwrap_or(now_ms);
                    if !is_run_id(run)
                        || min_age.is_some_and(|age| now_ms - at_ms < age.as_millis() as i64)
                    {
                        continue;
                    }
                    let version = latest as i64 - i as i64;
                    unlogged.push(entry_from_commit(name, run, version, at_ms, &c.info));
                }
            }
            if let Some(dir) = &dir {
                for path in self.uncommitted_files(name, dir, table.as_ref()).await? {
                    let file = dir.join(&path);
                    match std::fs::remove_file(&file) {
                        Ok(()) => repair.removed.push(Uncommitted { table: name, path }),
                        Err(e) => {
                            warn!(error = %e, path = %file.display(), "cannot remove an uncommitted file");
                        }
                    }
                }
            }
        }
        debug!(candidates = unlogged.len(), "tables read for repair");
        if !unlogged.is_empty() {
            let logged = self
                .logged_runs(unlogged.iter().map(|e| e.run_id.as_str()))
                .await?;
            unlogged.retain(|e| !logged.contains(&e.run_id));
            if !unlogged.is_empty() {
                self.append_import_log(&unlogged, &[]).await?;
            }
        }
        repair.logged = unlogged;
        Ok(repair)
    }

    /// Which of `runs` have a row in the import log.
    async fn logged_runs<'a>(
        &self,
        runs: impl Iterator<Item = &'a str>,
    ) -> Result<HashSet<String>> {
        let ctx = new_session();
        let log = SystemTable::ImportLog;
        if register_named(&ctx, self, "system", log.name(), log.location(), None)
            .await?
            .is_none()
        {
            return Ok(HashSet::new());
        }
        let list = runs
            .map(|r| format!("'{r}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let query_err = |source| WarehouseError::Query {
            table: format!("system.{}", log.name()),
            source,
        };
        let batches = ctx
            .sql(&format!(
                "SELECT DISTINCT run_id FROM system.{} WHERE run_id IN ({list})",
                log.name()
            ))
            .await
            .map_err(query_err)?
            .collect()
            .await
            .map_err(query_err)?;
        let mut out = HashSet::new();
        for b in &batches {
            let ids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)
                .map_err(|e| query_err(e.into()))?;
            if let Some(ids) = ids.as_any().downcast_ref::<arrow::array::StringArray>() {
                out.extend(ids.iter().flatten().map(str::to_string));
            }
        }
        Ok(out)
    }

    /// The `.parquet` files under `dir`, the folder of `table` (`None`: never committed),
    /// that no commit references, relative to it.
    async fn uncommitted_files(
        &self,
        name: &str,
        dir: &Path,
        table: Option<&deltalake::DeltaTable>,
    ) -> Result<Vec<String>> {
        let mut referenced: HashSet<String> = HashSet::new();
        if let Some(table) = table {
            let state = table.snapshot().map_err(|s| self.delta_err(name, s))?;
            referenced.extend(state.log_data().iter().map(|f| f.path().into_owned()));
            let log_store = table.log_store();
            let tombstones: Vec<_> = state
                .all_tombstones(log_store.as_ref())
                .try_collect()
                .await
                .map_err(|s| self.delta_err(name, s))?;
            referenced.extend(tombstones.iter().map(|r| r.path().into_owned()));
        }
        let mut files = Vec::new();
        data_files(dir, &mut PathBuf::new(), &mut files).map_err(|e| WarehouseError::Location {
            location: dir.display().to_string(),
            reason: format!("cannot list the table's files: {e}"),
        })?;
        files.retain(|f| !referenced.contains(f));
        Ok(files)
    }

    fn delta_err(&self, table: &str, source: deltalake::DeltaTableError) -> WarehouseError {
        WarehouseError::Delta {
            table: table.to_string(),
            url: self.table_url(table).to_string(),
            source,
        }
    }
}

fn open_lock(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
}

/// The `.parquet` files under `dir` (relative, `/`-separated), outside hidden folders and
/// those starting with `_` (`_delta_log`), as Delta's own vacuum sees them.
fn data_files(dir: &Path, rel: &mut PathBuf, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir.join(&*rel))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('_') || name.starts_with('.') {
            continue;
        }
        rel.push(&*name);
        if entry.file_type()?.is_dir() {
            data_files(dir, rel, out)?;
        } else if name.ends_with(".parquet") {
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
        }
        rel.pop();
    }
    Ok(())
}

/// A run id as imports make them (a UUID): nothing else is put into a query.
fn is_run_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// The log row of the run that made a commit, from the commit's metadata.
fn entry_from_commit(
    table: &str,
    run: &str,
    version: i64,
    at_ms: i64,
    info: &std::collections::HashMap<String, Value>,
) -> ImportLogEntry {
    let u = |k: &str| info.get(k).and_then(Value::as_u64);
    let metric = |k: &str| {
        info.get("operationMetrics")
            .and_then(|m| m.get(k))
            .and_then(Value::as_u64)
    };
    let files = match info.get("rxcube.files") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    ImportLogEntry {
        run_id: run.to_string(),
        started_at: info
            .get("rxcube.started_at")
            .and_then(Value::as_i64)
            .unwrap_or(at_ms * 1000),
        finished_at: at_ms * 1000,
        table_name: table.to_string(),
        file: files,
        status: "accepted".into(),
        start_at: u("rxcube.start_at").unwrap_or(1),
        records_read: u("rxcube.records_read").unwrap_or(0),
        inserted: u("rxcube.inserted")
            .or_else(|| metric("num_added_rows"))
            .unwrap_or(0),
        replaced: u("rxcube.replaced").unwrap_or(0),
        unchanged: u("rxcube.unchanged").unwrap_or(0),
        rejected: 0,
        warnings: u("rxcube.warnings").unwrap_or(0),
        table_version: Some(version),
        message: Some(
            "logged by a later import: this run was stopped after its commit, before its log \
             row (the details of its warnings were not kept)"
                .into(),
        ),
    }
}
