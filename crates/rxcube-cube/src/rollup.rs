//! Materialized rollups: the cube's partial states, stored, kept fresh, and chosen per query.
//!
//! A rollup (`[[rollup]]` in `cube.toml`) holds, per pharmacy, org version and period of its
//! grain, only *mergeable* states: the sums of the additive components, an exact histogram per
//! median ([`crate::hist`]), and the fact rows of each source. Any coarser cell, at any org
//! level, is a merge of such rows, so a query answered from a rollup gives the same numbers as
//! the raw path. Org attributes are joined at query time from the org version (`org_from`),
//! so renaming or regrouping areas needs no rebuild.
//!
//! Each rollup is a Delta table under `_rxcube/rollups/<name>`. The commit that writes it
//! records its *watermark*: the version of every table it was computed from and a fingerprint
//! of its definition. A session registers the rollups as `rollups.<name>` and compares each
//! watermark with the versions it reads. A rollup computed from exactly those versions serves
//! queries as stored ([`Rollups::choose`]). A stale one serves *caught up*: the commits after
//! its watermark bound the part of it they touched (as for a refresh, below), and
//! `rollups.<name>` becomes its stored rows outside that part and the raw tables' rows inside
//! it, in one plan ([`RollupState::catch_up`]); `EXPLAIN` says so. One whose change cannot be
//! bounded is passed over (and `EXPLAIN` says why), so a rollup is never silently behind.
//!
//! [`run`] builds and refreshes them. A refresh reads the Delta log after the watermark: the
//! files each import added or removed bound the stretch of time it touched, and only the
//! rollup periods overlapping it are recomputed; a change to a pharmacy's zone or org dates,
//! or to its peer group's target minutes, recomputes that pharmacy's rows. Rollups are built
//! finest first, and a coarser one is merged from a finer one just written. Every write is one
//! Delta commit that replaces the affected rows and records the new watermark together, so a
//! reader sees the old rollup or the new one, and a killed job leaves the old one intact (and
//! stale, until the next refresh).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use rxcube_warehouse::Warehouse;
use rxcube_warehouse::catalog::{Versions, register_delta, register_named};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::definition::{CubeDef, MetricKind, MetricRef, RollupDef, SmallCells};
use crate::sql::{
    ContentFrom, Part, RollupSource, Slice, rollup_content_sql, rollup_sets, rollup_sources,
};
use crate::time::{Grain, period_start};

/// The schema holding the rollup tables (`rollups.<name>`).
pub const ROLLUP_SCHEMA: &str = "rollups";
/// Where the watermark is kept in the commit that writes a rollup.
const WATERMARK_KEY: &str = "rxcube.rollup";
/// The widest gap between local wall-clock time and UTC, rounded up (as in [`crate::sql`]).
const MAX_OFFSET: i64 = 15;
/// The longest shift: payroll rows are placed by `shift_start`, and touch hours to its end.
const MAX_SHIFT_HOURS: i64 = 48;

/// Where a rollup is stored, relative to the warehouse root.
pub fn location(name: &str) -> String {
    format!("_rxcube/rollups/{name}")
}

/// What a rollup was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The fingerprint of the rollup's definition ([`fingerprint`]).
    pub definition: String,
    /// The version of each table it depends on (absent: never imported).
    pub sources: BTreeMap<String, i64>,
    /// When the job that wrote it started (RFC 3339, UTC).
    pub built_at: String,
}

