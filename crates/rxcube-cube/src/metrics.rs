//! `cube.metrics`: the relation that plans each query's slice of the cube.
//!
//! Filters on `level`, `grain`, `metric` and `node` (`=`, `IN`, or `OR`s of them) are pushed
//! into [`Slice`]: the scan then reads only the fact tables those metrics draw on and
//! aggregates only those levels and grains. Bounds on `period_start` become bounds on the
//! events' instants (widened by the largest UTC offset and the longest period), so the Delta
//! scans skip the months and row groups outside them. A query that reads no peer column gets no
//! peer ranking, so its node filter applies before aggregation at every level. DataFusion
//! re-applies every filter above the scan (they are *inexact*), so pushing one down never
//! changes an answer. `EXPLAIN` shows the generated plan under the scan.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use chrono::NaiveDateTime;
use datafusion::catalog::Session;
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use crate::CubeOptions;
use crate::definition::{CubeDef, LEVELS};
use crate::relation::{Column, Planned, Relation};
use crate::rollup::{Choice, Rollups};
use crate::sql::{RollupSource, Slice, metrics_sql};
use crate::time::Grain;

/// The columns of `cube.metrics`, with what they mean.
pub const COLUMNS: [(&str, &str); 12] = [
    (
        "level",
        "org level: pharmacy, local_area, service_area, region, division",
    ),
    ("node", "the pharmacy id, the area or region name, or ALL"),
    ("grain", "hour, day, week, pay_period, month, quarter, year"),
    (
        "period_start",
        "local wall-clock time at which the period begins",
    ),
    ("metric", "metric or component name (see cube.toml)"),
    (
        "value",
        "the metric; NULL when its denominator is not positive",
    ),
    ("numerator", "pooled numerator of a ratio; NULL otherwise"),
    (
        "denominator",
        "pooled denominator of a ratio; NULL otherwise",
    ),
    (
        "peer_group",
        "pharmacy level: the peer group on the period's last local day",
    ),
    ("peer_avg", "pharmacy level: the peer group's pooled value"),
    (
        "peer_rank",
        "pharmacy level: RANK() among the peer group, 1 = best; NULL values unranked",
    ),
    ("peer_size", "pharmacy level: peers with a value"),
];

/// The peer columns: a query reading none of them needs no peer ranking.
const PEER_COLUMNS: [&str; 4] = ["peer_group", "peer_avg", "peer_rank", "peer_size"];

#[derive(Debug)]
pub struct MetricsTable {
    def: Arc<CubeDef>,
    rollups: Arc<Rollups>,
    columns: Vec<Column>,
}

impl MetricsTable {
    pub fn new(def: Arc<CubeDef>, rollups: Arc<Rollups>) -> Self {
        let ty = |name: &str| match name {
            "period_start" => DataType::Timestamp(TimeUnit::Microsecond, None),
            "value" | "numerator" | "denominator" | "peer_avg" => DataType::Float64,
            "peer_rank" | "peer_size" => DataType::Int64,
            _ => DataType::Utf8,
        };
        Self {
            def,
            rollups,
            columns: COLUMNS
                .iter()
                .map(|(n, doc)| Column::new(*n, ty(n), *doc))
                .collect(),
        }
    }

    /// The slice of the cube that `filters` (ANDed) select.
    pub fn slice(&self, filters: &[Expr], peers: bool, protect: bool) -> Result<Slice> {
        let mut levels: Option<HashSet<String>> = None;
        let mut grains: Option<HashSet<String>> = None;
        let mut metrics: Option<HashSet<String>> = None;
        let mut nodes: Option<HashSet<String>> = None;
        let (period_from, period_to) = period_window(filters);
        for f in filters {
            if period_bounds(f).is_some() {
                continue;
            }
            let Some((column, values)) = column_values(f) else {
                continue;
            };
            let slot = match column.as_str() {
                "level" => &mut levels,
                "grain" => &mut grains,
                "metric" => &mut metrics,
                "node" => &mut nodes,
                _ => continue,
            };
            let values: HashSet<String> = values.into_iter().collect();
            *slot = Some(match slot.take() {
                Some(prev) => prev.intersection(&values).cloned().collect(),
                None => values,
            });
        }
        for l in levels.iter().flatten() {
            if !LEVELS.contains(&l.as_str()) {
                return plan_err!("unknown level '{l}'; the levels are {}", LEVELS.join(", "));
            }
        }
        for g in grains.iter().flatten() {
            if Grain::parse(g).is_none() {
                return plan_err!(
                    "unknown grain '{g}'; the grains are {}",
                    Grain::ALL.map(Grain::as_str).join(", ")
                );
            }
        }
        let names = self.def.metric_names();
        for m in metrics.iter().flatten() {
            if !names.contains(&m.as_str()) {
                return plan_err!("unknown metric '{m}'; the metrics are {}", names.join(", "));
            }
        }
        Ok(Slice {
            levels: LEVELS
                .into_iter()
                .filter(|l| levels.as_ref().is_none_or(|s| s.contains(*l)))
                .collect(),
            grains: Grain::ALL
                .into_iter()
                .filter(|g| grains.as_ref().is_none_or(|s| s.contains(g.as_str())))
                .collect(),
            metrics: names
                .into_iter()
                .filter(|m| metrics.as_ref().is_none_or(|s| s.contains(*m)))
                .map(str::to_string)
                .collect(),
            nodes: nodes.map(|n| {
                let mut v: Vec<String> = n.into_iter().collect();
                v.sort();
                v
            }),
            period_from,
            period_to,
            peers,
            protect,
        })
    }
}

