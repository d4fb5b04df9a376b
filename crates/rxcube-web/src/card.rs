//! The score card: `/card/<level>/<node>?period=YYYY-MM-DD`.
//!
//! Five graphs, one per key metric: labor cost per Rx sold, % Rx processed on time, OTC sales
//! per Rx and % refills by CRP by pay period (the 13 pay periods up to the card's), customer
//! satisfaction by quarter (the four rating shares, the 4 quarters up to the one the pay
//! period starts in). At the pharmacy level each graph has the target tiers in effect
//! (`cube.attainment`) and the peer-group average (`cube.metrics.peer_avg`), and beside it the
//! period's value, peer average, rank of peer size and the two pacesetters (`cube.rankings`,
//! ranked among the peer group). Above it, the node's consolidated values, and its children
//! ranked on each metric (`cube.rankings`, ranked among siblings), each linking to its card.
//!
//! Every number is read from the cube relations through the user's scoped session. The
//! period defaults to the latest complete pay period of the node: the latest whose 14 days
//! all lie on or before the node's last day with facts (its latest `day` row).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use chrono::{Datelike, Days, Months, NaiveDate};
use maud::{Markup, html};
use rxcube_access::Level;
use serde::Deserialize;

use crate::Web;
use crate::auth::{Remote, SignedIn, card_path, encode, refused, signed_in};
use crate::chart::{self, LineChart, Series, ShareChart, Style};
use crate::data::{PageError, Rows, quote, valid_node};
use crate::diagnostics::{self, Kind};
use crate::page::{Crumb, Unit, layout, reports_nav, respond};

/// A key metric of the card.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub title: &'static str,
    pub unit: Unit,
}

/// The five key metrics, in the card's order.
pub const METRICS: [Metric; 5] = [
    Metric {
        name: "labor_cost_per_rx",
        title: "Labor cost per Rx sold",
        unit: Unit::Dollars,
    },
    Metric {
        name: "csat_pct",
        title: "Customer satisfaction",
        unit: Unit::Percent,
    },
    Metric {
        name: "on_time_pct",
        title: "Rx processed on time",
        unit: Unit::Percent,
    },
    Metric {
        name: "otc_sales_per_rx",
        title: "OTC sales per Rx sold",
        unit: Unit::Dollars,
    },
    Metric {
        name: "crp_usage_pct",
        title: "Refills by CRP",
        unit: Unit::Percent,
    },
];

/// The satisfaction metric, graphed by quarter.
const CSAT: &str = "csat_pct";
/// The four rating shares of the satisfaction graph, bottom first.
const SHARES: [&str; 4] = [
    "pct_very_satisfied",
    "pct_satisfied",
    "pct_dissatisfied",
    "pct_very_dissatisfied",
];
/// Pay periods on a graph (26 weeks) and quarters on the satisfaction graph.
const PERIODS: usize = 13;
const QUARTERS: u32 = 4;
/// Days in a pay period.
pub const PAY_PERIOD_DAYS: u64 = 14;

pub fn metric(name: &str) -> Option<Metric> {
    METRICS.iter().copied().find(|m| m.name == name)
}

fn metric_list(names: impl IntoIterator<Item = &'static str>) -> String {
    names.into_iter().map(quote).collect::<Vec<_>>().join(", ")
}

pub fn ts(d: NaiveDate) -> String {
    format!("TIMESTAMP '{} 00:00:00'", d.format("%Y-%m-%d"))
}

/// The level below `level` (none below the pharmacy).
pub fn child_level(level: Level) -> Option<Level> {
    let i = Level::ALL.iter().position(|l| *l == level)?;
    i.checked_sub(1).map(|j| Level::ALL[j])
}

fn parent_levels(level: Level) -> Vec<Level> {
    Level::ALL
        .iter()
        .copied()
        .filter(|l| *l > level && *l != Level::Division)
        .collect()
}

pub fn level_plural(level: Level) -> &'static str {
    match level {
        Level::Pharmacy => "Pharmacies",
        Level::LocalArea => "Local areas",
        Level::ServiceArea => "Service areas",
        Level::Region => "Regions",
        Level::Division => "Divisions",
    }
}

