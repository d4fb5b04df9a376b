//! The SQL that computes a slice of `cube.metrics` from the landed tables (the raw path) or
//! from a rollup, and the SQL that computes a rollup's rows ([`rollup_content_sql`]).
//!
//! A [`Slice`] names the levels, grains and metrics a query needs (from its filters); the
//! generated query reads only the fact sources those metrics draw on and aggregates only those
//! levels and grains. The plan, in CTEs:
//!
//! 1. `<source>_facts`: one row per fact with its local wall-clock time (`local_ts`), in the
//!    pharmacy's zone. Fills carry their processing minutes and on-time flag (the target minutes
//!    of the peer group in effect on the local `received_at` date); payroll shifts are spread
//!    over the local hours they touch, pro rata by minutes. POS lines and survey responses,
//!    when only additive components draw on them, are first summed per pharmacy and 15-minute
//!    UTC bucket (every zone offset is a whole number of quarter hours, so a bucket lies in one
//!    local hour), and the zone conversion runs once per bucket.
//! 2. `<source>_events`: facts joined to the org path in effect on their local date ("as was"),
//!    and bucketed into each requested grain (`period_start`).
//!
//!    From a rollup ([`RollupSource`]), steps 1 and 2 are one CTE `rollup_events`: the rollup's
//!    rows joined to their org version, re-bucketed into the requested grains, kept where a
//!    source of the slice has facts; medians merge histograms (`rx_hist_median`).
//! 3. `level_cells`: per org node of each requested level, grain and period, the additive
//!    components summed (pooled: sums first, ratios last) and the medians taken, in one
//!    aggregation per source. DataFusion inlines every reference to a CTE, so no CTE that reads
//!    facts is referenced twice: the levels are crossed with the events, not unioned.
//! 4. `metric_rows`: one row per cell and metric, picked from the cell by metric name: ratios
//!    divide once (NULL when the denominator is not positive).
//! 5. At the pharmacy level: the peer group in effect on the period's last local day, the
//!    peer-group average (pooled for ratios, the mean per pharmacy for components, the median
//!    of the pooled facts for medians), `RANK()` (direction-aware; NULL values unranked) and the number of
//!    ranked peers.

use std::fmt::Write;

use chrono::{Datelike, Duration, NaiveDateTime};

use crate::definition::{
    Component, CubeDef, Metric, MetricKind, MetricRef, RollupDef, SmallCells, distinct_column,
};
use crate::time::Grain;
use crate::udf::date_literal;

/// What a query on `cube.metrics` needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    pub levels: Vec<&'static str>,
    pub grains: Vec<Grain>,
    pub metrics: Vec<String>,
    /// Restrict to these nodes (applied after ranking, so ranks stay among all peers).
    pub nodes: Option<Vec<String>>,
    /// Bounds on `period_start` (local wall-clock), inclusive; facts outside the periods they
    /// allow are not read.
    pub period_from: Option<NaiveDateTime>,
    pub period_to: Option<NaiveDateTime>,
    /// Whether the peer columns are read: without them there is no peer ranking, and a node
    /// filter applies before aggregation at the pharmacy level too.
    pub peers: bool,
    /// Whether small cells are protected (`rxcube.small_cells`): the figures the definition's
    /// `[[small_cells]]` rules suppress in a small cell are NULL, so they are unranked and
    /// out of the peer averages and sizes.
    pub protect: bool,
}

/// The widest gap between local wall-clock time and UTC (UTC-12 .. UTC+14), rounded up.
const MAX_OFFSET_HOURS: i64 = 15;

impl Slice {
    /// Instant bounds (RFC 3339) that hold every fact of every period the slice allows.
    fn event_bounds(&self) -> (Option<String>, Option<String>) {
        let margin = Duration::hours(MAX_OFFSET_HOURS);
        let longest = self
            .grains
            .iter()
            .map(|g| g.max_length())
            .max()
            .unwrap_or(Duration::days(366));
        let fmt = |t: NaiveDateTime| format!("'{}'", t.format("%Y-%m-%dT%H:%M:%SZ"));
        (
            self.period_from.map(|l| fmt(l - margin)),
            self.period_to.map(|u| fmt(u + longest + margin)),
        )
    }