/// `col = 'x'`, `col IN ('x', 'y')` and `OR`s of those on one column.
fn column_values(e: &Expr) -> Option<(String, Vec<String>)> {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => {
                Some((c.name.clone(), vec![text(v)?]))
            }
            _ => None,
        },
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let (a, mut va) = column_values(left)?;
            let (b, vb) = column_values(right)?;
            (a == b).then(|| {
                va.extend(vb);
                (a, va)
            })
        }
        Expr::InList(list) if !list.negated => {
            let Expr::Column(c) = list.expr.as_ref() else {
                return None;
            };
            let values = list
                .list
                .iter()
                .map(|v| match v {
                    Expr::Literal(v, _) => text(v),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some((c.name.clone(), values))
        }
        _ => None,
    }
}

/// Bounds on `period_start` from `period_start <op> TIMESTAMP '...'` (either side) or
/// `period_start BETWEEN a AND b`: (lowest, highest) allowed, inclusive.
pub(crate) type Bounds = (Option<NaiveDateTime>, Option<NaiveDateTime>);

/// The bounds on `period_start` that all of `filters` (ANDed) allow.
pub(crate) fn period_window(filters: &[Expr]) -> Bounds {
    let (mut from, mut to) = (None, None);
    for (lo, hi) in filters.iter().filter_map(period_bounds) {
        from = from.max(lo);
        to = match (to, hi) {
            (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
            (a, b) => a.or(b),
        };
    }
    (from, to)
}

fn period_bounds(e: &Expr) -> Option<Bounds> {
    let is_period = |e: &Expr| matches!(e, Expr::Column(c) if c.name == "period_start");
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, value) = match (left.as_ref(), right.as_ref()) {
                (l, Expr::Literal(v, _)) if is_period(l) => (*op, v),
                (Expr::Literal(v, _), r) if is_period(r) => (op.swap()?, v),
                _ => return None,
            };
            let t = timestamp(value)?;
            match op {
                Operator::Eq => Some((Some(t), Some(t))),
                Operator::Gt | Operator::GtEq => Some((Some(t), None)),
                Operator::Lt | Operator::LtEq => Some((None, Some(t))),
                _ => None,
            }
        }
        Expr::Between(b) if !b.negated && is_period(&b.expr) => {
            match (b.low.as_ref(), b.high.as_ref()) {
                (Expr::Literal(l, _), Expr::Literal(h, _)) => {
                    Some((Some(timestamp(l)?), Some(timestamp(h)?)))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A zone-less timestamp literal as local wall-clock time.
fn timestamp(v: &ScalarValue) -> Option<NaiveDateTime> {
    let micros = match v {
        ScalarValue::TimestampSecond(Some(x), None) => x.checked_mul(1_000_000)?,
        ScalarValue::TimestampMillisecond(Some(x), None) => x.checked_mul(1_000)?,
        ScalarValue::TimestampMicrosecond(Some(x), None) => *x,
        ScalarValue::TimestampNanosecond(Some(x), None) => x.div_euclid(1_000),
        _ => return None,
    };
    chrono::DateTime::from_timestamp_micros(micros).map(|t| t.naive_utc())
}

fn text(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Some(s.clone()),
        _ => None,
    }
}

impl Relation for MetricsTable {
    fn doc(&self) -> String {
        "One row per org level, node, time grain, period and metric: every metric and additive \
         component of the cube definition (cube.metric_definitions), computed from the landed \
         tables. Ratios are pooled; at the pharmacy level each row carries its peer group, the \
         peer-group average, RANK() among the peers and the peers ranked. Filters on level, \
         node, grain, metric and period_start limit what is read."
            .to_string()
    }

    fn columns(&self) -> &[Column] {
        &self.columns
    }

    fn sql(&self, filters: &[Expr], projection: &[&str]) -> Result<String> {
        let peers = projection.iter().any(|c| PEER_COLUMNS.contains(c));
        let slice = self.slice(filters, peers, false)?;
        Ok(metrics_sql(&self.def, &slice, None))
    }

    fn snapshot(&self) -> Option<&str> {
        Some(self.rollups.snapshot.as_str()).filter(|s| !s.is_empty())
    }

    /// Answers from the rollup [`Rollups::choose`] picks, unless `rxcube.rollups` is off.
    fn plan_sql(
        &self,
        state: &dyn Session,
        filters: &[Expr],
        projection: &[&str],
    ) -> Result<Planned> {
        let peers = projection.iter().any(|c| PEER_COLUMNS.contains(c));
        let options = state.config_options().extensions.get::<CubeOptions>();
        let protect = options.is_some_and(|o| o.small_cells) && !self.def.small_cells.is_empty();
        let mut slice = self.slice(filters, peers, protect)?;
        let mut filters = filters.to_vec();
        // Pharmacies ranked among their peers: every pharmacy is computed whichever is asked
        // for, so the node filter is left to DataFusion above the scan, and every pharmacy's
        // score card of a period shares one cached result.
        if slice.peers && slice.levels == ["pharmacy"] {
            slice.nodes = None;
            filters.retain(|f| !f.column_refs().iter().any(|c| c.name == "node"));
        }
        let enabled = options.is_none_or(|o| o.rollups);
        let choice = if enabled {
            self.rollups.choose(&self.def, &slice)
        } else {
            Choice::Raw {
                reason: "rxcube.rollups is off".into(),
            }
        };
        tracing::debug!(?slice, ?choice, "cube.metrics slice");
        let sql = match &choice {
            Choice::Rollup { table, grain, .. } => metrics_sql(
                &self.def,
                &slice,
                Some(RollupSource {
                    table,
                    grain: *grain,
                }),
            ),
            Choice::Raw { .. } => metrics_sql(&self.def, &slice, None),
        };
        Ok(Planned {
            sql,
            note: Some(choice.note()),
            filters,
        })
    }
}