pub fn level_title(level: Level) -> &'static str {
    match level {
        Level::Pharmacy => "Pharmacy",
        Level::LocalArea => "Local area",
        Level::ServiceArea => "Service area",
        Level::Region => "Region",
        Level::Division => "Division",
    }
}

/// The first day of the quarter holding `d`.
pub fn quarter_start(d: NaiveDate) -> NaiveDate {
    let month = (d.month0() / 3) * 3 + 1;
    NaiveDate::from_ymd_opt(d.year(), month, 1).unwrap_or(d)
}

fn quarter_label(q: NaiveDate) -> String {
    format!("{}-Q{}", q.year(), q.month0() / 3 + 1)
}

/// A `?period=` value: a date `YYYY-MM-DD`.
pub fn parse_period(s: Option<&str>) -> Result<Option<NaiveDate>, PageError> {
    match s.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => {
            if s.len() == 10
                && let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
            {
                return Ok(Some(d));
            }
            Err(PageError::BadRequest(
                "The period must be a date, YYYY-MM-DD: the first day of a pay period (or a \
                 day within one)."
                    .into(),
            ))
        }
    }
}

/// A page's target: its level and node, checked to be one that can exist.
pub fn parse_target(level: &str, node: &str) -> Result<(Level, String), PageError> {
    let level: Level = level.parse().map_err(|_| PageError::NotFound)?;
    if !valid_node(node) || (level == Level::Division && node != "ALL") {
        return Err(PageError::NotFound);
    }
    Ok((level, node.to_string()))
}

/// Runs the page's queries in the user's session.
pub struct Reader<'a> {
    pub web: &'a Web,
    pub user: &'a SignedIn,
}

impl Reader<'_> {
    pub async fn rows(&self, sql: &str) -> Result<Rows, PageError> {
        crate::data::query(&self.web.service, self.user, sql).await
    }

    /// The pay periods of the node the user sees (none: no such node, or not the user's),
    /// and the period chosen: the one holding `asked`, else the latest complete one.
    pub async fn pay_periods(
        &self,
        level: Level,
        node: &str,
        asked: Option<NaiveDate>,
    ) -> Result<(Vec<NaiveDate>, NaiveDate, bool), PageError> {
        let where_node = format!(
            "level = {} AND node = {} AND metric IN ({})",
            quote(level.as_str()),
            quote(node),
            metric_list(METRICS.iter().map(|m| m.name))
        );
        let rows = self
            .rows(&format!(
                "SELECT DISTINCT period_start FROM cube.metrics WHERE {where_node} \
                 AND grain = 'pay_period' ORDER BY period_start"
            ))
            .await?;
        let periods: Vec<NaiveDate> = (0..rows.len())
            .filter_map(|i| rows.date(i, "period_start"))
            .collect();
        let Some(&latest) = periods.last() else {
            return Err(PageError::NotFound);
        };
        let end = |p: NaiveDate| p.checked_add_days(Days::new(PAY_PERIOD_DAYS));
        if let Some(d) = asked {
            return periods
                .iter()
                .copied()
                .find(|p| *p <= d && end(*p).is_some_and(|e| d < e))
                .map(|p| (periods.clone(), p, false))
                .ok_or_else(|| {
                    PageError::BadRequest(
                        "This card has no pay period holding that date; choose one of the \
                         periods listed on the card."
                            .into(),
                    )
                });
        }
        let last = self
            .rows(&format!(
                "SELECT max(period_start) AS last_day FROM cube.metrics WHERE {where_node} \
                 AND grain = 'day'"
            ))
            .await?;
        let after_last = last
            .date(0, "last_day")
            .and_then(|d| d.checked_add_days(Days::new(1)));
        let complete = periods
            .iter()
            .rev()
            .copied()
            .find(|p| after_last.is_some_and(|a| end(*p).is_some_and(|e| e <= a)));
        Ok((
            periods.clone(),
            complete.unwrap_or(latest),
            complete.is_some(),
        ))
    }

    /// The breadcrumbs of a node: its org path on `day`, linked where the user may go.
    pub async fn crumbs(
        &self,
        level: Level,
        node: &str,
        day: NaiveDate,
    ) -> Result<(Vec<Crumb>, Option<String>), PageError> {
        let parents = parent_levels(level);
        let mut columns: Vec<&str> = parents.iter().map(|l| l.as_str()).collect();
        let key = match level {
            Level::Pharmacy => {
                columns.push("name");
                "pharmacy_id"
            }
            Level::Division => "",
            l => l.as_str(),
        };
        let mut path: BTreeMap<Level, String> = BTreeMap::new();
        let mut name = None;
        if !key.is_empty() && !columns.is_empty() {
            let d = format!("DATE '{}'", day.format("%Y-%m-%d"));
            let rows = self
                .rows(&format!(
                    "SELECT DISTINCT {} FROM pharmacies WHERE {key} = {} AND valid_from <= {d} \
                     AND (valid_to IS NULL OR valid_to > {d}) ORDER BY 1",
                    columns.join(", "),
                    quote(node)
                ))
                .await?;
            if !rows.is_empty() {
                for l in &parents {
                    if let Some(v) = rows.text(0, l.as_str()) {
                        path.insert(*l, v.to_string());
                    }
                }
                name = rows.text(0, "name").map(str::to_string);
            }
        }
        let mut crumbs = vec![];
        let link = |l: Level, n: &str| self.user.reaches(l, n).then(|| card_path(l, n));
        if level != Level::Division {
            crumbs.push(Crumb {
                label: "Division".into(),
                href: link(Level::Division, "ALL"),
            });
        }
        for (l, n) in path.iter().rev() {
            crumbs.push(Crumb {
                label: n.clone(),
                href: link(*l, n),
            });
        }
        crumbs.push(Crumb {
            label: if level == Level::Division {
                "Division".into()
            } else {
                node.to_string()
            },
            href: None,
        });
        Ok((crumbs, name))
    }
}