/// `table@version ...`.
fn versions_text(versions: &BTreeMap<String, i64>) -> String {
    versions
        .iter()
        .map(|(t, v)| format!("{t}@{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Watermark {
    /// `table@version ...`.
    pub fn sources_text(&self) -> String {
        versions_text(&self.sources)
    }
}

/// Registers version `version` of rollup `name` as `rollups.<name>` in `ctx`.
async fn register_rollup(
    ctx: &SessionContext,
    warehouse: &Warehouse,
    name: &str,
    version: i64,
) -> Result<()> {
    register_named(
        ctx,
        warehouse,
        ROLLUP_SCHEMA,
        name,
        &location(name),
        Some(version),
    )
    .await
    .map_err(df_err)?;
    Ok(())
}

/// A declared rollup as one session sees it.
#[derive(Debug, Clone)]
pub struct RollupState {
    pub def: RollupDef,
    /// The rollup table's version, `None` when it was never built.
    pub version: Option<i64>,
    pub watermark: Option<Watermark>,
    /// Why it cannot serve this session's snapshot; empty when it is fresh.
    pub stale: Vec<String>,
    /// When it fell behind: the commit time of the oldest table version it does not hold
    /// (the first import after its watermark). `None` when it is fresh, never built, or built
    /// for another definition.
    pub behind_since: Option<DateTime<Utc>>,
    /// A stale rollup that still answers queries: what of it this session recomputes from the
    /// raw tables (the periods and pharmacies the commits since its watermark touched, in
    /// words), `rollups.<name>` being its stored rows outside that part and the raw facts'
    /// rows inside it. `None` when fresh, or when the change cannot be bounded.
    pub catch_up: Option<String>,
}

impl RollupState {
    /// Whether it was computed from exactly the versions this session reads.
    pub fn is_fresh(&self) -> bool {
        self.version.is_some() && self.stale.is_empty()
    }

    /// Whether it answers queries of this session: fresh, or stale and caught up with the raw
    /// facts of what changed ([`Self::catch_up`]).
    pub fn serves(&self) -> bool {
        self.is_fresh() || (self.version.is_some() && self.catch_up.is_some())
    }

    /// `rollups.<name>`.
    pub fn table(&self) -> String {
        qualified(&self.def)
    }

    /// One line: which rollup, its version and what it was computed from, and what of it is
    /// recomputed from the raw tables when it is caught up.
    pub fn describe(&self) -> String {
        let mut s = format!("rollup {}", self.def.name);
        if let (Some(v), Some(w)) = (self.version, &self.watermark) {
            let _ = write!(
                s,
                " (version {v}, built {} from {})",
                w.built_at,
                w.sources_text()
            );
        }
        if let (false, Some(part)) = (self.is_fresh(), &self.catch_up) {
            let _ = write!(
                s,
                " + raw tables for {part} (changed since: {})",
                self.stale.join("; ")
            );
        }
        s
    }
}

/// The rollups of one session, fresh or not.
#[derive(Debug, Clone, Default)]
pub struct Rollups {
    pub states: Vec<RollupState>,
    /// The snapshot the session reads: every landed table's version and every rollup's
    /// (`table@version ...`), the key of its cached results ([`crate::cache`]).
    pub snapshot: String,
}

/// The name of the system relation listing the rollups and how far behind each is.
pub const STATUS_TABLE: &str = "rollups";

impl Rollups {
    /// `system.rollups`: one row per declared rollup of this snapshot, with its version, when
    /// it was built, whether it is fresh (and if not, why), since when it has been behind,
    /// what of it queries recompute from the raw tables meanwhile (`caught_up`) and
    /// `lag_seconds`, how long it has been behind at the time of the query (0 when fresh).
    pub fn status_table(&self, ctx: &SessionContext) -> Result<Arc<dyn TableProvider>> {
        let utc = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("rollup", DataType::Utf8, false),
            Field::new("grain", DataType::Utf8, false),
            Field::new("version", DataType::Int64, true),
            Field::new("built_at", utc(), true),
            Field::new("fresh", DataType::Boolean, false),
            Field::new("stale", DataType::Utf8, true),
            Field::new("behind_since", utc(), true),
            Field::new("caught_up", DataType::Utf8, true),
        ]));
        let states = &self.states;
        let built_at = |s: &RollupState| {
            let w = s.watermark.as_ref()?;
            DateTime::parse_from_rfc3339(&w.built_at)
                .ok()
                .map(|t| t.timestamp_millis())
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                states.iter().map(|s| s.def.name.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                states.iter().map(|s| s.def.grain.as_str()),
            )),
            Arc::new(Int64Array::from_iter(states.iter().map(|s| s.version))),
            Arc::new(
                TimestampMillisecondArray::from_iter(states.iter().map(built_at))
                    .with_timezone("UTC"),
            ),
            Arc::new(BooleanArray::from_iter(
                states.iter().map(|s| Some(s.is_fresh())),
            )),
            Arc::new(StringArray::from_iter(
                states
                    .iter()
                    .map(|s| (!s.stale.is_empty()).then(|| s.stale.join("; "))),
            )),
            Arc::new(
                TimestampMillisecondArray::from_iter(
                    states
                        .iter()
                        .map(|s| s.behind_since.map(|t| t.timestamp_millis())),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter(
                states
                    .iter()
                    .map(|s| (!s.is_fresh()).then(|| s.catch_up.clone()).flatten()),
            )),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let table = MemTable::try_new(schema, vec![vec![batch]])?;
        // The lag is measured when the relation is read, not when the snapshot was taken.
        let view = ctx.read_table(Arc::new(table))?.select_exprs(&[
            "rollup",
            "grain",
            "version",
            "built_at",
            "fresh",
            "stale",
            "behind_since",
            "caught_up",
            "CASE WHEN fresh THEN CAST(0 AS BIGINT) \
             ELSE to_unixtime(now()) - to_unixtime(behind_since) END AS lag_seconds",
        ])?;
        Ok(view.into_view())
    }
}

