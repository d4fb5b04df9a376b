//! The analyst relations over `cube.metrics`: what makes a question one short query.
//!
//! | relation | one row per |
//! |---|---|
//! | `cube.metric_definitions` | metric or component of the cube definition |
//! | `cube.<level>_<grain>` | node and period, every metric a column (wide) |
//! | `cube.rankings` | node, period, metric and ranking (among peers, among siblings) |
//! | `cube.attainment` | pharmacy, period, metric and target tier |
//! | `cube.volume` | node and hour or day: volume, on-time share, median minutes |
//! | `cube.weekly_trend` | node and week: on time, CRP usage, OTC per Rx |
//! | `cube.budget` | pharmacy, coming pay period and labor-cost target tier |
//! | `cube.alerts` | pharmacy, metric and reason it slipped in the current pay period |
//!
//! Each is SQL over `cube.metrics` and the landed reference tables, so filters on its
//! level, node, grain, metric and period columns reach `cube.metrics` and read only that slice
//! (see [`crate::relation`]). The wide views compute only the metrics a query projects; the
//! budget reads only the pay periods its estimate draws on.

use arrow::datatypes::{DataType, TimeUnit};
use chrono::Duration;
use datafusion::common::Result;
use datafusion::logical_expr::Expr;

use crate::definition::{Better, CubeDef, LEVELS, MetricKind, MetricRef};
use crate::metrics::period_window;
use crate::relation::{Column, Relation};
use crate::sql::{in_list, last_day, quote};
use crate::time::Grain;

fn text(name: &str, doc: &str) -> Column {
    Column::new(name, DataType::Utf8, doc)
}
fn double(name: &str, doc: &str) -> Column {
    Column::new(name, DataType::Float64, doc)
}
fn bigint(name: &str, doc: &str) -> Column {
    Column::new(name, DataType::Int64, doc)
}
fn timestamp(name: &str, doc: &str) -> Column {
    Column::new(name, DataType::Timestamp(TimeUnit::Microsecond, None), doc)
}

const LEVEL_DOC: &str = "org level: pharmacy, local_area, service_area, region, division";
const NODE_DOC: &str = "the pharmacy id, the area or region name, or ALL";
const PERIOD_DOC: &str = "local wall-clock time at which the period begins";

