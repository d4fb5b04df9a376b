//! `cube.metrics`: a table provider that plans each query's slice of the cube.
//!
//! Filters on `level`, `grain`, `metric` and `node` (`=`, `IN`, or `OR`s of them) are pushed
//! into [`Slice`]: the scan then reads only the fact tables those metrics draw on and
//! aggregates only those levels and grains. Bounds on `period_start` become bounds on the
//! events' instants (widened by the largest UTC offset and the longest period), so the Delta
//! scans skip the months and row groups outside them. DataFusion re-applies every filter above the scan
//! (they are *inexact*), so pushing one down never changes an answer. `EXPLAIN` shows the
//! generated plan under the scan.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use chrono::NaiveDateTime;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use crate::definition::{CubeDef, LEVELS};
use crate::sql::{Slice, metrics_sql};
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

pub fn schema() -> SchemaRef {
    let ty = |name: &str| match name {
        "period_start" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "value" | "numerator" | "denominator" | "peer_avg" => DataType::Float64,
        "peer_rank" | "peer_size" => DataType::Int64,
        _ => DataType::Utf8,
    };
    Arc::new(Schema::new(
        COLUMNS
            .iter()
            .map(|(n, _)| Field::new(*n, ty(n), true))
            .collect::<Vec<_>>(),
    ))
}

#[derive(Debug)]
pub struct MetricsTable {
    def: Arc<CubeDef>,
    schema: SchemaRef,
}

impl MetricsTable {
    pub fn new(def: Arc<CubeDef>) -> Self {
        Self {
            def,
            schema: schema(),
        }
    }

    /// The slice of the cube that `filters` (ANDed) select.
    pub fn slice(&self, filters: &[Expr]) -> Result<Slice> {
        let mut levels: Option<HashSet<String>> = None;
        let mut grains: Option<HashSet<String>> = None;
        let mut metrics: Option<HashSet<String>> = None;
        let mut nodes: Option<HashSet<String>> = None;
        let (mut period_from, mut period_to) = (None, None);
        for f in filters {
            if let Some((from, to)) = period_bounds(f) {
                period_from = period_from.max(from);
                period_to = match (period_to, to) {
                    (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                    (a, b) => a.or(b),
                };
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
type Bounds = (Option<NaiveDateTime>, Option<NaiveDateTime>);

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

#[async_trait]
impl TableProvider for MetricsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match column_values(f) {
                Some((c, _)) if ["level", "grain", "metric", "node"].contains(&c.as_str()) => {
                    TableProviderFilterPushDown::Inexact
                }
                _ if period_bounds(f).is_some() => TableProviderFilterPushDown::Inexact,
                _ => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let slice = self.slice(filters)?;
        let sql = metrics_sql(&self.def, &slice);
        tracing::debug!(?slice, %sql, "cube.metrics slice");
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| DataFusionError::Internal("cube.metrics needs a SessionState".into()))?;
        // The slice is planned and optimized here, then embedded in the outer plan, whose
        // optimizer runs over it again: dynamic filters built now would be invalidated by the
        // outer join reordering, so the outer pass adds them instead.
        let mut state = state.clone();
        let optimizer = &mut state.config_mut().options_mut().optimizer;
        optimizer.enable_dynamic_filter_pushdown = false;
        optimizer.enable_join_dynamic_filter_pushdown = false;
        let ctx = SessionContext::new_with_state(state);
        let df = ctx.sql(&sql).await?;
        let columns: Vec<&str> = match projection {
            Some(p) => p.iter().map(|i| COLUMNS[*i].0).collect(),
            None => COLUMNS.iter().map(|(n, _)| *n).collect(),
        };
        df.select_columns(&columns)?.create_physical_plan().await
    }
}