impl Reader<'_> {
    /// The breadcrumbs of a report of a node: its org path on `day`, the node linking to
    /// `card` (its card), then the report's `title`.
    pub async fn report_crumbs(
        &self,
        level: Level,
        node: &str,
        day: NaiveDate,
        card: String,
        title: &str,
    ) -> Result<Vec<Crumb>, PageError> {
        let (mut crumbs, _) = self.crumbs(level, node, day).await?;
        if let Some(last) = crumbs.last_mut() {
            last.href = Some(card);
        }
        crumbs.push(Crumb {
            label: title.to_string(),
            href: None,
        });
        Ok(crumbs)
    }
}

/// One period's figures of a metric at a node.
#[derive(Debug, Clone, Default)]
struct Figures {
    value: Option<f64>,
    peer_avg: Option<f64>,
    peer_rank: Option<f64>,
    peer_size: Option<f64>,
    peer_group: Option<String>,
}

fn figures(rows: &Rows) -> HashMap<(String, NaiveDate), Figures> {
    (0..rows.len())
        .filter_map(|i| {
            let key = (
                rows.text(i, "metric")?.to_string(),
                rows.date(i, "period_start")?,
            );
            Some((
                key,
                Figures {
                    value: rows.num(i, "value"),
                    peer_avg: rows.num(i, "peer_avg"),
                    peer_rank: rows.num(i, "peer_rank"),
                    peer_size: rows.num(i, "peer_size"),
                    peer_group: rows.text(i, "peer_group").map(str::to_string),
                },
            ))
        })
        .collect()
}

/// Target tiers: (metric, period) → tier → (tier name, target).
type Tiers = HashMap<(String, NaiveDate), BTreeMap<u8, (String, Option<f64>)>>;

fn tiers(rows: &Rows) -> Tiers {
    let mut out: Tiers = HashMap::new();
    for i in 0..rows.len() {
        let (Some(m), Some(d), Some(t)) = (
            rows.text(i, "metric"),
            rows.date(i, "period_start"),
            rows.num(i, "tier"),
        ) else {
            continue;
        };
        let name = rows.text(i, "tier_name").unwrap_or("tier").to_string();
        out.entry((m.to_string(), d))
            .or_default()
            .insert(t as u8, (name, rows.num(i, "target")));
    }
    out
}