/// `max(value) FILTER (WHERE metric = m) AS m` for each metric: one row per cell, metrics as
/// columns.
fn pivot(metrics: &[&str]) -> String {
    metrics
        .iter()
        .map(|m| format!("max(value) FILTER (WHERE metric = {}) AS {m}", quote(m)))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------

/// `cube.metric_definitions`: the cube definition as a table.
#[derive(Debug)]
pub struct MetricDefinitions {
    def: std::sync::Arc<CubeDef>,
    columns: Vec<Column>,
}

impl MetricDefinitions {
    pub fn new(def: std::sync::Arc<CubeDef>) -> Self {
        Self {
            def,
            columns: vec![
                text(
                    "metric",
                    "the name used in cube.metrics and as a wide-view column",
                ),
                text("kind", "component (additive), ratio (pooled) or median"),
                text(
                    "source",
                    "fact source: fills, sales, surveys or payroll; NULL for ratios",
                ),
                text(
                    "numerator",
                    "ratio: SQL over components; component: the value summed",
                ),
                text("denominator", "ratio: SQL over components"),
                text("filter", "the facts counted (component or median)"),
                double("scale", "ratio: the factor applied (100 for percentages)"),
                text("better", "higher or lower: which way ranks run"),
                text("doc", "what the metric means"),
            ],
        }
    }
}

impl Relation for MetricDefinitions {
    fn doc(&self) -> String {
        "Every metric and additive component of the cube definition (cube.toml, or the \
         warehouse's _rxcube/cube.toml), with how it is computed."
            .to_string()
    }

    fn columns(&self) -> &[Column] {
        &self.columns
    }

    fn sql(&self, _: &[Expr], _: &[&str]) -> Result<String> {
        let opt = |s: Option<&str>| s.map_or("CAST(NULL AS VARCHAR)".to_string(), quote);
        let better = |b: Better| {
            quote(if b == Better::Lower {
                "lower"
            } else {
                "higher"
            })
        };
        let mut rows = Vec::new();
        for m in &self.def.metrics {
            let ratio = m.kind == MetricKind::Ratio;
            rows.push(format!(
                "({}, {}, {}, {}, {}, {}, {}, {}, {})",
                quote(&m.name),
                quote(if ratio { "ratio" } else { "median" }),
                opt(m.source.as_deref()),
                opt(if ratio {
                    m.numerator.as_deref()
                } else {
                    m.value.as_deref()
                }),
                opt(m.denominator.as_deref()),
                opt(m.filter.as_deref()),
                if ratio {
                    format!("{:?}", m.scale)
                } else {
                    "CAST(NULL AS DOUBLE)".into()
                },
                better(m.better),
                quote(&m.doc)
            ));
        }
        for c in &self.def.components {
            rows.push(format!(
                "({}, 'component', {}, {}, CAST(NULL AS VARCHAR), {}, CAST(NULL AS DOUBLE), {}, {})",
                quote(&c.name),
                quote(&c.source),
                quote(&c.value),
                opt(c.filter.as_deref()),
                better(c.better),
                quote(&c.doc)
            ));
        }
        Ok(format!(
            "SELECT * FROM (VALUES {}) AS d(metric, kind, source, numerator, denominator, \
             filter, scale, better, doc)",
            rows.join(", ")
        ))
    }
}

// ---------------------------------------------------------------------------------------------

/// `cube.<level>_<grain>`: one row per node and period, every metric a column.
#[derive(Debug)]
pub struct Wide {
    level: &'static str,
    grain: Grain,
    /// The metric columns, in column order.
    metrics: Vec<String>,
    columns: Vec<Column>,
}

impl Wide {
    pub fn new(def: &CubeDef, level: &'static str, grain: Grain) -> Self {
        let mut columns = vec![
            text("node", NODE_DOC),
            timestamp("period_start", PERIOD_DOC),
        ];
        if level == "pharmacy" {
            columns.push(text(
                "peer_group",
                "the peer group on the period's last local day",
            ));
        }
        for name in def.metric_names() {
            let doc = match def.lookup(name) {
                Some(MetricRef::Defined(m)) => m.doc.clone(),
                Some(MetricRef::Component(c)) => c.doc.clone(),
                None => String::new(),
            };
            columns.push(double(name, &doc));
        }
        Self {
            level,
            grain,
            metrics: def.metric_names().into_iter().map(str::to_string).collect(),
            columns,
        }
    }

    /// The relation's name in the `cube` schema.
    pub fn name(level: &str, grain: Grain) -> String {
        format!("{level}_{}", grain.as_str())
    }
}

impl Relation for Wide {
    fn doc(&self) -> String {
        format!(
            "Every metric of cube.metrics as a column, one row per {} and {}. A query computes \
             only the metric columns it reads.",
            self.level.replace('_', " "),
            self.grain.as_str().replace('_', " ")
        )
    }

    fn columns(&self) -> &[Column] {
        &self.columns
    }

    fn sql(&self, _: &[Expr], projection: &[&str]) -> Result<String> {
        let all: Vec<&str> = self.metrics.iter().map(String::as_str).collect();
        let mut metrics: Vec<&str> = all
            .iter()
            .copied()
            .filter(|m| projection.contains(m))
            .collect();
        if metrics.is_empty() {
            // The rows are the cells with any metric; they must not depend on the projection.
            metrics = all;
        }
        let peer_group = if projection.contains(&"peer_group") {
            "max(peer_group) AS peer_group, "
        } else {
            ""
        };
        Ok(format!(
            "SELECT node, period_start, {peer_group}{} FROM cube.metrics \
             WHERE level = {} AND grain = {} AND metric IN ({}) GROUP BY node, period_start",
            pivot(&metrics),
            quote(self.level),
            quote(self.grain.as_str()),
            in_list(&metrics)
        ))
    }
}

// ---------------------------------------------------------------------------------------------

/// A relation of fixed SQL (per cube definition) over `cube.metrics`: the filters of a query
/// reach `cube.metrics` through DataFusion's own pushdown.
#[derive(Debug)]
pub struct View {
    doc: String,
    sql: String,
    columns: Vec<Column>,
    /// The snapshot its relations and tables read ([`View::reading`]); empty: not cached.
    snapshot: String,
}

impl Relation for View {
    fn doc(&self) -> String {
        self.doc.clone()
    }

    fn columns(&self) -> &[Column] {
        &self.columns
    }

    fn sql(&self, _: &[Expr], _: &[&str]) -> Result<String> {
        Ok(self.sql.clone())
    }

    fn body(&self) -> String {
        self.sql.clone()
    }

    /// A view reads `cube.metrics` and landed tables only, all of the one snapshot: its
    /// results are cached like theirs ([`crate::cache`]).
    fn snapshot(&self) -> Option<&str> {
        Some(self.snapshot.as_str()).filter(|s| !s.is_empty())
    }
}

impl View {
    /// The view over `snapshot` (the session's [`crate::rollup::Rollups::snapshot`]), so its
    /// results are cached for that snapshot.
    pub fn reading(self, snapshot: &str) -> Self {
        Self {
            snapshot: snapshot.to_string(),
            ..self
        }
    }

    /// The metrics `cube.volume` reads; a definition without them does not get it.
    pub const VOLUME_METRICS: [&str; 4] = [
        "local_fills",
        "local_on_time",
        "on_time_pct",
        "median_processing_minutes",
    ];
    /// The metrics `cube.weekly_trend` reads.
    pub const TREND_METRICS: [&str; 6] = [
        "on_time_pct",
        "crp_usage_pct",
        "otc_sales_per_rx",
        "local_fills",
        "refills",
        "rx_sold",
    ];

    /// `cube.rankings`: every metric ranked among peers and among sibling org nodes.
    pub fn rankings(def: &CubeDef) -> Self {
        let sign = def.direction_sql("metric");
        let edges = LEVELS
            .windows(2)
            .map(|w| {
                let node = match w[0] {
                    "pharmacy" => "pharmacy_id",
                    l => l,
                };
                let parent = if w[1] == "division" { "'ALL'" } else { w[1] };
                format!(
                    "SELECT {} AS level, {node} AS node, {parent} AS parent, valid_from, valid_to \
                     FROM pharmacies",
                    quote(w[0])
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let sql = format!(
            "WITH m AS (\n  SELECT level, node, grain, period_start, metric, value, peer_group, peer_rank, peer_size\n  \
               FROM cube.metrics WHERE level <> 'division'),\n\
             org AS ({edges}),\n\
             -- the parent in effect on the period's last local day (else the last one before it)\n\
             placed AS (\n  SELECT m.level, m.node, m.grain, m.period_start, m.metric, m.value, m.peer_group, m.peer_rank, m.peer_size,\n    \
               first_value(o.parent ORDER BY (o.valid_to IS NULL OR {day} < o.valid_to) DESC, o.valid_from DESC, o.parent) AS parent\n  \
               FROM m LEFT JOIN org o ON o.level = m.level AND o.node = m.node AND o.valid_from <= {day}\n  \
               GROUP BY m.level, m.node, m.grain, m.period_start, m.metric, m.value, m.peer_group, m.peer_rank, m.peer_size),\n\
             ranked AS (\n  SELECT *,\n    \
               CASE WHEN value IS NOT NULL THEN RANK() OVER (PARTITION BY level, grain, period_start, metric, parent, value IS NULL ORDER BY value * {sign}) END AS sibling_rank,\n    \
               COUNT(value) OVER (PARTITION BY level, grain, period_start, metric, parent) AS sibling_size\n  \
               FROM placed),\n\
             both AS (\n  SELECT level, node, grain, period_start, metric, value, a.ranked_among,\n    \
               CASE WHEN a.ranked_among = 'peer_group' THEN peer_group ELSE parent END AS group_name,\n    \
               CASE WHEN a.ranked_among = 'peer_group' THEN peer_rank ELSE sibling_rank END AS rank,\n    \
               CASE WHEN a.ranked_among = 'peer_group' THEN peer_size ELSE sibling_size END AS group_size\n  \
               FROM ranked CROSS JOIN (VALUES ('peer_group'), ('siblings')) AS a(ranked_among)\n  \
               WHERE a.ranked_among = 'siblings' OR (level = 'pharmacy' AND peer_group IS NOT NULL))\n\
             SELECT level, node, grain, period_start, metric, value, ranked_among, group_name, rank, group_size,\n  \
               string_agg(CASE WHEN rank = 1 THEN node END, ', ') OVER w AS pacesetter_1,\n  \
               max(CASE WHEN rank = 1 THEN value END) OVER w AS pacesetter_1_value,\n  \
               string_agg(CASE WHEN rank = 2 THEN node END, ', ') OVER w AS pacesetter_2,\n  \
               max(CASE WHEN rank = 2 THEN value END) OVER w AS pacesetter_2_value\n\
             FROM both\n\
             WINDOW w AS (PARTITION BY level, grain, period_start, metric, ranked_among, group_name ORDER BY node \
               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)",
            day = last_day("m."),
        );
        Self {
            snapshot: String::new(),
            doc: "Every metric ranked, per period: pharmacies among their peer group (as \
                  cube.metrics ranks them), and every node below the division among its \
                  siblings, the children of the same parent on the period's last local day. \
                  Each row names the group's pacesetters, its first and second. Filter on level, \
                  grain, metric and period_start to read only that slice; a node filter keeps \
                  the ranks among the whole group."
                .to_string(),
            sql,
            columns: vec![
                text(
                    "level",
                    "org level of the ranked node: pharmacy, local_area, service_area, region",
                ),
                text("node", NODE_DOC),
                text("grain", "hour, day, week, pay_period, month, quarter, year"),
                timestamp("period_start", PERIOD_DOC),
                text(
                    "metric",
                    "metric or component name (cube.metric_definitions)",
                ),
                double("value", "the node's value; NULL values are not ranked"),
                text(
                    "ranked_among",
                    "peer_group (pharmacies only) or siblings (the children of the same parent node)",
                ),
                text(
                    "group_name",
                    "the peer group, or the parent node, on the period's last local day",
                ),
                bigint(
                    "rank",
                    "RANK() within the group, 1 = best (lowest where lower is better); ties share a rank",
                ),
                bigint("group_size", "members of the group with a value"),
                text("pacesetter_1", "the node(s) ranked 1 in the group"),
                double("pacesetter_1_value", "their value"),
                text(
                    "pacesetter_2",
                    "the node(s) ranked 2 in the group (none when two tie for first)",
                ),
                double("pacesetter_2_value", "their value"),
            ],
        }
    }

    /// `cube.attainment`: each pharmacy's metrics against its peer group's target tiers.
    pub fn attainment(def: &CubeDef) -> Self {
        let metrics: Vec<&str> = def.metrics.iter().map(|m| m.name.as_str()).collect();
        // At or below the target where lower is better, at or above it otherwise.
        let meets = format!("(value - target) * {} <= 0", def.direction_sql("metric"));
        let sql = format!(
            "WITH m AS (\n  SELECT node, grain, period_start, metric, value, peer_group, {day} AS judged_on\n  \
               FROM cube.metrics WHERE level = 'pharmacy' AND metric IN ({metrics}) AND peer_group IS NOT NULL),\n\
             -- each tier's target in effect on the period's last local day\n\
             t AS (\n  SELECT m.*, t.tier, t.value AS target, t.effective_from, CAST(t.bonus_amount AS DOUBLE) AS bonus_amount,\n    \
               row_number() OVER (PARTITION BY m.node, m.grain, m.period_start, m.metric, t.tier ORDER BY t.effective_from DESC) AS newest\n  \
               FROM m JOIN targets t ON t.peer_group = m.peer_group AND t.metric = m.metric AND t.effective_from <= m.judged_on)\n\
             SELECT node, grain, period_start, metric, value, peer_group, tier,\n  \
               CASE tier WHEN 1 THEN 'threshold' WHEN 2 THEN 'target' WHEN 3 THEN 'stretch' ELSE concat('tier ', tier) END AS tier_name,\n  \
               target, effective_from, judged_on,\n  \
               CASE WHEN value IS NOT NULL THEN {meets} END AS attained,\n  \
               bonus_amount,\n  \
               CASE WHEN value IS NOT NULL AND {meets} THEN bonus_amount ELSE 0.0 END AS bonus_earned\n\
             FROM t WHERE newest = 1",
            day = last_day(""),
            metrics = in_list(&metrics),
        );
        Self {
            snapshot: String::new(),
            doc: "Target attainment: each pharmacy's value of every targeted metric, per \
                  period, against each target tier of its peer group (the peer group and the \
                  target in effect on the period's last local day), with the bonus earned per \
                  tier."
                .to_string(),
            sql,
            columns: vec![
                text("node", "the pharmacy id"),
                text("grain", "hour, day, week, pay_period, month, quarter, year"),
                timestamp("period_start", PERIOD_DOC),
                text("metric", "the metric the target is set on"),
                double("value", "the pharmacy's value (cube.metrics)"),
                text(
                    "peer_group",
                    "the pharmacy's peer group on the period's last local day",
                ),
                Column::new(
                    "tier",
                    DataType::Int32,
                    "1 = threshold, 2 = target, 3 = stretch, ...",
                ),
                text("tier_name", "threshold, target, stretch, or 'tier N'"),
                double(
                    "target",
                    "the tier's value in effect on the period's last local day",
                ),
                Column::new(
                    "effective_from",
                    DataType::Date32,
                    "the date that target value took effect",
                ),
                Column::new("judged_on", DataType::Date32, "the period's last local day"),
                Column::new(
                    "attained",
                    DataType::Boolean,
                    "the value meets the target (at or below it where lower is better, at or above otherwise); NULL without a value",
                ),
                double("bonus_amount", "the tier's bonus, USD"),
                double("bonus_earned", "the bonus when attained, else 0, USD"),
            ],
        }
    }

    /// `cube.alerts`: the pharmacies' metrics that slipped in the current pay period.
    pub fn alerts(def: &CubeDef) -> Self {
        let metrics: Vec<&str> = def.metrics.iter().map(|m| m.name.as_str()).collect();
        let sql = format!(
            "WITH m AS (\n  SELECT node, period_start, metric, value, peer_group, peer_avg, {day} AS judged_on, {dir} AS dir\n  \
               FROM cube.metrics WHERE level = 'pharmacy' AND grain = 'pay_period' AND metric IN ({metrics}) \
               AND value IS NOT NULL),\n\
             -- the threshold (tier 1) in effect on the period's last local day\n\
             threshold AS (\n  SELECT m.*, t.value AS target,\n    \
               row_number() OVER (PARTITION BY m.node, m.period_start, m.metric ORDER BY t.effective_from DESC) AS newest\n  \
               FROM m JOIN targets t ON t.peer_group = m.peer_group AND t.metric = m.metric AND t.tier = 1 \
                 AND t.effective_from <= m.judged_on),\n\
             flagged AS (\n  \
               SELECT node, period_start, metric, value, 'below threshold' AS reason, target AS reference\n  \
               FROM threshold WHERE newest = 1 AND (value - target) * dir > 0\n  \
               UNION ALL\n  \
               SELECT node, period_start, metric, value, 'below peer average' AS reason, peer_avg AS reference\n  \
               FROM m WHERE peer_avg IS NOT NULL AND (value - peer_avg) * dir > {margin} / 100.0 * abs(peer_avg)),\n\
             -- runs of consecutive pay periods (14 days apart) flagged for the same reason\n\
             islands AS (\n  SELECT *, CAST(floor(date_part('epoch', period_start) / 1209600.0) AS BIGINT)\n    \
               - row_number() OVER (PARTITION BY node, metric, reason ORDER BY period_start) AS island\n  FROM flagged),\n\
             runs AS (\n  SELECT *, min(period_start) OVER (PARTITION BY node, metric, reason, island) AS since,\n    \
               count(*) OVER (PARTITION BY node, metric, reason, island) AS periods\n  FROM islands),\n\
             current_period AS (SELECT max(period_start) AS period_start FROM cube.metrics \
               WHERE level = 'pharmacy' AND grain = 'pay_period')\n\
             SELECT 'pharmacy' AS level, r.node, 'pay_period' AS grain, r.period_start, r.metric, r.value, r.reason,\n  \
               r.reference, since, periods\n\
             FROM runs r JOIN current_period c ON r.period_start = c.period_start",
            day = last_day(""),
            dir = def.direction_sql("metric"),
            metrics = in_list(&metrics),
            margin = def.alerts.peer_margin_pct,
        );
        Self {
            snapshot: String::new(),
            doc: format!(
                "Alerts: the pharmacies whose metric in the current pay period (the latest with \
                 facts, still open) is worse than their peer group's threshold tier (tier 1, \
                 in effect on the period's last local day), or worse than their peer average by \
                 more than {}% of it (cube.toml [alerts] peer_margin_pct), with how many \
                 consecutive pay periods it has been so.",
                def.alerts.peer_margin_pct
            ),
            sql,
            columns: vec![
                text("level", "pharmacy"),
                text("node", "the pharmacy id"),
                text("grain", "pay_period"),
                timestamp("period_start", "the current pay period's first local day"),
                text("metric", "the metric that slipped"),
                double("value", "the pharmacy's value (cube.metrics)"),
                text("reason", "'below threshold' or 'below peer average'"),
                double(
                    "reference",
                    "what it is worse than: the threshold target, or the peer average",
                ),
                timestamp(
                    "since",
                    "the first pay period of the run of consecutive ones flagged for the reason",
                ),
                bigint(
                    "periods",
                    "pay periods in that run, the current one included",
                ),
            ],
        }
    }

    /// `cube.volume`: hourly and daily volume and processing.
    pub fn volume() -> Self {
        let m = Self::VOLUME_METRICS;
        Self {
            snapshot: String::new(),
            doc: "Diagnostics of volume and processing per hour and per day, at every org \
                  level: local fills, the on-time share and the median processing minutes. \
                  Filter on level, node, grain and period_start (say, the hours of one day or \
                  the days of one week)."
                .to_string(),
            sql: format!(
                "SELECT level, node, grain, period_start,\n  \
                   CASE WHEN grain = 'hour' THEN CAST(date_part('hour', period_start) AS BIGINT) END AS hour_of_day,\n  \
                   to_char(period_start, '%a') AS day_of_week,\n  {}\n\
                 FROM cube.metrics WHERE grain IN ('hour', 'day') AND metric IN ({})\n\
                 GROUP BY level, node, grain, period_start",
                pivot(&m),
                in_list(&m)
            ),
            columns: vec![
                text("level", LEVEL_DOC),
                text("node", NODE_DOC),
                text("grain", "hour or day"),
                timestamp("period_start", PERIOD_DOC),
                bigint("hour_of_day", "hour grain: the local hour, 0-23"),
                text("day_of_week", "the local day of the week: Mon ... Sun"),
                bigint(
                    "local_fills",
                    "fills processed by the pharmacies themselves",
                ),
                bigint(
                    "local_on_time",
                    "local fills processed in under the target minutes",
                ),
                double(
                    "on_time_pct",
                    "local_on_time / local_fills, percent; NULL without local fills",
                ),
                double(
                    "median_processing_minutes",
                    "interpolated median of the local fills' processing minutes",
                ),
            ],
        }
    }

    /// `cube.weekly_trend`: weekly on time, CRP usage and OTC sales per Rx.
    pub fn weekly_trend() -> Self {
        let m = Self::TREND_METRICS;
        Self {
            snapshot: String::new(),
            doc: "Weekly trend (ISO weeks, Monday first) of on-time processing, CRP usage and OTC \
                  sales per Rx, at every org level. For the six months before a day D: \
                  WHERE period_start > D - INTERVAL '6 months' AND period_start <= D."
                .to_string(),
            sql: format!(
                "SELECT level, node, period_start,\n  {}\n\
                 FROM cube.metrics WHERE grain = 'week' AND metric IN ({})\n\
                 GROUP BY level, node, period_start",
                pivot(&m),
                in_list(&m)
            ),
            columns: vec![
                text("level", LEVEL_DOC),
                text("node", NODE_DOC),
                timestamp(
                    "period_start",
                    "the local Monday 00:00 at which the week begins",
                ),
                double("on_time_pct", "local fills on time, percent of local fills"),
                double(
                    "crp_usage_pct",
                    "refills filled by Central Refill Processing, percent of refills",
                ),
                double(
                    "otc_sales_per_rx",
                    "over-the-counter sales dollars per Rx sold",
                ),
                bigint("local_fills", "local fills (on_time_pct's denominator)"),
                bigint("refills", "refills (crp_usage_pct's denominator)"),
                bigint(
                    "rx_sold",
                    "Rx sold net of returns (otc_sales_per_rx's denominator)",
                ),
            ],
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// `cube.budget`: the labor budget that meets each labor-cost target tier.
#[derive(Debug)]
pub struct Budget {
    columns: Vec<Column>,
}

impl Budget {
    /// The pay periods before the budgeted one whose average is the expected volume.
    pub const BASIS_PERIODS: i64 = 4;
    /// The metrics the budget reads.
    pub const METRICS: [&str; 4] = ["rx_sold", "labor_cost", "labor_hours", "labor_cost_per_rx"];
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            columns: vec![
                text("node", "the pharmacy id"),
                timestamp("period_start", "the budgeted pay period's first local day"),
                text(
                    "peer_group",
                    "the pharmacy's peer group on the budgeted period's last day",
                ),
                Column::new("tier", DataType::Int32, "the labor_cost_per_rx target tier"),
                double(
                    "target_labor_cost_per_rx",
                    "the tier's target in effect on the budgeted period's last day, USD per Rx",
                ),
                bigint(
                    "basis_periods",
                    "pay periods with facts among the 4 before the budgeted one",
                ),
                double(
                    "expected_rx",
                    "Rx sold per pay period, averaged over the basis periods",
                ),
                double(
                    "cost_per_hour",
                    "labor cost / labor hours over the basis periods, USD",
                ),
                double(
                    "budget_dollars",
                    "target_labor_cost_per_rx * expected_rx: the labor budget meeting the tier, USD",
                ),
                double("budget_hours", "budget_dollars / cost_per_hour"),
            ],
        }
    }
}

impl Relation for Budget {
    fn doc(&self) -> String {
        format!(
            "Budget estimator: for each pharmacy and each pay period after one with facts (up \
             to {n} ahead), the labor budget that meets each labor_cost_per_rx target tier of \
             its peer group, given its expected Rx volume (the average over the {n} pay \
             periods before) in dollars and in hours at its average cost per hour over those \
             periods. Filter on node and period_start: only the periods the estimate draws on \
             are read.",
            n = Self::BASIS_PERIODS
        )
    }

    fn columns(&self) -> &[Column] {
        &self.columns
    }

    fn sql(&self, filters: &[Expr], _: &[&str]) -> Result<String> {
        // Bounds on the budgeted period bound the basis periods read.
        let (from, to) = period_window(filters);
        let span = Duration::days(14 * Self::BASIS_PERIODS);
        let fmt =
            |t: chrono::NaiveDateTime| format!("TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S"));
        let mut window = String::new();
        if let Some(f) = from {
            window.push_str(&format!(" AND period_start >= {}", fmt(f - span)));
        }
        if let Some(t) = to {
            window.push_str(&format!(" AND period_start < {}", fmt(t)));
        }
        let n = Self::BASIS_PERIODS;
        let ahead = (1..=n)
            .map(|k| format!("(INTERVAL '{} days')", 14 * k))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(format!(
            "WITH basis AS (\n  SELECT node, period_start, {pivot}\n  FROM cube.metrics \
               WHERE level = 'pharmacy' AND grain = 'pay_period' \
               AND metric IN ('rx_sold', 'labor_cost', 'labor_hours'){window}\n  \
               GROUP BY node, period_start),\n\
             est AS (\n  SELECT b.node, b.period_start + k.ahead AS period_start,\n    \
               count(*) AS basis_periods, avg(COALESCE(b.rx_sold, 0)) AS expected_rx,\n    \
               CASE WHEN sum(b.labor_hours) > 0 THEN sum(b.labor_cost) / sum(b.labor_hours) END AS cost_per_hour\n  \
               FROM basis b CROSS JOIN (VALUES {ahead}) AS k(ahead) GROUP BY 1, 2),\n\
             dated AS (SELECT *, CAST(rx_period_end('pay_period', period_start) - INTERVAL '1 microsecond' AS DATE) AS last_day FROM est),\n\
             tiers AS (\n  SELECT d.*, g.peer_group, t.tier, t.value AS target,\n    \
               row_number() OVER (PARTITION BY d.node, d.period_start, t.tier ORDER BY t.effective_from DESC) AS newest\n  \
               FROM dated d JOIN peer_groups g ON g.pharmacy_id = d.node \
                 AND g.valid_from <= d.last_day AND (g.valid_to IS NULL OR d.last_day < g.valid_to)\n  \
               JOIN targets t ON t.peer_group = g.peer_group AND t.metric = 'labor_cost_per_rx' \
                 AND t.effective_from <= d.last_day)\n\
             SELECT node, period_start, peer_group, tier, target AS target_labor_cost_per_rx, basis_periods,\n  \
               expected_rx, cost_per_hour, target * expected_rx AS budget_dollars,\n  \
               CASE WHEN cost_per_hour > 0 THEN target * expected_rx / cost_per_hour END AS budget_hours\n\
             FROM tiers WHERE newest = 1",
            pivot = pivot(&["rx_sold", "labor_cost", "labor_hours"]),
        ))
    }
}