/// How a slice of `cube.metrics` is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// From this rollup (`rollups.<name>`) at this grain; the note says which and how fresh.
    Rollup {
        table: String,
        grain: Grain,
        note: String,
    },
    /// From the landed tables, and why no rollup served.
    Raw { reason: String },
}

impl Choice {
    /// What `EXPLAIN` and result metadata say about it.
    pub fn note(&self) -> String {
        match self {
            Choice::Rollup { note, .. } => note.clone(),
            Choice::Raw { reason } => format!("raw tables ({reason})"),
        }
    }
}

/// The tables a rollup is computed from.
pub fn dependencies(def: &CubeDef, rollup: &RollupDef) -> Vec<&'static str> {
    let mut tables = vec!["pharmacies"];
    for source in rollup_sources(def, rollup) {
        match source {
            "fills" => tables.extend(["rx_fills", "peer_groups"]),
            "sales" => tables.push("pos"),
            "surveys" => tables.push("surveys"),
            _ => tables.push("payroll"),
        }
    }
    tables.sort_unstable();
    tables.dedup();
    tables
}

/// A fingerprint of everything a rollup's rows depend on in the definition: its grain and
/// measures, their definitions, and the time settings.
pub fn fingerprint(def: &CubeDef, rollup: &RollupDef) -> String {
    let (components, medians) = def.rollup_measures(rollup);
    let mut h = Sha256::new();
    // The storage layout's version: a new layout makes every rollup stale.
    h.update(format!("layout 3|{:?}|{:?}", rollup.grain, def.time));
    for c in components {
        h.update(format!(
            "|{}:{}:{}:{:?}",
            c.name, c.source, c.value, c.filter
        ));
    }
    for m in medians {
        h.update(format!(
            "|{}:{:?}:{:?}:{:?}",
            m.name, m.source, m.value, m.filter
        ));
    }
    for set in rollup_sets(def, rollup) {
        h.update(format!("|set {} keep {}", set.name, set.keep));
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn df_err(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl Rollups {
    /// Registers each declared rollup of `def` that exists in `warehouse` as `rollups.<name>`
    /// in `ctx`, and judges it against `versions`, the versions `ctx` reads.
    pub async fn load(
        ctx: &SessionContext,
        warehouse: &Warehouse,
        def: &CubeDef,
        versions: &Versions,
    ) -> Result<Self> {
        let mut states = Vec::new();
        for r in &def.rollups {
            let mut state = RollupState {
                def: r.clone(),
                version: None,
                watermark: None,
                stale: Vec::new(),
                behind_since: None,
                catch_up: None,
            };
            // One load: the version registered is the version whose watermark is read.
            let loc = location(&r.name);
            let table = warehouse.load_named(&loc).await.map_err(df_err)?;
            let committed = match &table {
                Some(t) => warehouse.commit_info(t, &loc).await.map_err(df_err)?,
                None => None,
            };
            match (table, committed) {
                (Some(table), Some((version, info))) => {
                    register_delta(ctx, ROLLUP_SCHEMA, &r.name, &table)
                        .await
                        .map_err(df_err)?;
                    state.version = Some(version);
                    state.watermark = info
                        .get(WATERMARK_KEY)
                        .and_then(|w| serde_json::from_value(w.clone()).ok());
                    state.stale = staleness(def, r, state.watermark.as_ref(), versions);
                    if let Some(w) = &state.watermark
                        && !state.stale.is_empty()
                    {
                        state.behind_since = behind_since(warehouse, def, r, w, versions).await?;
                    }
                }
                _ => state.stale.push("never built".to_string()),
            }
            states.push(state);
        }
        // Stale rollups catch up finest first, so that a coarser one merges its changed part
        // from a finer one that already serves this snapshot instead of the raw facts.
        let mut order: Vec<usize> = (0..states.len()).collect();
        order.sort_by_key(|&i| states[i].def.grain);
        for i in order {
            let state = &states[i];
            let (Some(w), false) = (&state.watermark, state.stale.is_empty()) else {
                continue;
            };
            let finer = states
                .iter()
                .filter(|f| f.serves() && finer_source(def, &f.def, &state.def))
                .max_by_key(|f| f.def.grain)
                .map(|f| f.def.clone());
            let part = catch_up(ctx, warehouse, def, &state.def, w, versions, finer).await?;
            states[i].catch_up = part;
        }
        let rollup_versions = states
            .iter()
            .filter_map(|s| Some((s.table(), s.version?)))
            .collect();
        Ok(Self {
            states,
            snapshot: format!(
                "{} {} {}",
                warehouse.root(),
                versions_text(versions),
                versions_text(&rollup_versions)
            ),
        })
    }

    pub fn get(&self, name: &str) -> Option<&RollupState> {
        self.states.iter().find(|s| s.def.name == name)
    }

    /// The rollup answering `slice` exactly with the fewest rows: fresh, at a grain that
    /// rolls into every grain asked for, holding every measure the metrics need. The coarsest
    /// such grain wins (fewer rows), then the one with fewer measures.
    pub fn choose(&self, def: &CubeDef, slice: &Slice) -> Choice {
        if self.states.is_empty() {
            return Choice::Raw {
                reason: "the cube definition declares no rollups".into(),
            };
        }
        let mut reasons = Vec::new();
        let mut best: Option<&RollupState> = None;
        for s in &self.states {
            let name = &s.def.name;
            if !s.serves() {
                reasons.push(format!("{name}: {}", s.stale.join("; ")));
                continue;
            }
            if let Some(g) = slice.grains.iter().find(|g| !s.def.grain.rolls_into(**g)) {
                reasons.push(format!(
                    "{name}: its grain {} does not roll into {}",
                    s.def.grain.as_str(),
                    g.as_str()
                ));
                continue;
            }
            if let Some(r) = coarser_than_an_atom(def, &s.def, slice) {
                reasons.push(format!(
                    "{name}: its grain {} is coarser than the atom {} of the small-cell rule \
                     for {}",
                    s.def.grain.as_str(),
                    r.atom_name(),
                    r.source
                ));
                continue;
            }
            if let Some(m) = missing_measure(def, &s.def, slice) {
                reasons.push(format!("{name}: it does not keep {m}"));
                continue;
            }
            // The coarsest grain, then a fresh one over one caught up, then fewer measures.
            let key = |r: &RollupState| (r.def.grain, r.is_fresh(), measure_count(def, &r.def));
            if best.is_none_or(|b| key(s) > key(b)) {
                best = Some(s);
            }
        }
        match best {
            Some(s) => Choice::Rollup {
                table: s.table(),
                grain: s.def.grain,
                note: s.describe(),
            },
            None => Choice::Raw {
                reason: format!("no rollup answers it: {}", reasons.join("; ")),
            },
        }
    }
}

fn measure_count(def: &CubeDef, r: &RollupDef) -> std::cmp::Reverse<usize> {
    let (c, m) = def.rollup_measures(r);
    std::cmp::Reverse(c.len() + m.len())
}

/// Under small-cell protection, a rule suppressing a metric of `slice` whose atoms are finer
/// than `rollup`'s rows: the rows cannot tell which atoms are small.
fn coarser_than_an_atom<'a>(
    def: &'a CubeDef,
    rollup: &RollupDef,
    slice: &Slice,
) -> Option<&'a SmallCells> {
    if !slice.protect {
        return None;
    }
    slice
        .metrics
        .iter()
        .flat_map(|m| def.small_cell_rules_of(m))
        .find(|r| r.atom.is_some_and(|a| !rollup.grain.rolls_into(a)))
}

/// The first measure `slice` needs that `rollup` does not keep: the metrics' own, and under
/// small-cell protection the count components of the rules that suppress them (a rule counting
/// distinct values has its sets in every rollup that reads its source).
fn missing_measure(def: &CubeDef, rollup: &RollupDef, slice: &Slice) -> Option<String> {
    let metrics = &slice.metrics;
    let (components, medians) = def.rollup_measures(rollup);
    if slice.protect {
        for m in metrics {
            for r in def.small_cell_rules_of(m) {
                if let Some(c) = &r.count
                    && !components.iter().any(|x| x.name == *c)
                {
                    return Some(c.clone());
                }
            }
        }
    }
    for m in metrics {
        match def.lookup(m) {
            Some(MetricRef::Defined(d))
                if d.kind == MetricKind::Median && !medians.iter().any(|x| x.name == d.name) =>
            {
                return Some(d.name.clone());
            }
            Some(MetricRef::Defined(d)) if d.kind == MetricKind::Median => {}
            Some(_) => {
                for c in def.components_of(m) {
                    if !components.iter().any(|x| x.name == c.name) {
                        return Some(c.name.clone());
                    }
                }
            }
            None => {}
        }
    }
    None
}

/// Why a rollup with `watermark` does not match the snapshot `versions`.
fn staleness(
    def: &CubeDef,
    rollup: &RollupDef,
    watermark: Option<&Watermark>,
    versions: &Versions,
) -> Vec<String> {
    let Some(w) = watermark else {
        return vec!["its commit carries no watermark".to_string()];
    };
    let mut why = Vec::new();
    if w.definition != fingerprint(def, rollup) {
        why.push("it was built for another definition or storage layout".to_string());
    }
    for t in dependencies(def, rollup) {
        let (built, now) = (w.sources.get(t), versions.get(t));
        if built != now {
            let v = |v: Option<&i64>| v.map_or("none".to_string(), |v| format!("version {v}"));
            why.push(format!("{t} is at {}, the rollup at {}", v(now), v(built)));
        }
    }
    why
}

/// Makes the stale rollup `rollup` (watermark `w`) answer at `versions` in `ctx`: when the
/// commits since its watermark touched a bounded part of it (the same part a refresh would
/// recompute), `rollups.<name>` becomes its stored rows outside that part and, inside it, the
/// rows the raw tables give now (what a refresh would write), in one plan. Returns the part in
/// words; `None` (and `rollups.<name>` left as stored) when the definition changed or the
/// change cannot be bounded.
async fn catch_up(
    ctx: &SessionContext,
    warehouse: &Warehouse,
    def: &CubeDef,
    rollup: &RollupDef,
    w: &Watermark,
    versions: &Versions,
    finer: Option<RollupDef>,
) -> Result<Option<String>> {
    if w.definition != fingerprint(def, rollup) {
        return Ok(None);
    }
    let Some(part) = changed_part(ctx, warehouse, def, rollup, w, versions).await? else {
        return Ok(None);
    };
    let Some(predicate) = part.predicate() else {
        return Ok(None);
    };
    let table = qualified(rollup);
    let stored = ctx.table(table.as_str()).await?;
    let columns = stored
        .schema()
        .fields()
        .iter()
        .map(|f| format!("\"{}\"", f.name().replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ");
    // The changed part merged from a finer rollup serving this snapshot (its own changed
    // part caught up), as a refresh would merge it: a touched month is its touched pharmacies'
    // days, not a month of raw facts.
    let finer_table = finer.as_ref().map(qualified);
    let from = content_from(finer.as_ref(), finer_table.as_deref());
    let content = rollup_content_sql(def, rollup, from, &part);
    let sql = format!(
        "SELECT {columns} FROM {table} WHERE NOT ({predicate}) \
         UNION ALL SELECT {columns} FROM ({content}) AS caught_up"
    );
    let plan = ctx.sql(&sql).await?.into_unoptimized_plan();
    let reference =
        datafusion::common::TableReference::partial(ROLLUP_SCHEMA, rollup.name.as_str());
    ctx.deregister_table(reference.clone())?;
    ctx.register_table(
        reference,
        Arc::new(datafusion::datasource::ViewTable::new(plan, Some(sql))),
    )?;
    Ok(Some(match finer_table {
        Some(t) => format!("{} (merged from {t})", describe_part(&part)),
        None => describe_part(&part),
    }))
}

/// A rollup's table name in the catalog (`rollups.<name>`).
fn qualified(rollup: &RollupDef) -> String {
    format!("{ROLLUP_SCHEMA}.{}", rollup.name)
}

/// Where a rollup's content is computed from: the rows of `finer` (stored as `table`), or the
/// raw tables when no finer rollup serves.
fn content_from<'a>(finer: Option<&RollupDef>, table: Option<&'a str>) -> ContentFrom<'a> {
    match (finer, table) {
        (Some(f), Some(table)) => ContentFrom::Rollup(RollupSource {
            table,
            grain: f.grain,
        }),
        _ => ContentFrom::Raw,
    }
}

/// Whether the rows of `coarse` can be merged from those of `finer`: a finer grain that rolls
/// into its grain, holding every component and median it keeps.
fn finer_source(def: &CubeDef, finer: &RollupDef, coarse: &RollupDef) -> bool {
    let (fc, fm) = def.rollup_measures(finer);
    let (c, m) = def.rollup_measures(coarse);
    finer.name != coarse.name
        && finer.grain < coarse.grain
        && finer.grain.rolls_into(coarse.grain)
        && c.iter().all(|x| fc.iter().any(|y| y.name == x.name))
        && m.iter().all(|x| fm.iter().any(|y| y.name == x.name))
}

/// When the rollup `rollup` with watermark `w` fell behind `versions`: the earliest commit
/// time of the first version after the watermark of each table it depends on. `None` when its
/// definition changed (it is not behind, it is another rollup) or no such commit is on record.
async fn behind_since(
    warehouse: &Warehouse,
    def: &CubeDef,
    rollup: &RollupDef,
    w: &Watermark,
    versions: &Versions,
) -> Result<Option<DateTime<Utc>>> {
    if w.definition != fingerprint(def, rollup) {
        return Ok(None);
    }
    let mut since: Option<DateTime<Utc>> = None;
    for t in dependencies(def, rollup) {
        let (built, now) = (w.sources.get(t), versions.get(t));
        let Some(now) = now.filter(|n| Some(*n) != built) else {
            continue;
        };
        // The first version the rollup lacks; a table rewritten to an older version (or
        // emptied) fell behind at its current one.
        let first = built.map_or(0, |b| b + 1).min(*now);
        if let Some(t) = warehouse.commit_time(t, first).await.map_err(df_err)? {
            since = Some(since.map_or(t, |s| s.min(t)));
        }
    }
    Ok(since)
}

/// What a job does with each rollup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Recompute every rollup from scratch.
    Build,
    /// Recompute only what changed since each rollup's watermark (everything when it was never
    /// built or its definition changed).
    Refresh,
}