#[derive(Debug, Clone, Default)]
struct Pacesetters {
    first: Option<String>,
    first_value: Option<f64>,
    second: Option<String>,
    second_value: Option<f64>,
}

fn fmt_int(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{}", v as i64))
}

#[derive(Debug, Deserialize)]
pub struct CardQuery {
    period: Option<String>,
}

/// `GET /card/<level>/<node>`.
pub async fn card(
    State(web): State<Arc<Web>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<CardQuery>, QueryRejection>,
    headers: HeaderMap,
    uri: Uri,
    remote: Remote,
) -> Response {
    let user = match signed_in(&web, &headers, &uri, remote).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let result = async {
        let Path((level, node)) = path.map_err(|_| PageError::NotFound)?;
        let (level, node) = parse_target(&level, &node)?;
        let Query(q) = query.map_err(|_| PageError::BadRequest("Bad query string.".into()))?;
        let asked = parse_period(q.period.as_deref())?;
        build(
            &Reader {
                web: &web,
                user: &user,
            },
            level,
            &node,
            asked,
        )
        .await
    }
    .await;
    match result {
        Ok(page) => respond(StatusCode::OK, page),
        Err(e) => refused(
            &web,
            &user,
            &uri,
            &e,
            "no such card, or not within the scope",
        ),
    }
}

/// The rankings report behind a point of a graph.
fn rankings_link(level: Level, node: &str, metric: &str, grain: &str, period: NaiveDate) -> String {
    let among = if level == Level::Pharmacy {
        "peer_group"
    } else {
        "children"
    };
    format!(
        "/report/rankings?level={}&node={}&metric={metric}&grain={grain}&period={}&among={among}",
        level.as_str(),
        encode(node),
        period.format("%Y-%m-%d")
    )
}

/// The diagnostics behind a point of a pay-period graph, and its tooltip: the period's
/// on-time points open the weekly on-time report, its CRP and OTC points the weekly CRP usage
/// and OTC sales report, and its labor cost points the daily volume of the week, each as of
/// the period's last day (so the six months, or the week, end with that period).
pub fn point_link(level: Level, node: &str, metric: &str, period: NaiveDate) -> (String, String) {
    let last = period
        .checked_add_days(Days::new(PAY_PERIOD_DAYS - 1))
        .unwrap_or(period);
    let (kind, what) = match metric {
        "on_time_pct" => (Kind::OnTime, "weekly on-time to"),
        "otc_sales_per_rx" | "crp_usage_pct" => (Kind::CrpOtc, "weekly CRP and OTC to"),
        _ => (Kind::Week, "daily volume of the week holding"),
    };
    (
        diagnostics::link(kind, level, node, last, false),
        format!(
            "pay period {} ({what} {})",
            period.format("%Y-%m-%d"),
            last.format("%Y-%m-%d")
        ),
    )
}