    /// The condition on an event's instant (or a shift's start and end).
    fn time_filter(&self, start: &str, end: &str) -> String {
        let (lower, upper) = self.event_bounds();
        let mut parts = Vec::new();
        if let Some(l) = lower {
            parts.push(format!("{end} >= {l}"));
        }
        if let Some(u) = upper {
            parts.push(format!("{start} < {u}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", parts.join(" AND "))
        }
    }
}

pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Quoted SQL literals, comma-separated.
pub(crate) fn in_list<S: AsRef<str>>(values: &[S]) -> String {
    values
        .iter()
        .map(|v| quote(v.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The org node of a level, over a row with pharmacy_id and the org path.
fn node_expr(level: &str) -> &'static str {
    match level {
        "pharmacy" => "pharmacy_id",
        "local_area" => "local_area",
        "service_area" => "service_area",
        "region" => "region",
        _ => "'ALL'",
    }
}

/// The columns a component's or a median's `value` and `filter` may name, per fact source: the
/// rows [`facts_sql`] yields (a test plans it and compares). `cube.toml` expressions are
/// checked against it when the definition loads.
pub(crate) fn source_schema(source: &str) -> Option<arrow::datatypes::Schema> {
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use rxcube_model::TableName;
    let stored = |table: TableName, names: &[&str]| -> Vec<Field> {
        let schema = table.def().schema();
        names
            .iter()
            .map(|n| {
                let f = schema.field_with_name(n).expect("a contract column");
                Field::new(*n, f.data_type().clone(), true)
            })
            .collect()
    };
    let local_ts = Field::new(
        "local_ts",
        DataType::Timestamp(TimeUnit::Microsecond, None),
        true,
    );
    let fields = match source {
        "fills" => {
            let mut f = stored(
                TableName::RxFills,
                &["pharmacy_id", "rx_id", "fill_no", "channel"],
            );
            f.push(local_ts);
            f.push(Field::new("processing_minutes", DataType::Float64, true));
            f.push(Field::new("target_minutes", DataType::Int64, true));
            f.push(Field::new("on_time", DataType::Boolean, true));
            f
        }
        "sales" => {
            let mut f = stored(
                TableName::Pos,
                &["pharmacy_id", "kind", "quantity", "amount", "rx_id"],
            );
            f.push(local_ts);
            f
        }
        "surveys" => {
            let mut f = stored(TableName::Surveys, &["pharmacy_id", "rating"]);
            f.push(local_ts);
            f
        }
        "payroll" => {
            let mut f = stored(
                TableName::Payroll,
                &["pharmacy_id", "employee_id", "pay_code"],
            );
            f.push(local_ts);
            f.push(Field::new("hours", DataType::Float64, true));
            f.push(Field::new("cost", DataType::Float64, true));
            f
        }
        _ => return None,
    };
    Some(Schema::new(fields))
}

/// The facts of a source, one row each, with `pharmacy_id` and `local_ts`.
fn facts_sql(def: &CubeDef, slice: &Slice, source: &str) -> String {
    let target = def.time.default_target_minutes;
    match source {
        "fills" => format!(
            "SELECT f.pharmacy_id, f.rx_id, f.fill_no, f.channel, \
               rx_local_time(f.filled_at, z.tz) AS local_ts, \
               (CAST(f.filled_at AS BIGINT) - CAST(f.received_at AS BIGINT)) / 60000000.0 AS processing_minutes, \
               COALESCE(g.rx_target_minutes, {target}) AS target_minutes, \
               f.channel = 'local' AND (CAST(f.filled_at AS BIGINT) - CAST(f.received_at AS BIGINT)) / 60000000.0 \
                 < COALESCE(g.rx_target_minutes, {target}) AS on_time \
             FROM rx_fills f JOIN rx_tz z ON z.pharmacy_id = f.pharmacy_id \
             LEFT JOIN peer_groups g ON g.pharmacy_id = f.pharmacy_id \
               AND g.valid_from <= CAST(rx_local_time(f.received_at, z.tz) AS DATE) \
               AND (g.valid_to IS NULL OR CAST(rx_local_time(f.received_at, z.tz) AS DATE) < g.valid_to){}",
            slice.time_filter("f.filled_at", "f.filled_at")
        ),
        "sales" => format!(
            "SELECT s.pharmacy_id, s.kind, s.quantity, s.amount, s.rx_id, \
               rx_local_time(s.sold_at, z.tz) AS local_ts \
             FROM pos s JOIN rx_tz z ON z.pharmacy_id = s.pharmacy_id{}",
            slice.time_filter("s.sold_at", "s.sold_at")
        ),
        "surveys" => format!(
            "SELECT s.pharmacy_id, s.rating, rx_local_time(s.responded_at, z.tz) AS local_ts \
             FROM surveys s JOIN rx_tz z ON z.pharmacy_id = s.pharmacy_id{}",
            slice.time_filter("s.responded_at", "s.responded_at")
        ),
        _ => format!(
            "SELECT pharmacy_id, employee_id, pay_code, get_field(h, 'local_hour') AS local_ts, \
               CAST(hours AS DOUBLE) * get_field(h, 'share') AS hours, \
               CAST(cost AS DOUBLE) * get_field(h, 'share') AS cost \
             FROM (SELECT p.pharmacy_id, p.employee_id, p.pay_code, p.hours, p.cost, \
                     unnest(rx_shift_hours(p.shift_start, p.shift_end, z.tz)) AS h \
                   FROM payroll p JOIN rx_tz z ON z.pharmacy_id = p.pharmacy_id{})",
            slice.time_filter("p.shift_start", "p.shift_end")
        ),
    }
}

/// The fact sources whose rows are plain events (no derived columns): when only additive
/// components draw on them, they are summed per pharmacy and 15-minute UTC bucket before the
/// time-zone conversion. Every zone offset is a whole number of quarter hours, so a bucket lies
/// in one local hour (and one local date): the cells come out the same from far fewer rows.
const BUCKETED: [(&str, &str, &str); 2] = [
    ("sales", "pos", "sold_at"),
    ("surveys", "surveys", "responded_at"),
];

/// `SUM(<value> over the facts passing <filter>) AS <name>`.
fn component_sum(c: &Component) -> String {
    format!("{} AS {}", component_total(c), c.name)
}

/// `SUM(<value> over the facts passing <filter>)`.
fn component_total(c: &Component) -> String {
    format!(
        "SUM(CASE WHEN {} THEN CAST({} AS DOUBLE) ELSE 0 END)",
        c.filter.as_deref().unwrap_or("TRUE"),
        c.value
    )
}

/// The CTE `rx_tz`: each pharmacy's zone (its latest org row's; the default when unset).
fn rx_tz_cte(def: &CubeDef) -> String {
    format!(
        "rx_tz AS (SELECT pharmacy_id, COALESCE(last_value(timezone ORDER BY valid_from), {}) AS tz \
         FROM pharmacies GROUP BY pharmacy_id)",
        quote(&def.time.default_timezone)
    )
}

/// The facts of `source` within `slice`'s time bounds: pre-summed per 15-minute bucket (see
/// [`BUCKETED`]) when no median of `medians` reads the source, then only `components` are
/// summed; else one row per fact. Returns the SQL and whether it is bucketed.
fn source_facts_sql(
    def: &CubeDef,
    slice: &Slice,
    source: &str,
    components: &[&Component],
    medians: &[&Metric],
) -> (String, bool) {
    let bucket = BUCKETED
        .iter()
        .find(|(name, ..)| *name == source)
        .filter(|_| !medians.iter().any(|d| d.source.as_deref() == Some(source)));
    match bucket {
        Some((_, table, ts)) => {
            let mine: Vec<&Component> = components
                .iter()
                .copied()
                .filter(|c| c.source == source)
                .collect();
            (bucketed_facts_sql(slice, table, ts, &mine), true)
        }
        None => (facts_sql(def, slice, source), false),
    }
}

/// `<source>_facts e` joined to the org row in effect on each fact's local date ("as was"). The
/// org rows first: DataFusion builds the hash table of a join's left side when it cannot size
/// the sides, and the facts are the large side.
fn placed_as_was(source: &str) -> String {
    format!(
        "pharmacies o JOIN {source}_facts e ON o.pharmacy_id = e.pharmacy_id \
           AND o.valid_from <= CAST(e.local_ts AS DATE) \
           AND (o.valid_to IS NULL OR CAST(e.local_ts AS DATE) < o.valid_to)"
    )
}

/// The components of `source` summed per pharmacy and bucket, with the bucket's local time.
fn bucketed_facts_sql(slice: &Slice, table: &str, ts: &str, components: &[&Component]) -> String {
    let sums = components
        .iter()
        .map(|c| component_sum(c))
        .collect::<Vec<_>>()
        .join(", ");
    let names = components
        .iter()
        .map(|c| format!("b.{}", c.name))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT b.pharmacy_id, rx_local_time(b.bucket, z.tz) AS local_ts, {names} \
         FROM (SELECT s.pharmacy_id, date_bin(INTERVAL '15 minutes', s.{ts}) AS bucket, {sums} \
               FROM {table} s{} GROUP BY s.pharmacy_id, date_bin(INTERVAL '15 minutes', s.{ts})) b \
         JOIN rx_tz z ON z.pharmacy_id = b.pharmacy_id",
        slice.time_filter(&format!("s.{ts}"), &format!("s.{ts}"))
    )
}

/// A rollup that answers a slice: its table (qualified) and grain.
#[derive(Debug, Clone, Copy)]
pub struct RollupSource<'a> {
    pub table: &'a str,
    pub grain: Grain,
}

/// The name of the cells' source when they come from a rollup.
const ROLLUP: &str = "rollup";

/// The column of a rollup counting a source's fact rows in a cell (buckets, for bucketed
/// sources): a cell exists on the raw path exactly where one of its sources has a row.
pub fn rows_column(source: &str) -> String {
    format!("{source}_rows")
}

/// Generates the query for `slice`, from the landed tables or, given `rollup`, from a rollup
/// that answers it ([`crate::rollup`]). Output columns: level, node, grain, period_start,
/// metric, value, numerator, denominator, peer_group, peer_avg, peer_rank, peer_size.
pub fn metrics_sql(def: &CubeDef, slice: &Slice, rollup: Option<RollupSource>) -> String {
    let anchor = date_literal(def.time.pay_period_anchor);
    // Components needed, grouped by source, in definition order.
    let mut components: Vec<&Component> = Vec::new();
    let mut medians = Vec::new();
    for m in &slice.metrics {
        match def.lookup(m) {
            Some(MetricRef::Defined(d)) if d.kind == MetricKind::Median => medians.push(d),
            Some(_) => {
                for c in def.components_of(m) {
                    if !components.iter().any(|k| k.name == c.name) {
                        components.push(c);
                    }
                }
            }
            None => {}
        }
    }
    // Small-cell protection: the rules that suppress a metric of the slice, and the counts
    // they need in each cell (a count rule's component is summed like any other).
    let mut rules: Vec<&SmallCells> = Vec::new();
    if slice.protect {
        for m in &slice.metrics {
            for r in def.small_cell_rules_of(m) {
                if !rules.iter().any(|k| k.source == r.source) {
                    rules.push(r);
                }
            }
        }
        for r in &rules {
            if let Some(c) = r.count.as_deref().and_then(|c| def.component(c))
                && !components.iter().any(|k| k.name == c.name)
            {
                components.push(c);
            }
        }
    }
    let distinct_rules: Vec<&SmallCells> = rules
        .iter()
        .copied()
        .filter(|r| r.distinct.is_some())
        .collect();
    let comp_sources = distinct(components.iter().map(|c| c.source.as_str()));
    let fact_sources = distinct(
        comp_sources
            .iter()
            .copied()
            .chain(medians.iter().filter_map(|m| m.source.as_deref())),
    );
    let sources = match rollup {
        Some(_) => vec![ROLLUP],
        None => fact_sources.clone(),
    };

    let mut sql = String::from("WITH ");
    if rollup.is_none() {
        sql.push_str(&rx_tz_cte(def));
    }
    let grains = slice
        .grains
        .iter()
        .map(|g| format!("({})", quote(g.as_str())))
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(r) = rollup {
        // The rollup's rows placed in the org path of their org version, re-bucketed into the
        // requested grains; only cells where a source of the slice has facts.
        let present = fact_sources
            .iter()
            .map(|s| format!("r.{} > 0", rows_column(s)))
            .collect::<Vec<_>>()
            .join(" OR ");
        let mut conditions = vec![if present.is_empty() {
            "FALSE".to_string()
        } else {
            format!("({present})")
        }];
        let fmt = |t: NaiveDateTime| format!("TIMESTAMP '{}'", t.format("%Y-%m-%dT%H:%M:%S"));
        if let Some(from) = slice.period_from {
            conditions.push(format!("r.period_start >= {}", fmt(from)));
        }
        if let Some(to) = slice.period_to {
            let longest = slice.grains.iter().map(|g| g.max_length()).max();
            let upper = to + longest.unwrap_or(Duration::days(366));
            conditions.push(format!("r.period_start < {}", fmt(upper)));
        }
        let placed = format!(
            "pharmacies o JOIN {} r ON o.pharmacy_id = r.pharmacy_id AND o.valid_from = r.org_from",
            r.table
        );
        let (grain, from) = match slice.grains.as_slice() {
            [one] => (quote(one.as_str()), placed),
            _ => (
                "gr.grain".to_string(),
                format!("(VALUES {grains}) AS gr(grain) CROSS JOIN ({placed})"),
            ),
        };
        let period = if slice.grains == [r.grain] {
            "r.period_start".to_string()
        } else {
            format!("rx_period_start({grain}, r.period_start, {anchor})")
        };
        let measures: String = components
            .iter()
            .map(|c| format!("r.{}, ", c.name))
            .chain(medians.iter().map(|d| format!("r.{}, ", d.name)))
            .chain(
                distinct_rules
                    .iter()
                    .map(|r| format!("r.{}, ", r.counter())),
            )
            .collect();
        // Under small-cell protection, each row's own period: the atoms it lies in.
        let row_start = if rules.is_empty() {
            ""
        } else {
            "r.period_start AS row_start, "
        };
        let _ = write!(
            sql,
            "{ROLLUP}_events AS (SELECT r.pharmacy_id, {measures}{row_start}o.local_area, \
               o.service_area, o.region, {grain} AS grain, {period} AS period_start FROM {from} \
               WHERE {})",
            conditions.join(" AND ")
        );
    }
    // Which fact sources are pre-summed per bucket (their cells sum the bucket sums).
    let mut bucketed = Vec::new();
    for source in rollup.map_or(&sources[..], |_| &[]) {
        let (facts, is_bucketed) = source_facts_sql(def, slice, source, &components, &medians);
        if is_bucketed {
            bucketed.push(*source);
        }
        let placed = placed_as_was(source);
        // One grain is a literal; several cross the events with the grains, the small side
        // first (a cross join holds its left side in memory).
        let (grain, from) = match slice.grains.as_slice() {
            [one] => (quote(one.as_str()), placed),
            _ => (
                "gr.grain".to_string(),
                format!("(VALUES {grains}) AS gr(grain) CROSS JOIN ({placed})"),
            ),
        };
        let _ = write!(
            sql,
            ", {source}_facts AS ({facts}), \
             {source}_events AS (SELECT e.*, o.local_area, o.service_area, o.region, {grain} AS grain, \
               rx_period_start({grain}, e.local_ts, {anchor}) AS period_start FROM {from})"
        );
    }

    // DataFusion inlines every reference to a CTE, so each source's events are read by one
    // aggregation only: every requested level at once (the events crossed with the levels),
    // the components summed and the medians taken side by side.
    // One level: its node straight from the event's columns, so a node filter reaches the
    // fact scan. Several: the events crossed with the levels.
    let (level, node, levels_join) = match slice.levels.as_slice() {
        [one] => (quote(one), node_expr(one).to_string(), String::new()),
        many => (
            "lv.level".to_string(),
            format!(
                "CASE lv.level {} END",
                many.iter()
                    .map(|l| format!("WHEN {} THEN {}", quote(l), node_expr(l)))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            format!(
                "(VALUES {}) AS lv(level) CROSS JOIN ",
                many.iter()
                    .map(|l| format!("({})", quote(l)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    };
    // Above the pharmacy level a node filter applies before aggregation; at the pharmacy
    // level (with peer columns) it waits until after ranking, so ranks stay among all peers.
    let node_filter = match &slice.nodes {
        Some(nodes) => {
            let keep = format!("{node} IN ({})", in_list(nodes));
            match (slice.peers, slice.levels.as_slice()) {
                (true, [only]) if *only == "pharmacy" => String::new(),
                (true, many) if many.contains(&"pharmacy") => {
                    format!(" WHERE ({level} = 'pharmacy' OR {keep})")
                }
                _ => format!(" WHERE {keep}"),
            }
        }
        None => String::new(),
    };
    let mut source_cells = Vec::new();
    for source in &sources {
        let mut cols = Vec::new();
        for c in &components {
            cols.push(
                if *source == ROLLUP || (c.source == *source && bucketed.contains(source)) {
                    format!("SUM({0}) AS {0}", c.name)
                } else if c.source == *source {
                    component_sum(c)
                } else {
                    format!("CAST(NULL AS DOUBLE) AS {}", c.name)
                },
            );
        }
        for d in &medians {
            cols.push(if *source == ROLLUP {
                format!("rx_hist_median({0}) AS {0}", d.name)
            } else if d.source.as_deref() == Some(*source) {
                format!(
                    "median(CASE WHEN {} THEN CAST({} AS DOUBLE) END) AS {}",
                    d.filter.as_deref().unwrap_or("TRUE"),
                    d.value.as_deref().unwrap_or("NULL"),
                    d.name
                )
            } else {
                format!("CAST(NULL AS DOUBLE) AS {}", d.name)
            });
        }
        // The atoms' figures: where each rollup row is one atom, counted here; else in
        // branches of their own (below).
        for r in &rules {
            cols.extend(match row_atoms(r, rollup) {
                Some(n) if *source == ROLLUP => atom_figures(r, &n),
                _ => no_atom_figures(r),
            });
        }
        source_cells.push(format!(
            "SELECT {level} AS level, {node} AS node, grain, period_start, {} \
             FROM {levels_join}{source}_events e{node_filter} \
             GROUP BY {level}, {node}, grain, period_start",
            cols.join(", ")
        ));
    }
    // Small-cell protection: per cell, each rule's atoms (the rule's grain, per pharmacy)
    // with few contributors, and the most contributors of any atom; counted over the facts,
    // or over the rollup's rows (no coarser than the atom: `Rollups::choose`) and their sets
    // of contributors merged. A branch of its own per rule: its events grouped by atom first.
    for r in rules.iter().filter(|r| row_atoms(r, rollup).is_none()) {
        let source = if rollup.is_some() {
            ROLLUP
        } else {
            r.source.as_str()
        };
        let contributors = match (&r.distinct, &r.count) {
            (Some(_), _) if rollup.is_some() => {
                format!("CAST(cardinality({}) AS BIGINT)", merged_set(&r.counter()))
            }
            (Some(column), _) => format!("COUNT(DISTINCT CAST(e.{column} AS VARCHAR))"),
            (None, Some(count)) if rollup.is_some() || bucketed.contains(&source) => {
                format!("CAST(SUM(e.{count}) AS BIGINT)")
            }
            (None, Some(count)) => match def.component(count) {
                Some(c) => format!("CAST({} AS BIGINT)", component_total(c)),
                None => "CAST(0 AS BIGINT)".to_string(),
            },
            (None, None) => "CAST(0 AS BIGINT)".to_string(),
        };
        let at = if rollup.is_some() {
            "e.row_start"
        } else {
            "e.local_ts"
        };
        // Judged cell by cell, the cell is its one atom.
        let (atom_cols, atom_keys) = match r.atom {
            Some(grain) => {
                let start = format!("rx_period_start({}, {at}, {anchor})", quote(grain.as_str()));
                (
                    format!("e.pharmacy_id, {start} AS atom_start, "),
                    format!(", e.pharmacy_id, {start}"),
                )
            }
            None => (String::new(), String::new()),
        };
        let mut cols: Vec<String> = components
            .iter()
            .map(|c| format!("CAST(NULL AS DOUBLE) AS {}", c.name))
            .chain(
                medians
                    .iter()
                    .map(|d| format!("CAST(NULL AS DOUBLE) AS {}", d.name)),
            )
            .collect();
        for k in &rules {
            cols.extend(if k.source == r.source {
                atom_figures(r, "n")
            } else {
                no_atom_figures(k)
            });
        }
        source_cells.push(format!(
            "SELECT level, node, grain, period_start, {} FROM \
               (SELECT {level} AS level, {node} AS node, grain, period_start, {atom_cols}\
                  {contributors} AS n \
                FROM {levels_join}{source}_events e{node_filter} \
                GROUP BY {level}, {node}, grain, period_start{atom_keys}) \
             GROUP BY level, node, grain, period_start",
            cols.join(", ")
        ));
    }
    let merged = components
        .iter()
        .map(|c| format!("COALESCE(SUM({0}), 0) AS {0}", c.name))
        .chain(medians.iter().map(|d| format!("MAX({0}) AS {0}", d.name)))
        .chain(rules.iter().flat_map(|r| {
            [r.small_atoms(), r.atom_max()].map(|c| format!("COALESCE(MAX({c}), 0) AS {c}"))
        }))
        .collect::<Vec<_>>()
        .join(", ");
    // The condition under which a metric's figures are suppressed in a cell, if any.
    let suppressed = |metric: &str| -> Option<String> {
        let conditions: Vec<String> = def
            .small_cell_rules_of(metric)
            .iter()
            .filter(|_| slice.protect)
            .map(|r| r.suppressed_sql(&slice.grains))
            .collect();
        (!conditions.is_empty()).then(|| conditions.join(" OR "))
    };
    let guard = |metric: &str, expr: String| match suppressed(metric) {
        Some(cond) => format!("CASE WHEN {cond} THEN CAST(NULL AS DOUBLE) ELSE {expr} END"),
        None => expr,
    };
    // One row per cell and metric: the metrics' values, numerators and denominators side by
    // side in the cell, then picked by metric name.
    let mut rows = Vec::new();
    let (mut values, mut numerators, mut denominators) = (Vec::new(), Vec::new(), Vec::new());
    for m in &slice.metrics {
        let name = quote(m);
        match def.lookup(m) {
            Some(MetricRef::Component(c)) => {
                rows.push(format!("({name}, 'component', 0.0)"));
                values.push(format!("WHEN {name} THEN {}", guard(m, c.name.clone())));
            }
            Some(MetricRef::Defined(d)) if d.kind == MetricKind::Ratio => {
                let (num, den) = (
                    d.numerator.as_deref().unwrap_or("0"),
                    d.denominator.as_deref().unwrap_or("0"),
                );
                let scale = float(d.scale);
                rows.push(format!("({name}, 'ratio', {scale})"));
                let ratio = format!("CASE WHEN ({den}) > 0 THEN {scale} * ({num}) / ({den}) END");
                values.push(format!("WHEN {name} THEN {}", guard(m, ratio)));
                numerators.push(format!(
                    "WHEN {name} THEN {}",
                    guard(m, format!("CAST({num} AS DOUBLE)"))
                ));
                denominators.push(format!(
                    "WHEN {name} THEN {}",
                    guard(m, format!("CAST({den} AS DOUBLE)"))
                ));
            }
            Some(MetricRef::Defined(d)) => {
                rows.push(format!("({name}, 'median', 0.0)"));
                values.push(format!("WHEN {name} THEN {}", guard(m, d.name.clone())));
            }
            None => {}
        }
    }
    let pick = |whens: &[String]| {
        if whens.is_empty() {
            "CAST(NULL AS DOUBLE)".to_string()
        } else {
            format!("CASE m.metric {} END", whens.join(" "))
        }
    };
    let metric_rows = if source_cells.is_empty() || rows.is_empty() {
        "SELECT CAST(NULL AS VARCHAR) AS level, CAST(NULL AS VARCHAR) AS node, \
         CAST(NULL AS VARCHAR) AS grain, CAST(NULL AS TIMESTAMP) AS period_start, \
         CAST(NULL AS VARCHAR) AS metric, CAST(NULL AS DOUBLE) AS value, \
         CAST(NULL AS DOUBLE) AS numerator, CAST(NULL AS DOUBLE) AS denominator, \
         'component' AS kind, 0.0 AS scale WHERE FALSE"
            .to_string()
    } else {
        let _ = write!(
            sql,
            ", level_cells AS (SELECT level, node, grain, period_start, {merged} \
             FROM ({}) GROUP BY level, node, grain, period_start)",
            source_cells.join(" UNION ALL ")
        );
        // A median has no row where no fact passes its filter (a ratio's zero denominator
        // does have one, with a NULL value).
        format!(
            "SELECT * FROM (SELECT c.level, c.node, c.grain, c.period_start, m.metric, \
               {} AS value, {} AS numerator, {} AS denominator, m.kind, m.scale \
             FROM level_cells c CROSS JOIN (VALUES {}) AS m(metric, kind, scale)) \
             WHERE kind <> 'median' OR value IS NOT NULL",
            pick(&values),
            pick(&numerators),
            pick(&denominators),
            rows.join(", ")
        )
    };
    // The peer-group median pools the facts of every pharmacy in the peer group (the one in
    // effect on the period's last local day), so it is computed from the events, not the cells.
    // Under small-cell protection, a median a rule suppresses gets no peer median: it would
    // pool the facts of the suppressed cells.
    let pooled: Vec<&Metric> = medians
        .iter()
        .copied()
        .filter(|d| suppressed(&d.name).is_none())
        .collect();
    let peer_medians = slice.peers && !pooled.is_empty() && slice.levels.contains(&"pharmacy");
    if peer_medians {
        let medians = pooled.clone();
        let mut branches = Vec::new();
        fn median_source<'a>(d: &'a Metric, rollup: Option<RollupSource>) -> &'a str {
            match rollup {
                Some(_) => ROLLUP,
                None => d.source.as_deref().unwrap_or("fills"),
            }
        }
        for d in &medians {
            let source = median_source(d, rollup);
            let (filter, median) = match rollup {
                Some(_) => ("TRUE", format!("rx_hist_median(e.{})", d.name)),
                None => (
                    d.filter.as_deref().unwrap_or("TRUE"),
                    format!(
                        "median(CAST({} AS DOUBLE))",
                        d.value.as_deref().unwrap_or("NULL")
                    ),
                ),
            };
            branches.push(format!(
                "SELECT e.grain, e.period_start, {} AS metric, p.pg, \
                   {median} AS peer_median \
                 FROM {source}_events e JOIN {source}_peers p ON p.pharmacy_id = e.pharmacy_id \
                   AND p.grain = e.grain AND p.period_start = e.period_start \
                 WHERE {filter} GROUP BY e.grain, e.period_start, p.pg",
                quote(&d.name)
            ));
        }
        for source in distinct(medians.iter().map(|d| median_source(d, rollup))) {
            let _ = write!(
                sql,
                ", {source}_peers AS (SELECT c.pharmacy_id, c.grain, c.period_start, g.peer_group AS pg \
                 FROM (SELECT DISTINCT pharmacy_id, grain, period_start FROM {source}_events) c \
                 JOIN peer_groups g ON g.pharmacy_id = c.pharmacy_id AND {})",
                valid_on_last_day("g", "c")
            );
        }
        let _ = write!(sql, ", peer_medians AS ({})", branches.join(" UNION ALL "));
    }
    let _ = write!(sql, ", metric_rows AS ({metric_rows})");

    let from = if slice.peers && slice.levels.contains(&"pharmacy") {
        sql.push_str(&peer_ranking(def, peer_medians));
        "ranked"
    } else {
        "(SELECT *, CAST(NULL AS VARCHAR) AS peer_group, CAST(NULL AS DOUBLE) AS peer_avg, \
           CAST(NULL AS BIGINT) AS peer_rank, CAST(NULL AS BIGINT) AS peer_size FROM metric_rows)"
    };
    let node_where = match &slice.nodes {
        Some(nodes) => format!(" WHERE node IN ({})", in_list(nodes)),
        None => String::new(),
    };
    let _ = write!(
        sql,
        " SELECT arrow_cast(level, 'Utf8') AS level, arrow_cast(node, 'Utf8') AS node, \
           arrow_cast(grain, 'Utf8') AS grain, \
           arrow_cast(period_start, 'Timestamp(Microsecond, None)') AS period_start, \
           arrow_cast(metric, 'Utf8') AS metric, CAST(value AS DOUBLE) AS value, \
           CAST(numerator AS DOUBLE) AS numerator, CAST(denominator AS DOUBLE) AS denominator, \
           arrow_cast(peer_group, 'Utf8') AS peer_group, CAST(peer_avg AS DOUBLE) AS peer_avg, \
           CAST(peer_rank AS BIGINT) AS peer_rank, CAST(peer_size AS BIGINT) AS peer_size \
         FROM {from}{node_where}"
    );
    sql
}

/// A cell's figures of `rule`'s atoms, over rows with each atom's contributors `n`: the
/// small atoms (1 to minimum - 1 contributors) and the most contributors of any.
fn atom_figures(rule: &SmallCells, n: &str) -> [String; 2] {
    [
        format!(
            "SUM(CASE WHEN {n} > 0 AND {n} < {} THEN 1 ELSE 0 END) AS {}",
            rule.minimum,
            rule.small_atoms()
        ),
        format!("MAX({n}) AS {}", rule.atom_max()),
    ]
}

/// [`atom_figures`]' columns in a branch that does not count `rule`'s atoms.
fn no_atom_figures(rule: &SmallCells) -> [String; 2] {
    [rule.small_atoms(), rule.atom_max()].map(|c| format!("CAST(NULL AS BIGINT) AS {c}"))
}

/// Where each row of `rollup` is one atom of `rule` (a pharmacy's period of the atom's grain,
/// in one org version), the row's contributors: the atoms are counted in the cells'
/// aggregation itself.
fn row_atoms(rule: &SmallCells, rollup: Option<RollupSource>) -> Option<String> {
    let r = rollup?;
    if rule.atom != Some(r.grain) {
        return None;
    }
    Some(match (&rule.distinct, &rule.count) {
        (Some(_), _) => format!("CAST(cardinality(e.{}) AS BIGINT)", rule.counter()),
        (None, Some(count)) => format!("CAST(e.{count} AS BIGINT)"),
        (None, None) => return None,
    })
}

/// The CTEs `peered` and `ranked`: the peer group on the period's last day, the peer average,
/// `RANK()` and the peers ranked.
fn peer_ranking(def: &CubeDef, peer_medians: bool) -> String {
    let mut sql = String::new();
    let sign = def.direction_sql("metric");
    let _ = write!(
        sql,
        ", peered AS (SELECT m.*, g.peer_group AS pg{pm_col} FROM metric_rows m \
           LEFT JOIN peer_groups g ON m.level = 'pharmacy' AND g.pharmacy_id = m.node \
             AND {last_day}{pm_join}), \
         ranked AS (SELECT level, node, grain, period_start, metric, value, numerator, denominator, \
           pg AS peer_group, \
           CASE WHEN pg IS NULL THEN NULL \
                WHEN kind = 'ratio' THEN CASE WHEN SUM(denominator) OVER w > 0 \
                  THEN scale * SUM(numerator) OVER w / SUM(denominator) OVER w END \
                WHEN kind = 'component' THEN AVG(value) OVER w \
                WHEN kind = 'median' THEN {pm_value} END AS peer_avg, \
           CASE WHEN pg IS NOT NULL AND value IS NOT NULL THEN RANK() OVER \
             (PARTITION BY level, grain, period_start, metric, pg, value IS NULL ORDER BY value * {sign}) END AS peer_rank, \
           CASE WHEN pg IS NOT NULL THEN COUNT(value) OVER w END AS peer_size \
         FROM peered WINDOW w AS (PARTITION BY level, grain, period_start, metric, pg))",
        last_day = valid_on_last_day("g", "m"),
        pm_col = if peer_medians { ", pm.peer_median" } else { "" },
        pm_join = if peer_medians {
            " LEFT JOIN peer_medians pm ON m.level = 'pharmacy' AND pm.grain = m.grain \
              AND pm.period_start = m.period_start AND pm.metric = m.metric AND pm.pg = g.peer_group"
        } else {
            ""
        },
        pm_value = if peer_medians { "peer_median" } else { "NULL" },
    );
    sql
}

/// The condition that an effective-dated row `r` (valid_from inclusive, valid_to exclusive,
/// NULL = open) is in effect on the last local day of the period of `p` (grain, period_start).
pub(crate) fn valid_on_last_day(r: &str, p: &str) -> String {
    let day = last_day(&format!("{p}."));
    format!("{r}.valid_from <= {day} AND ({r}.valid_to IS NULL OR {day} < {r}.valid_to)")
}

/// The last local day of the period of a row with grain and period_start; `prefix` qualifies
/// the columns (`"m."`, or `""`).
pub(crate) fn last_day(prefix: &str) -> String {
    format!(
        "CAST(rx_period_end({prefix}grain, {prefix}period_start) - INTERVAL '1 microsecond' AS DATE)"
    )
}

/// The sets of distinct contributors in `column` (a rollup's `<source>_distinct_<column>`)
/// merged into one (an aggregate): NULL where every row's is NULL.
fn merged_set(column: &str) -> String {
    format!("array_distinct(flatten(array_agg({column}) FILTER (WHERE {column} IS NOT NULL)))")
}

/// The distinct values, sorted.
fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = values.collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn float(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// Where a rollup's rows are computed from: the landed tables, or a finer rollup that holds
/// every measure of it.
#[derive(Debug, Clone, Copy)]
pub enum ContentFrom<'a> {
    Raw,
    Rollup(RollupSource<'a>),
}

/// The part of a rollup to compute: the periods from `periods.0` to `periods.1` (period starts
/// at the rollup's grain, inclusive) of the pharmacies whose ids lie in `among` (inclusive; all
/// of them when `None`), or every period of `pharmacies`, or both; everything when neither is
/// given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Part {
    pub periods: Option<(NaiveDateTime, NaiveDateTime)>,
    /// The least and greatest pharmacy id of the changed facts (text order, as Delta's
    /// statistics and SQL compare them): a file of one pharmacy's events touches only its rows.
    pub among: Option<(String, String)>,
    pub pharmacies: Vec<String>,
}

impl Part {
    /// The condition on a rollup row (`pharmacy_id`, `period_start`) that selects the part;
    /// `None` for everything.
    pub fn predicate(&self) -> Option<String> {
        let mut any = Vec::new();
        if let Some((lo, hi)) = self.periods {
            // arrow_cast literals: the form Delta's replaceWhere records in its log.
            let ts = |t: NaiveDateTime| {
                format!(
                    "arrow_cast('{}', 'Timestamp(Microsecond, None)')",
                    t.format("%Y-%m-%dT%H:%M:%S%.6f")
                )
            };
            // The month partitions first: only their files are read and rewritten.
            let month = |t: NaiveDateTime| {
                format!(
                    "arrow_cast('{}', 'Date32')",
                    t.date().with_day(1).unwrap_or(t.date()).format("%Y-%m-%d")
                )
            };
            any.push(format!(
                "(period_month >= {} AND period_month <= {} AND period_start >= {} AND period_start <= {}{})",
                month(lo),
                month(hi),
                ts(lo),
                ts(hi),
                self.among_condition()
            ));
        }
        if !self.pharmacies.is_empty() {
            any.push(format!("pharmacy_id IN ({})", in_list(&self.pharmacies)));
        }
        (!any.is_empty()).then(|| any.join(" OR "))
    }

    /// ` AND pharmacy_id BETWEEN ..` for [`Self::among`]; empty when it is `None`.
    fn among_condition(&self) -> String {
        match &self.among {
            Some((lo, hi)) => format!(
                " AND pharmacy_id >= {} AND pharmacy_id <= {}",
                quote(lo),
                quote(hi)
            ),
            None => String::new(),
        }
    }

    pub fn is_everything(&self) -> bool {
        self.periods.is_none() && self.pharmacies.is_empty()
    }
}

/// The partition column of a rollup table: the first day of the month of `period_start`, so a
/// refresh reads and rewrites only the months it touches.
pub const PERIOD_MONTH: &str = "period_month";

/// The rows of `rollup` in `part`: per pharmacy, org version (`org_from`, the `valid_from` of
/// the pharmacy's org row in effect) and period of the rollup's grain, each kept component
/// summed, each kept median's histogram, and each source's fact rows. The org path itself is
/// not stored: it is joined at query time from `org_from`, so renaming or reassigning an org
/// row changes no rollup row.
pub fn rollup_content_sql(
    def: &CubeDef,
    rollup: &RollupDef,
    from: ContentFrom,
    part: &Part,
) -> String {
    let anchor = date_literal(def.time.pay_period_anchor);
    let grain = quote(rollup.grain.as_str());
    let (components, medians) = def.rollup_measures(rollup);
    let sources = rollup_sources(def, rollup);
    let sets = rollup_sets(def, rollup);
    let predicate = part
        .predicate()
        .map(|p| format!(" WHERE {p}"))
        .unwrap_or_default();
    let merged = components
        .iter()
        .map(|c| format!("COALESCE(SUM({0}), 0) AS {0}", c.name))
        .chain(
            medians
                .iter()
                .map(|d| format!("rx_hist_merge({0}) AS {0}", d.name)),
        )
        .chain(
            sources
                .iter()
                .map(|s| format!("COALESCE(SUM({0}), 0) AS {0}", rows_column(s))),
        )
        .chain(
            sets.iter()
                .map(|set| format!("{} AS {}", set.capped(&merged_set(&set.name)), set.name)),
        )
        .collect::<Vec<_>>()
        .join(", ");
    let body = match from {
        ContentFrom::Rollup(finer) => {
            let bound = match (&part.periods, part.pharmacies.is_empty()) {
                (Some((lo, hi)), true) => format!(
                    " WHERE period_start >= TIMESTAMP '{}' AND period_start < TIMESTAMP '{}'{}",
                    lo.format("%Y-%m-%dT%H:%M:%S"),
                    crate::time::period_end(rollup.grain, *hi).format("%Y-%m-%dT%H:%M:%S"),
                    part.among_condition()
                ),
                _ => String::new(),
            };
            format!(
                "SELECT pharmacy_id, org_from, rx_period_start({grain}, period_start, {anchor}) AS period_start, \
                   {merged} FROM {}{bound} GROUP BY 1, 2, 3",
                finer.table
            )
        }
        ContentFrom::Raw => {
            // Only periods bound the facts read (not with a pharmacy part: its rows span all
            // time; DataFusion pushes the pharmacy filter down instead).
            let periods = part.periods.filter(|_| part.pharmacies.is_empty());
            let facts_slice = Slice {
                levels: vec!["pharmacy"],
                grains: vec![rollup.grain],
                metrics: Vec::new(),
                nodes: None,
                period_from: periods.map(|p| p.0),
                period_to: periods.map(|p| p.1),
                peers: false,
                protect: false,
            };
            let mut ctes = vec![rx_tz_cte(def)];
            let mut branches = Vec::new();
            for source in &sources {
                let (facts, bucketed) =
                    source_facts_sql(def, &facts_slice, source, &components, &medians);
                ctes.push(format!("{source}_facts AS ({facts})"));
                let mut cols = Vec::new();
                for c in &components {
                    cols.push(if c.source != *source {
                        format!("CAST(NULL AS DOUBLE) AS {}", c.name)
                    } else if bucketed {
                        format!("SUM(e.{0}) AS {0}", c.name)
                    } else {
                        component_sum(c)
                    });
                }
                for d in &medians {
                    cols.push(if d.source.as_deref() == Some(*source) {
                        format!(
                            "rx_hist(CASE WHEN {} THEN CAST({} AS DOUBLE) END) AS {}",
                            d.filter.as_deref().unwrap_or("TRUE"),
                            d.value.as_deref().unwrap_or("NULL"),
                            d.name
                        )
                    } else {
                        format!("rx_hist(CAST(NULL AS DOUBLE)) AS {}", d.name)
                    });
                }
                for s in &sources {
                    cols.push(if s == source {
                        format!("COUNT(*) AS {}", rows_column(s))
                    } else {
                        format!("CAST(NULL AS BIGINT) AS {}", rows_column(s))
                    });
                }
                for set in &sets {
                    let name = &set.name;
                    cols.push(if set.source == *source {
                        let all = format!("array_agg(DISTINCT CAST(e.{} AS VARCHAR))", set.column);
                        format!("{} AS {name}", set.capped(&all))
                    } else {
                        format!("array_agg(CAST(NULL AS VARCHAR)) FILTER (WHERE FALSE) AS {name}")
                    });
                }
                branches.push(format!(
                    "SELECT e.pharmacy_id, o.valid_from AS org_from, \
                       rx_period_start({grain}, e.local_ts, {anchor}) AS period_start, {} \
                     FROM {} GROUP BY 1, 2, 3",
                    cols.join(", "),
                    placed_as_was(source)
                ));
            }
            format!(
                "WITH {} SELECT pharmacy_id, org_from, period_start, {merged} FROM ({}) GROUP BY 1, 2, 3",
                ctes.join(", "),
                branches.join(" UNION ALL ")
            )
        }
    };
    format!(
        "SELECT * FROM (SELECT CAST(pharmacy_id AS VARCHAR) AS pharmacy_id, CAST(org_from AS DATE) AS org_from, \
           arrow_cast(period_start, 'Timestamp(Microsecond, None)') AS period_start, {}, \
           CAST(date_trunc('month', period_start) AS DATE) AS {PERIOD_MONTH} \
         FROM ({body})){predicate}",
        components
            .iter()
            .map(|c| format!("CAST({0} AS DOUBLE) AS {0}", c.name))
            .chain(medians.iter().map(|d| d.name.clone()))
            .chain(
                sources
                    .iter()
                    .map(|s| format!("CAST({0} AS BIGINT) AS {0}", rows_column(s)))
            )
            .chain(sets.iter().map(|set| set.name.clone()))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A set of distinct contributors a rollup keeps per row, for a small-cell rule that counts
/// distinct values of a fact column of a source it reads.
///
/// A row keeps at most `keep` (the rule's minimum) of its cell's values, the smallest: a
/// cell is suppressed when its count is below the minimum, and that test is exact on the
/// capped sets. A cell of at least `keep` values keeps `keep` of them, and any union that
/// holds it has at least `keep` too; a cell of fewer keeps them all, so a union of such
/// cells is exact. Rows stay a few ids wide at every grain instead of a pharmacy's staff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupSet<'a> {
    /// The rollup column, `<source>_distinct_<column>`.
    pub name: String,
    pub source: &'a str,
    /// The fact column whose distinct values are kept.
    pub column: &'a str,
    pub keep: u32,
}

impl RollupSet<'_> {
    /// `set` (an array expression) cut to the values a rollup row keeps.
    fn capped(&self, set: &str) -> String {
        format!("array_slice(array_sort({set}), 1, {})", self.keep)
    }
}

/// The sets of distinct contributors a rollup keeps per row ([`RollupSet`]).
pub fn rollup_sets<'a>(def: &'a CubeDef, rollup: &RollupDef) -> Vec<RollupSet<'a>> {
    let sources = rollup_sources(def, rollup);
    def.small_cells
        .iter()
        .filter(|r| sources.contains(&r.source.as_str()))
        .filter_map(|r| {
            let column = r.distinct.as_deref()?;
            Some(RollupSet {
                name: distinct_column(&r.source, column),
                source: r.source.as_str(),
                column,
                keep: r.minimum,
            })
        })
        .collect()
}

/// The fact sources a rollup's measures draw on, sorted.
pub fn rollup_sources<'a>(def: &'a CubeDef, rollup: &RollupDef) -> Vec<&'a str> {
    let (components, medians) = def.rollup_measures(rollup);
    distinct(
        components
            .iter()
            .map(|c| c.source.as_str())
            .chain(medians.iter().filter_map(|d| d.source.as_deref())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The columns `cube.toml` expressions are checked against are those the facts carry.
    #[tokio::test]
    async fn source_schemas_are_the_facts_columns() {
        let ctx = datafusion::prelude::SessionContext::new();
        crate::udf::register(&ctx);
        for table in rxcube_model::TableName::ALL {
            let schema = table.def().schema();
            let empty =
                datafusion::datasource::MemTable::try_new(schema, vec![vec![]]).expect("table");
            ctx.register_table(table.as_str(), std::sync::Arc::new(empty))
                .expect("register");
        }
        let def = CubeDef::built_in();
        let slice = Slice {
            levels: vec![],
            grains: vec![],
            metrics: vec![],
            nodes: None,
            period_from: None,
            period_to: None,
            peers: false,
            protect: false,
        };
        for source in crate::definition::SOURCES {
            let sql = format!(
                "WITH {} SELECT * FROM ({})",
                rx_tz_cte(&def),
                facts_sql(&def, &slice, source)
            );
            let planned = ctx.sql(&sql).await.expect("plan");
            let columns = |schema: &arrow::datatypes::Schema| {
                schema
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), f.data_type().clone()))
                    .collect::<Vec<_>>()
            };
            let got = columns(planned.schema().as_arrow());
            let want = columns(&source_schema(source).expect("a source"));
            assert_eq!(got, want, "{source}");
        }
    }
}