/// What a job did to one rollup.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub rollup: String,
    /// `built`, `refreshed` or `up to date`.
    pub action: &'static str,
    /// What was recomputed, in words.
    pub part: String,
    /// Where the rows came from: `raw tables` or `rollup <name>`.
    pub from: String,
    pub version: Option<i64>,
    pub seconds: f64,
}

/// Builds or refreshes every rollup of `def` in `warehouse`; `progress` hears each step
/// (rollup name, what is happening).
pub async fn run(
    warehouse: &Warehouse,
    def: Arc<CubeDef>,
    mode: Mode,
    progress: &mut (dyn FnMut(&str, &str) + Send),
) -> Result<Vec<Report>> {
    run_in(crate::base_session(), warehouse, def, mode, progress).await
}

/// [`run`] in `ctx`, a [`crate::base_session`] whose runtime bounds the job's memory and
/// spills (the server's refreshes draw from its memory pool).
pub async fn run_in(
    ctx: SessionContext,
    warehouse: &Warehouse,
    def: Arc<CubeDef>,
    mode: Mode,
    progress: &mut (dyn FnMut(&str, &str) + Send),
) -> Result<Vec<Report>> {
    let built_at = Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let versions = rxcube_warehouse::catalog::register_tables(&ctx, warehouse)
        .await
        .map_err(df_err)?;
    let rollups = Rollups::load(&ctx, warehouse, &def, &versions).await?;
    let mut order: Vec<&RollupDef> = def.rollups.iter().collect();
    order.sort_by_key(|r| r.grain);
    // Rollups fresh at `versions`, usable as the source of coarser ones.
    let mut fresh: Vec<RollupDef> = rollups
        .states
        .iter()
        .filter(|s| s.is_fresh() && mode == Mode::Refresh)
        .map(|s| s.def.clone())
        .collect();
    let mut reports = Vec::new();
    for r in order {
        let started = Instant::now();
        let state = rollups.get(&r.name).cloned();
        let fingerprint = fingerprint(&def, r);
        let watermark = Watermark {
            definition: fingerprint.clone(),
            sources: dependencies(&def, r)
                .into_iter()
                .filter_map(|t| versions.get(t).map(|v| (t.to_string(), *v)))
                .collect(),
            built_at: built_at.clone(),
        };
        // A watermark is only read from a built rollup's commit.
        let previous = state
            .as_ref()
            .and_then(|s| s.watermark.clone())
            .filter(|w| w.definition == fingerprint && mode == Mode::Refresh);
        let part = match &previous {
            None => Part::default(),
            Some(w) if w.sources == watermark.sources => {
                reports.push(Report {
                    rollup: r.name.clone(),
                    action: "up to date",
                    part: "nothing".into(),
                    from: String::new(),
                    version: state.and_then(|s| s.version),
                    seconds: started.elapsed().as_secs_f64(),
                });
                continue;
            }
            Some(w) => {
                progress(&r.name, "reading the Delta log since the watermark");
                // Unbounded changes (no statistics, no partition): everything.
                changed_part(&ctx, warehouse, &def, r, w, &versions)
                    .await?
                    .unwrap_or_default()
            }
        };
        let finer = fresh
            .iter()
            .filter(|f| finer_source(&def, f, r))
            .max_by_key(|f| f.grain)
            .cloned();
        let finer_table = finer.as_ref().map(qualified);
        let from = content_from(finer.as_ref(), finer_table.as_deref());
        let sql = rollup_content_sql(&def, r, from, &part);
        tracing::debug!(rollup = %r.name, %sql, "rollup content");
        progress(
            &r.name,
            &format!(
                "computing {} from {}",
                describe_part(&part),
                finer_table.as_deref().unwrap_or("the raw tables")
            ),
        );
        let rows = ctx.sql(&sql).await?;
        let metadata = vec![(
            WATERMARK_KEY.to_string(),
            serde_json::to_value(&watermark).map_err(df_err)?,
        )];
        progress(&r.name, "committing");
        let version = warehouse
            .replace_derived(
                &location(&r.name),
                rows,
                part.predicate(),
                metadata,
                &["period_start", "pharmacy_id"],
                &[crate::sql::PERIOD_MONTH],
            )
            .await
            .map_err(df_err)?;
        register_rollup(&ctx, warehouse, &r.name, version).await?;
        fresh.retain(|f| f.name != r.name);
        fresh.push(r.clone());
        reports.push(Report {
            rollup: r.name.clone(),
            action: if previous.is_some() {
                "refreshed"
            } else {
                "built"
            },
            part: describe_part(&part),
            from: finer_table
                .map(|t| format!("rollup {t}"))
                .unwrap_or_else(|| "raw tables".into()),
            version: Some(version),
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Ok(reports)
}

fn describe_part(part: &Part) -> String {
    let mut what = Vec::new();
    if let Some((lo, hi)) = part.periods {
        what.push(match &part.among {
            Some((a, b)) if a == b => format!("periods {lo} .. {hi} of pharmacy {a}"),
            Some((a, b)) => format!("periods {lo} .. {hi} of pharmacies {a} .. {b}"),
            None => format!("periods {lo} .. {hi}"),
        });
    }
    if !part.pharmacies.is_empty() {
        what.push(format!("{} pharmacies", part.pharmacies.len()));
    }
    if what.is_empty() {
        "every period".to_string()
    } else {
        what.join(" and ")
    }
}

/// The part of `rollup` that the commits since `watermark` affect; `None` when it cannot be
/// bounded (then everything is recomputed).
async fn changed_part(
    ctx: &SessionContext,
    warehouse: &Warehouse,
    def: &CubeDef,
    rollup: &RollupDef,
    watermark: &Watermark,
    versions: &Versions,
) -> Result<Option<Part>> {
    let mut lo: Option<DateTime<Utc>> = None;
    let mut hi: Option<DateTime<Utc>> = None;
    let mut pharmacies: Vec<String> = Vec::new();
    // The pharmacy ids the changed facts lie between; `None` once a change does not say.
    let mut among: Option<(String, String)> = None;
    let mut among_known = true;
    for table in dependencies(def, rollup) {
        let (built, now) = (watermark.sources.get(table), versions.get(table));
        if built == now {
            continue;
        }
        let Some(now) = now else {
            return Ok(None);
        };
        match table {
            "pharmacies" | "peer_groups" => {
                let Some(built) = built else {
                    return Ok(None);
                };
                pharmacies.extend(changed_pharmacies(ctx, warehouse, table, *built).await?);
            }
            _ => {
                let (start, end) = match table {
                    "rx_fills" => ("filled_at", "filled_at"),
                    "pos" => ("sold_at", "sold_at"),
                    "surveys" => ("responded_at", "responded_at"),
                    _ => ("shift_start", "shift_end"),
                };
                // A log entry cleaned up since (log retention): no bound, everything.
                let Ok(changes) = warehouse
                    .changes(table, built.copied().unwrap_or(-1), *now)
                    .await
                else {
                    return Ok(None);
                };
                for c in changes {
                    let (a, b) = match (instant(c.min.get(start)), instant(c.max.get(end))) {
                        (Some(a), Some(b)) => (a, b),
                        _ => {
                            // No statistics (a removed file): its UTC month partition.
                            let month = c
                                .partition
                                .get(rxcube_model::contract::PARTITION_COLUMN)
                                .cloned()
                                .flatten()
                                .and_then(|m| NaiveDate::parse_from_str(&m, "%Y-%m-%d").ok());
                            let Some(month) = month else {
                                return Ok(None);
                            };
                            let first = month.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
                            let next = month
                                .checked_add_months(chrono::Months::new(1))
                                .unwrap_or(month)
                                .and_hms_opt(0, 0, 0)
                                .unwrap_or_default()
                                .and_utc();
                            (first, next)
                        }
                    };
                    let b = if table == "payroll" {
                        b + Duration::hours(MAX_SHIFT_HOURS)
                    } else {
                        b
                    };
                    lo = Some(lo.map_or(a, |x| x.min(a)));
                    hi = Some(hi.map_or(b, |x| x.max(b)));
                    // Every fact row lands in its own pharmacy's rollup rows only, so the
                    // file's least and greatest pharmacy id bound the rows it touches (a
                    // removed file's entry carries no statistics: every pharmacy).
                    match (
                        text(c.min.get("pharmacy_id")),
                        text(c.max.get("pharmacy_id")),
                    ) {
                        (Some(p), Some(q)) if among_known => {
                            among = Some(match among.take() {
                                Some((x, y)) => (x.min(p), y.max(q)),
                                None => (p, q),
                            });
                        }
                        _ => among_known = false,
                    }
                }
            }
        }
    }
    pharmacies.sort_unstable();
    pharmacies.dedup();
    let anchor = def.time.pay_period_anchor;
    let periods = match (lo, hi) {
        (Some(lo), Some(hi)) => {
            let local = |t: DateTime<Utc>| t.naive_utc();
            let from: NaiveDateTime = local(lo) - Duration::hours(MAX_OFFSET);
            let to: NaiveDateTime = local(hi) + Duration::hours(MAX_OFFSET);
            Some((
                period_start(rollup.grain, from, anchor),
                period_start(rollup.grain, to, anchor),
            ))
        }
        _ => None,
    };
    Ok(Some(Part {
        periods,
        among: among.filter(|_| among_known && periods.is_some()),
        pharmacies,
    }))
}

/// A text statistic of the Delta log (a pharmacy id; integer ids of an older layout as their
/// decimal text would compare differently, so only text is taken).
fn text(v: Option<&Value>) -> Option<String> {
    v?.as_str().map(str::to_string)
}

/// An instant from the Delta log's statistics (RFC 3339 text).
fn instant(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let text = v?.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Removes the `rx_history` schema [`changed_pharmacies`] registers old versions in.
fn forget_history(ctx: &SessionContext) {
    if let Ok((_, catalog)) = crate::default_catalog(ctx) {
        let _ = catalog.deregister_schema("rx_history", true);
    }
}

/// The pharmacies whose rows of a reference table changed in a way the rollups depend on
/// since version `built`: for `pharmacies` the zone and the org rows' dates (not the org
/// attributes, joined at query time); for `peer_groups` the rows' dates and target minutes.
async fn changed_pharmacies(
    ctx: &SessionContext,
    warehouse: &Warehouse,
    table: &str,
    built: i64,
) -> Result<Vec<String>> {
    let old = format!("{table}_at_{built}");
    register_named(ctx, warehouse, "rx_history", &old, table, Some(built))
        .await
        .map_err(df_err)?;
    let cols = match table {
        "pharmacies" => "pharmacy_id, valid_from, valid_to, timezone",
        _ => "pharmacy_id, valid_from, valid_to, rx_target_minutes",
    };
    let sql = format!(
        "SELECT DISTINCT CAST(pharmacy_id AS VARCHAR) AS id FROM (\
           (SELECT {cols} FROM public.{table} EXCEPT SELECT {cols} FROM rx_history.{old}) \
           UNION ALL (SELECT {cols} FROM rx_history.{old} EXCEPT SELECT {cols} FROM public.{table}))"
    );
    let batches = ctx.sql(&sql).await;
    // The old version was registered for this query only (the session may be a user's).
    forget_history(ctx);
    let batches = batches?.collect().await?;
    let mut ids = Vec::new();
    for b in batches {
        let col = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
        let col = datafusion::common::cast::as_string_array(&col)?;
        ids.extend(col.iter().flatten().map(str::to_string));
    }
    Ok(ids)
}