async fn build(
    r: &Reader<'_>,
    level: Level,
    node: &str,
    asked: Option<NaiveDate>,
) -> Result<Markup, PageError> {
    let (periods, period, complete) = r.pay_periods(level, node, asked).await?;
    let at = periods.iter().position(|p| *p == period).unwrap_or(0);
    let window: Vec<NaiveDate> = periods[at.saturating_sub(PERIODS - 1)..=at].to_vec();
    let first = window[0];
    let q0 = quarter_start(period);
    let quarters: Vec<NaiveDate> = (0..QUARTERS)
        .rev()
        .filter_map(|k| q0.checked_sub_months(Months::new(3 * k)))
        .collect();
    let pharmacy = level == Level::Pharmacy;
    let n = quote(node);
    let l = quote(level.as_str());
    let line_metrics = METRICS.iter().map(|m| m.name).filter(|m| *m != CSAT);
    let series = r
        .rows(&format!(
            "SELECT period_start, metric, value, peer_avg, peer_rank, peer_size, peer_group \
             FROM cube.metrics WHERE level = {l} AND node = {n} AND grain = 'pay_period' \
             AND metric IN ({}) AND period_start >= {} AND period_start <= {}",
            metric_list(line_metrics.clone()),
            ts(first),
            ts(period)
        ))
        .await?;
    let series = figures(&series);
    let by_quarter = r
        .rows(&format!(
            "SELECT period_start, metric, value, peer_avg, peer_rank, peer_size, peer_group \
             FROM cube.metrics WHERE level = {l} AND node = {n} AND grain = 'quarter' \
             AND metric IN ({}) AND period_start >= {} AND period_start <= {}",
            metric_list(std::iter::once(CSAT).chain(SHARES)),
            ts(quarters[0]),
            ts(q0)
        ))
        .await?;
    let by_quarter = figures(&by_quarter);
    let mut targets = Tiers::new();
    let mut pacesetters: HashMap<String, Pacesetters> = HashMap::new();
    let mut children = None;
    if pharmacy {
        let rows = r
            .rows(&format!(
                "SELECT period_start, metric, tier, tier_name, target FROM cube.attainment \
                 WHERE node = {n} AND grain = 'pay_period' AND metric IN ({}) \
                 AND period_start >= {} AND period_start <= {}",
                metric_list(line_metrics.clone()),
                ts(first),
                ts(period)
            ))
            .await?;
        targets = tiers(&rows);
        let rows = r
            .rows(&format!(
                "SELECT period_start, metric, tier, tier_name, target FROM cube.attainment \
                 WHERE node = {n} AND grain = 'quarter' AND metric = {} \
                 AND period_start >= {} AND period_start <= {}",
                quote(CSAT),
                ts(quarters[0]),
                ts(q0)
            ))
            .await?;
        targets.extend(tiers(&rows));
        let rows = r
            .rows(&format!(
                "SELECT grain, period_start, metric, pacesetter_1, pacesetter_1_value, \
                 pacesetter_2, pacesetter_2_value FROM cube.rankings \
                 WHERE level = 'pharmacy' AND node = {n} AND ranked_among = 'peer_group' \
                 AND grain IN ('pay_period', 'quarter') AND metric IN ({}) \
                 AND period_start IN ({}, {})",
                metric_list(METRICS.iter().map(|m| m.name)),
                ts(period),
                ts(q0)
            ))
            .await?;
        for i in 0..rows.len() {
            let (Some(m), Some(g), Some(d)) = (
                rows.text(i, "metric"),
                rows.text(i, "grain"),
                rows.date(i, "period_start"),
            ) else {
                continue;
            };
            let wanted = if m == CSAT {
                g == "quarter" && d == q0
            } else {
                g == "pay_period" && d == period
            };
            if wanted {
                pacesetters.insert(
                    m.to_string(),
                    Pacesetters {
                        first: rows.text(i, "pacesetter_1").map(str::to_string),
                        first_value: rows.num(i, "pacesetter_1_value"),
                        second: rows.text(i, "pacesetter_2").map(str::to_string),
                        second_value: rows.num(i, "pacesetter_2_value"),
                    },
                );
            }
        }
    } else if let Some(child) = child_level(level) {
        let rows = r
            .rows(&format!(
                "SELECT node, metric, value, rank, group_size FROM cube.rankings \
                 WHERE level = {} AND grain = 'pay_period' AND ranked_among = 'siblings' \
                 AND group_name = {n} AND period_start = {} AND metric IN ({}) ORDER BY node",
                quote(child.as_str()),
                ts(period),
                metric_list(METRICS.iter().map(|m| m.name))
            ))
            .await?;
        children = Some((child, rows));
    }
    let last_day = period
        .checked_add_days(Days::new(PAY_PERIOD_DAYS - 1))
        .unwrap_or(period);
    let (crumbs, name) = r.crumbs(level, node, last_day).await?;
    let heading = match (level, &name) {
        (Level::Division, _) => "Division".to_string(),
        (Level::Pharmacy, Some(name)) => format!("{name} (pharmacy {node})"),
        (Level::Pharmacy, None) => format!("Pharmacy {node}"),
        (l, _) => format!("{} {node}", level_title(l)),
    };
    let peer_group = series
        .iter()
        .filter(|((_, d), _)| *d == period)
        .find_map(|(_, f)| f.peer_group.clone());
    let labels: Vec<String> = window
        .iter()
        .map(|d| d.format("%m-%d").to_string())
        .collect();
    let selected = Some(window.len() - 1);
    let here = card_path(level, node);
    let panels = METRICS.iter().map(|m| {
        if m.name == CSAT {
            let shares = quarters
                .iter()
                .map(|q| {
                    SHARES.map(|s| {
                        by_quarter
                            .get(&(s.to_string(), *q))
                            .and_then(|f| f.value)
                    })
                })
                .collect();
            let mut lines = vec![];
            if pharmacy {
                lines.push(Series {
                    label: "peer".into(),
                    style: Style::Peer,
                    points: quarters
                        .iter()
                        .map(|q| by_quarter.get(&(CSAT.to_string(), *q)).and_then(|f| f.peer_avg))
                        .collect(),
                });
                lines.extend(tier_series(&targets, CSAT, &quarters));
            }
            let chart = chart::share_chart(&ShareChart {
                title: format!("{} by quarter", m.title),
                x: quarters.iter().map(|q| quarter_label(*q)).collect(),
                shares,
                lines,
                links: quarters
                    .iter()
                    .map(|q| Some(rankings_link(level, node, CSAT, "quarter", *q)))
                    .collect(),
                selected: Some(quarters.len() - 1),
            });
            let f = by_quarter.get(&(CSAT.to_string(), q0)).cloned().unwrap_or_default();
            let shares_now: Vec<(usize, Option<f64>)> = SHARES
                .iter()
                .enumerate()
                .map(|(k, s)| (k, by_quarter.get(&(s.to_string(), q0)).and_then(|f| f.value)))
                .collect();
            let extra = html! {
                @for (k, v) in &shares_now {
                    tr { th { (chart::SHARE_LABELS[*k]) } td data-metric=(SHARES[*k]) data-field="value" { (Unit::Percent.format(*v)) } }
                }
            };
            panel(
                m,
                &format!("quarter {}", quarter_label(q0)),
                chart,
                &f,
                pharmacy,
                pacesetters.get(m.name),
                targets.get(&(m.name.to_string(), q0)),
                extra,
                &rankings_link(level, node, CSAT, "quarter", q0),
            )
        } else {
            let get = |d: &NaiveDate| series.get(&(m.name.to_string(), *d));
            let mut lines = vec![Series {
                label: "value".into(),
                style: Style::Value,
                points: window.iter().map(|d| get(d).and_then(|f| f.value)).collect(),
            }];
            if pharmacy {
                lines.push(Series {
                    label: "peer".into(),
                    style: Style::Peer,
                    points: window.iter().map(|d| get(d).and_then(|f| f.peer_avg)).collect(),
                });
                lines.extend(tier_series(&targets, m.name, &window));
            }
            let chart = chart::line_chart(&LineChart {
                title: format!("{} by pay period", m.title),
                unit: m.unit,
                x: labels.clone(),
                series: lines,
                links: window
                    .iter()
                    .map(|d| Some(point_link(level, node, m.name, *d).0))
                    .collect(),
                tips: window
                    .iter()
                    .map(|d| point_link(level, node, m.name, *d).1)
                    .collect(),
                selected,
            });
            let f = get(&period).cloned().unwrap_or_default();
            panel(
                m,
                &format!("pay period {}", period.format("%Y-%m-%d")),
                chart,
                &f,
                pharmacy,
                pacesetters.get(m.name),
                targets.get(&(m.name.to_string(), period)),
                html! {},
                &rankings_link(level, node, m.name, "pay_period", period),
            )
        }
    });
    let panels: Vec<Markup> = panels.collect();
    let previous = at.checked_sub(1).and_then(|i| periods.get(i));
    let next = periods.get(at + 1);
    let body = html! {
        h1 { (heading) }
        p.sub {
            "Score card, pay period "
            span data-field="period" { (period.format("%Y-%m-%d")) }
            " to " (last_day.format("%Y-%m-%d"))
            @if asked.is_none() && complete { " (the latest complete pay period)" }
            @if let Some(g) = &peer_group { " · peer group " span data-field="peer_group" { (g) } }
        }
        (reports_nav(level, node, Some(period), "card"))
        form.period method="get" action=(here) {
            @if let Some(p) = previous { a href=(format!("{here}?period={}", p.format("%Y-%m-%d"))) { "‹ previous" } }
            label { "Pay period " select name="period" {
                @for p in periods.iter().rev() {
                    option value=(p.format("%Y-%m-%d")) selected[*p == period] { (p.format("%Y-%m-%d")) }
                }
            } }
            button type="submit" { "Show" }
            @if let Some(p) = next { a href=(format!("{here}?period={}", p.format("%Y-%m-%d"))) { "next ›" } }
        }
        (chart::legend(pharmacy))
        div.panels.consolidated[!pharmacy] { @for p in &panels { (p) } }
        @if let Some((child, rows)) = &children {
            (children_table(r.user, *child, rows))
        }
    };
    Ok(layout(&heading, Some(r.user), &crumbs, body))
}

/// The target tiers of `metric` over `periods`, one line each.
fn tier_series(targets: &Tiers, metric: &str, periods: &[NaiveDate]) -> Vec<Series> {
    let mut names: BTreeMap<u8, String> = BTreeMap::new();
    for d in periods {
        if let Some(t) = targets.get(&(metric.to_string(), *d)) {
            for (tier, (name, _)) in t {
                names.entry(*tier).or_insert_with(|| name.clone());
            }
        }
    }
    names
        .into_iter()
        .map(|(tier, name)| Series {
            label: name,
            style: Style::Tier(tier),
            points: periods
                .iter()
                .map(|d| {
                    targets
                        .get(&(metric.to_string(), *d))
                        .and_then(|t| t.get(&tier))
                        .and_then(|(_, v)| *v)
                })
                .collect(),
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn panel(
    m: &Metric,
    when: &str,
    chart: Markup,
    f: &Figures,
    pharmacy: bool,
    pace: Option<&Pacesetters>,
    tiers: Option<&BTreeMap<u8, (String, Option<f64>)>>,
    extra: Markup,
    ranked: &str,
) -> Markup {
    let u = m.unit;
    let name = m.name;
    html! {
        section.panel data-panel=(name) {
            div { (chart) }
            div {
                h2 { (m.title) }
                table.figures {
                    tr { th { "Value, " (when) } td data-metric=(name) data-field="value" { (u.format(f.value)) } }
                    @if pharmacy {
                        tr { th { "Peer average" } td data-metric=(name) data-field="peer_avg" { (u.format(f.peer_avg)) } }
                        tr { th { "Rank" } td {
                            span data-metric=(name) data-field="peer_rank" { (fmt_int(f.peer_rank)) }
                            " of "
                            span data-metric=(name) data-field="peer_size" { (fmt_int(f.peer_size)) }
                        } }
                        @let p = pace.cloned().unwrap_or_default();
                        tr { th { "Pacesetter 1" } td {
                            span data-metric=(name) data-field="pacesetter_1" { (p.first.as_deref().unwrap_or("none")) }
                            " "
                            span data-metric=(name) data-field="pacesetter_1_value" { (if p.first.is_some() { u.format(p.first_value) } else { String::new() }) }
                        } }
                        tr { th { "Pacesetter 2" } td {
                            span data-metric=(name) data-field="pacesetter_2" { (p.second.as_deref().unwrap_or("none")) }
                            " "
                            span data-metric=(name) data-field="pacesetter_2_value" { (if p.second.is_some() { u.format(p.second_value) } else { String::new() }) }
                        } }
                        @if let Some(t) = tiers {
                            tr { th { "Targets" } td {
                                @for (i, (tier, (tier_name, v))) in t.iter().enumerate() {
                                    @if i > 0 { " · " }
                                    (tier_name) " "
                                    span data-metric=(name) data-field=(format!("tier_{tier}")) { (u.format(*v)) }
                                }
                            } }
                        }
                    }
                    (extra)
                }
                p.noprint { a.ranked href=(ranked) { "Ranked " (if pharmacy { "in the peer group" } else { "among the children" }) " ›" } }
            }
        }
    }
}

fn children_table(user: &SignedIn, child: Level, rows: &Rows) -> Markup {
    let mut nodes: Vec<String> = (0..rows.len())
        .filter_map(|i| rows.text(i, "node").map(str::to_string))
        .collect();
    nodes.dedup();
    // (child, metric) -> (value, rank, group size)
    type Cell = (Option<f64>, Option<f64>, Option<f64>);
    let cell: HashMap<(&str, &str), Cell> = (0..rows.len())
        .filter_map(|i| {
            Some((
                (rows.text(i, "node")?, rows.text(i, "metric")?),
                (
                    rows.num(i, "value"),
                    rows.num(i, "rank"),
                    rows.num(i, "group_size"),
                ),
            ))
        })
        .collect();
    html! {
        section.children {
            h2 { (level_plural(child)) ", ranked on each metric (rank among them)" }
            table.ranked {
                tr {
                    th { (level_title(child)) }
                    @for m in &METRICS { th { (m.title) } }
                }
                @for node in &nodes {
                    tr data-child=(node) {
                        td {
                            @if user.reaches(child, node) { a href=(card_path(child, node)) { (node) } }
                            @else { (node) }
                        }
                        @for m in &METRICS {
                            @let (v, rank, size) = cell.get(&(node.as_str(), m.name)).copied().unwrap_or_default();
                            td {
                                span data-child=(node) data-metric=(m.name) data-field="value" { (m.unit.format(v)) }
                                " "
                                span.rank data-child=(node) data-metric=(m.name) data-field="rank" { "(" (fmt_int(rank)) " of " (fmt_int(size)) ")" }
                            }
                        }
                    }
                }
            }
            @if nodes.is_empty() { p.note { "No figures for this pay period." } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_strictly() {
        assert_eq!(parse_period(None), Ok(None));
        assert_eq!(parse_period(Some("")), Ok(None));
        assert_eq!(
            parse_period(Some("2024-03-03")),
            Ok(NaiveDate::from_ymd_opt(2024, 3, 3))
        );
        for bad in [
            "2024-3-3",
            "2024-02-30",
            "yesterday",
            "2024-03-03T00:00:00",
            "+12024-03-03",
            "'; DROP",
        ] {
            assert!(
                matches!(parse_period(Some(bad)), Err(PageError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn targets_are_levels_and_possible_nodes() {
        assert_eq!(
            parse_target("pharmacy", "RX101"),
            Ok((Level::Pharmacy, "RX101".into()))
        );
        assert_eq!(parse_target("store", "RX101"), Err(PageError::NotFound));
        assert_eq!(parse_target("division", "West"), Err(PageError::NotFound));
        assert_eq!(
            parse_target("pharmacy", &"9".repeat(100)),
            Err(PageError::NotFound)
        );
    }

    #[test]
    fn quarters_and_levels() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).expect("date");
        assert_eq!(quarter_start(d(2024, 3, 17)), d(2024, 1, 1));
        assert_eq!(quarter_start(d(2024, 4, 1)), d(2024, 4, 1));
        assert_eq!(quarter_start(d(2024, 12, 31)), d(2024, 10, 1));
        assert_eq!(quarter_label(d(2024, 10, 1)), "2024-Q4");
        assert_eq!(child_level(Level::Region), Some(Level::ServiceArea));
        assert_eq!(child_level(Level::Pharmacy), None);
        assert_eq!(
            parent_levels(Level::Pharmacy),
            vec![Level::LocalArea, Level::ServiceArea, Level::Region]
        );
    }

    #[test]
    fn numbers_read_as_the_card_prints_them() {
        assert_eq!(Unit::Dollars.format(Some(8.712421)), "$8.71");
        assert_eq!(Unit::Percent.format(Some(79.8773)), "79.9%");
        assert_eq!(Unit::Percent.format(None), "n/a");
        assert_eq!(Unit::Percent.format(Some(f64::NAN)), "n/a");
    }
}
