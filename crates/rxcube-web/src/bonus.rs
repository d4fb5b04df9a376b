//! Target attainment and the bonus per tier, and the budget estimator for the coming pay
//! periods, each a page and a CSV of its table:
//!
//! | page | relation | rows |
//! |---|---|---|
//! | `/report/attainment/<level>/<node>?period=` | `cube.attainment`, grain pay period | each pharmacy of the node, targeted metric and tier, for the pay period holding `period` (default: the card's, the latest complete one) |
//! | `/report/budget/<level>/<node>?period=` | `cube.budget` | each pharmacy of the node and labor-cost tier, for the coming pay period holding `period` (the coming ones: after the latest complete pay period, the card's; default: the next one) |
//!
//! `/report/attainment.csv/...` and `/report/budget.csv/...` download the table. Above the
//! pharmacy, the rows are those of the pharmacies under the node on the pay period's last day
//! (for the budget: on the last day of the node's latest pay period). Every row is read through
//! the user's scoped session; a node it has no pay period of (none, or outside the scope) is
//! the card's 404, audited.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use chrono::{Days, NaiveDate};
use maud::{Markup, html};
use rxcube_access::Level;
use serde::Deserialize;

use crate::Web;
use crate::auth::{Remote, SignedIn, card_path, encode, refused, signed_in};
use crate::card::{PAY_PERIOD_DAYS, Reader, level_title, metric, parse_period, parse_target, ts};
use crate::data::{PageError, Rows, quote};
use crate::page::{Crumb, Unit, layout, reports_nav, respond};
use crate::rankings::field;

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Attainment,
    Budget,
}

impl Which {
    fn slug(self) -> &'static str {
        match self {
            Which::Attainment => "attainment",
            Which::Budget => "budget",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Which::Attainment => "Target attainment and bonus",
            Which::Budget => "Budget estimator",
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct PeriodQuery {
    period: Option<String>,
}

/// A tier's name where the relation gives none (the budget's tiers).
fn tier_name(tier: Option<f64>) -> String {
    match tier.map(|t| t as i64) {
        Some(1) => "threshold".into(),
        Some(2) => "target".into(),
        Some(3) => "stretch".into(),
        Some(t) => format!("tier {t}"),
        None => "n/a".into(),
    }
}

/// A metric's heading and unit (a targeted metric that is not a key one: by its name).
pub(crate) fn metric_shown(name: &str) -> (String, Unit) {
    match metric(name) {
        Some(m) => (m.title.to_string(), m.unit),
        None if name.ends_with("minutes") => (name.to_string(), Unit::Minutes),
        None if name.ends_with("_pct") || name.starts_with("pct_") => {
            (name.to_string(), Unit::Percent)
        }
        None => (name.to_string(), Unit::Dollars),
    }
}

/// The SQL condition on `node` of the pharmacies the report of `level`/`node` covers: those
/// under it on `day`.
fn pharmacies_of(level: Level, node: &str, day: NaiveDate) -> String {
    let d = format!("DATE '{}'", day.format("%Y-%m-%d"));
    match level {
        Level::Pharmacy => format!("node = {}", quote(node)),
        Level::Division => "node IS NOT NULL".into(),
        l => format!(
            "node IN (SELECT pharmacy_id FROM pharmacies WHERE {} = {} AND valid_from <= {d} \
             AND (valid_to IS NULL OR valid_to > {d}))",
            l.as_str(),
            quote(node)
        ),
    }
}

fn last_day(period: NaiveDate) -> NaiveDate {
    period
        .checked_add_days(Days::new(PAY_PERIOD_DAYS - 1))
        .unwrap_or(period)
}

/// What a report shows: its node, its pay period and the periods to choose from, its rows.
struct Shown {
    level: Level,
    node: String,
    period: NaiveDate,
    periods: Vec<NaiveDate>,
    rows: Rows,
    crumbs: Vec<Crumb>,
}

async fn read(
    r: &Reader<'_>,
    which: Which,
    level: Level,
    node: &str,
    asked: Option<NaiveDate>,
) -> Result<Shown, PageError> {
    let (shown, periods, period) = match which {
        Which::Attainment => {
            let (periods, period, _) = r.pay_periods(level, node, asked).await?;
            let rows = r
                .rows(&format!(
                    "SELECT node, peer_group, metric, value, tier, tier_name, target, attained, \
                     bonus_amount, bonus_earned FROM cube.attainment WHERE grain = 'pay_period' \
                     AND period_start = {} AND {} ORDER BY node, metric, tier",
                    ts(period),
                    pharmacies_of(level, node, last_day(period))
                ))
                .await?;
            (rows, periods, period)
        }
        Which::Budget => {
            // The node's pay periods as the session sees them: none, not the user's (or none).
            // The coming pay periods are those after the latest complete one (the card's).
            let (periods, current, _) = r.pay_periods(level, node, None).await?;
            let latest = periods.last().copied().ok_or(PageError::NotFound)?;
            let all = r
                .rows(&format!(
                    "SELECT DISTINCT period_start FROM cube.budget WHERE period_start > {}                      AND {} ORDER BY period_start",
                    ts(current),
                    pharmacies_of(level, node, last_day(latest))
                ))
                .await?;
            let coming: Vec<NaiveDate> = (0..all.len())
                .filter_map(|i| all.date(i, "period_start"))
                .collect();
            let period = match asked {
                None => coming.first().copied().unwrap_or(latest),
                Some(d) => coming
                    .iter()
                    .copied()
                    .find(|p| *p <= d && d <= last_day(*p))
                    .ok_or_else(|| {
                        PageError::BadRequest(
                            "There is no budget for a pay period holding that date; choose one \
                             of the coming pay periods listed on the page."
                                .into(),
                        )
                    })?,
            };
            let rows = r
                .rows(&format!(
                    "SELECT node, period_start, peer_group, tier, target_labor_cost_per_rx, \
                     basis_periods, expected_rx, cost_per_hour, budget_dollars, budget_hours \
                     FROM cube.budget WHERE period_start = {} AND {} ORDER BY node, tier",
                    ts(period),
                    pharmacies_of(level, node, last_day(latest))
                ))
                .await?;
            (rows, coming, period)
        }
    };
    let card = match which {
        Which::Attainment => format!(
            "{}?period={}",
            card_path(level, node),
            period.format("%Y-%m-%d")
        ),
        Which::Budget => card_path(level, node),
    };
    let crumbs = r
        .report_crumbs(level, node, last_day(period), card, which.title())
        .await?;
    Ok(Shown {
        level,
        node: node.to_string(),
        period,
        periods,
        rows: shown,
        crumbs,
    })
}

/// The report of a `/report/<slug>/...` path segment (`attainment`, `budget`), if it is one.
pub fn which(slug: &str) -> Option<Which> {
    [Which::Attainment, Which::Budget]
        .into_iter()
        .find(|w| w.slug() == slug)
}

/// `GET /report/attainment/<level>/<node>`, `/report/budget/<level>/<node>` (and their
/// `.csv`), routed by [`crate::diagnostics::report`]: the page or its CSV.
pub async fn answer(
    web: &Arc<Web>,
    which: Which,
    csv_wanted: bool,
    (level, node): (String, String),
    headers: &HeaderMap,
    uri: &Uri,
    remote: Remote,
) -> Response {
    let user = match signed_in(web, headers, uri, remote).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let result = async {
        let (level, node) = parse_target(&level, &node)?;
        let Query(q) = Query::<PeriodQuery>::try_from_uri(uri)
            .map_err(|_| PageError::BadRequest("Bad query string.".into()))?;
        let asked = parse_period(q.period.as_deref())?;
        read(&Reader { web, user: &user }, which, level, &node, asked).await
    }
    .await;
    match result {
        Ok(s) if csv_wanted => csv(which, &s),
        Ok(s) => respond(StatusCode::OK, page(&user, which, &s)),
        Err(e) => refused(web, &user, uri, &e, "no such node, or not within the scope"),
    }
}

fn href(which: Which, csv: bool, s: &Shown, period: NaiveDate) -> String {
    format!(
        "/report/{}{}/{}/{}?period={}",
        which.slug(),
        if csv { ".csv" } else { "" },
        s.level.as_str(),
        encode(&s.node),
        period.format("%Y-%m-%d")
    )
}

fn yes_no(v: Option<&str>) -> &'static str {
    match v {
        Some("true") => "yes",
        Some("false") => "no",
        _ => "n/a",
    }
}

fn page(user: &SignedIn, which: Which, s: &Shown) -> Markup {
    let p = s.period.format("%Y-%m-%d");
    let to = last_day(s.period).format("%Y-%m-%d");
    let what = if s.level == Level::Pharmacy {
        format!("pharmacy {}", s.node)
    } else if s.level == Level::Division {
        "the division".to_string()
    } else {
        format!("{} {}", level_title(s.level).to_lowercase(), s.node)
    };
    let title = format!("{}: {what}, pay period {p} to {to}", which.title());
    let pharmacy = |i: usize| s.rows.text(i, "node").unwrap_or("").to_string();
    let table = match which {
        Which::Attainment => attainment_table(s, &pharmacy),
        Which::Budget => budget_table(s, &pharmacy),
    };
    let nav_day = match which {
        Which::Attainment => Some(s.period),
        Which::Budget => None,
    };
    let body = html! {
        h1 { (title) }
        (reports_nav(s.level, &s.node, nav_day, which.slug()))
        p.sub {
            @match which {
                Which::Attainment => "Each targeted metric of the pay period against its peer group's tiers in effect on the period's last day; a tier met earns its bonus. ",
                Which::Budget => "The labor budget that meets each labor-cost-per-Rx tier in a coming pay period, from the Rx sold per pay period and the cost per hour of the pay periods before it. ",
            }
            a href=(href(which, true, s, s.period)) { "Download CSV" }
        }
        form.period method="get" action=(format!("/report/{}/{}/{}", which.slug(), s.level.as_str(), encode(&s.node))) {
            label { "Pay period " select name="period" {
                @for d in s.periods.iter().rev() {
                    option value=(d.format("%Y-%m-%d")) selected[*d == s.period] { (d.format("%Y-%m-%d")) }
                }
            } }
            button type="submit" { "Show" }
        }
        (table)
        @if s.rows.is_empty() {
            p.note { @match which {
                Which::Attainment => "No targets for this pay period.",
                Which::Budget => "No labor cost per Rx targets, or no pay period to base a budget on.",
            } }
        }
    };
    layout(&title, Some(user), &s.crumbs, body)
}

fn attainment_table(s: &Shown, pharmacy: &dyn Fn(usize) -> String) -> Markup {
    let rows = &s.rows;
    // Per pharmacy and per tier: the bonus earned; per tier, the tiers met of those judged.
    let mut by_pharmacy: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_tier: BTreeMap<i64, (String, usize, usize, f64)> = BTreeMap::new();
    for i in 0..rows.len() {
        let earned = rows.num(i, "bonus_earned").unwrap_or(0.0);
        *by_pharmacy.entry(pharmacy(i)).or_default() += earned;
        let tier = rows.num(i, "tier").unwrap_or(0.0) as i64;
        let e = by_tier.entry(tier).or_insert_with(|| {
            (
                rows.text(i, "tier_name").unwrap_or("").to_string(),
                0,
                0,
                0.0,
            )
        });
        e.1 += usize::from(rows.text(i, "attained") == Some("true"));
        e.2 += 1;
        e.3 += earned;
    }
    let total: f64 = by_pharmacy.values().sum();
    let d = Unit::Dollars;
    html! {
        table.ranked {
            tr { th { "Pharmacy" } th { "Peer group" } th { "Metric" } th { "Value" } th { "Tier" } th { "Target" } th { "Met" } th { "Bonus" } th { "Earned" } }
            @for i in 0..rows.len() {
                @let m = rows.text(i, "metric").unwrap_or("");
                @let (metric_title, unit) = metric_shown(m);
                @let tier = rows.num(i, "tier").map_or(0, |t| t as i64);
                tr data-row=(format!("{}/{m}/{tier}", pharmacy(i))) {
                    td { (pharmacy(i)) }
                    td { (rows.text(i, "peer_group").unwrap_or("")) }
                    td { (metric_title) }
                    td data-field="value" { (unit.format(rows.num(i, "value"))) }
                    td data-field="tier_name" { (rows.text(i, "tier_name").unwrap_or("")) }
                    td data-field="target" { (unit.format(rows.num(i, "target"))) }
                    td data-field="attained" { (yes_no(rows.text(i, "attained"))) }
                    td data-field="bonus_amount" { (d.format(rows.num(i, "bonus_amount"))) }
                    td data-field="bonus_earned" { (d.format(Some(rows.num(i, "bonus_earned").unwrap_or(0.0)))) }
                }
            }
        }
        @if !rows.is_empty() {
            h2 { "Bonus per tier" }
            table.ranked {
                tr { th { "Tier" } th { "Met" } th { "Earned" } }
                @for (tier, (name, met, of, earned)) in &by_tier {
                    tr data-row=(format!("tier/{tier}")) {
                        td { (tier) " " (name) }
                        td data-field="met" { (met) " of " (of) }
                        td data-field="bonus_earned" { (d.format(Some(*earned))) }
                    }
                }
            }
            h2 { "Bonus earned per pharmacy" }
            table.ranked {
                tr { th { "Pharmacy" } th { "Earned" } }
                @for (p, earned) in &by_pharmacy {
                    tr data-row=(format!("total/{p}")) { td { (p) } td data-field="bonus_earned" { (d.format(Some(*earned))) } }
                }
                tr data-row="total" { td { strong { "Total" } } td data-field="bonus_earned" { strong { (d.format(Some(total))) } } }
            }
        }
    }
}

fn budget_table(s: &Shown, pharmacy: &dyn Fn(usize) -> String) -> Markup {
    let rows = &s.rows;
    let d = Unit::Dollars;
    let one = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}"));
    html! {
        p {
            "Coming pay periods: "
            @for (i, p) in s.periods.iter().enumerate() {
                @if i > 0 { " · " }
                @if *p == s.period { strong { (p.format("%Y-%m-%d")) } }
                @else { a href=(href(Which::Budget, false, s, *p)) { (p.format("%Y-%m-%d")) } }
            }
        }
        table.ranked {
            tr { th { "Pharmacy" } th { "Peer group" } th { "Tier" } th { "Target labor cost per Rx" } th { "Expected Rx" } th { "Cost per hour" } th { "Budget" } th { "Hours" } th { "Pay periods averaged" } }
            @for i in 0..rows.len() {
                @let tier = rows.num(i, "tier");
                tr data-row=(format!("{}/{}", pharmacy(i), tier.map_or(0, |t| t as i64))) {
                    td { (pharmacy(i)) }
                    td { (rows.text(i, "peer_group").unwrap_or("")) }
                    td data-field="tier_name" { (tier_name(tier)) }
                    td data-field="target_labor_cost_per_rx" { (d.format(rows.num(i, "target_labor_cost_per_rx"))) }
                    td data-field="expected_rx" { (one(rows.num(i, "expected_rx"))) }
                    td data-field="cost_per_hour" { (d.format(rows.num(i, "cost_per_hour"))) }
                    td data-field="budget_dollars" { (d.format(rows.num(i, "budget_dollars"))) }
                    td data-field="budget_hours" { (rows.num(i, "budget_hours").map_or_else(|| "n/a".to_string(), |h| format!("{h:.1} h"))) }
                    td data-field="basis_periods" { (Unit::Count.format(rows.num(i, "basis_periods"))) }
                }
            }
        }
    }
}

/// The table as CSV, full precision.
fn csv(which: Which, s: &Shown) -> Response {
    let columns: &[&str] = match which {
        Which::Attainment => &[
            "node",
            "peer_group",
            "metric",
            "value",
            "tier",
            "tier_name",
            "target",
            "attained",
            "bonus_amount",
            "bonus_earned",
        ],
        Which::Budget => &[
            "node",
            "period_start",
            "peer_group",
            "tier",
            "target_labor_cost_per_rx",
            "basis_periods",
            "expected_rx",
            "cost_per_hour",
            "budget_dollars",
            "budget_hours",
        ],
    };
    let mut out = format!("level,report_node,pay_period,{}\n", columns.join(","));
    let p = s.period.format("%Y-%m-%d").to_string();
    for i in 0..s.rows.len() {
        let mut cells = vec![s.level.as_str().to_string(), field(&s.node), p.clone()];
        cells.extend(
            columns
                .iter()
                .map(|c| field(s.rows.text(i, c).unwrap_or(""))),
        );
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    crate::page::csv(
        format!("attachment; filename=\"{}-{p}.csv\"", which.slug()),
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_and_pharmacies_of_a_node() {
        assert_eq!(tier_name(Some(1.0)), "threshold");
        assert_eq!(tier_name(Some(4.0)), "tier 4");
        let d = NaiveDate::from_ymd_opt(2024, 3, 16).expect("date");
        assert_eq!(pharmacies_of(Level::Pharmacy, "O'1", d), "node = 'O''1'");
        assert!(pharmacies_of(Level::Region, "West", d).contains(
            "region = 'West' AND valid_from <= DATE '2024-03-16' AND (valid_to IS NULL OR valid_to > DATE '2024-03-16')"
        ));
        assert_eq!(metric_shown("on_time_pct").1, Unit::Percent);
        assert_eq!(metric_shown("median_processing_minutes").1, Unit::Minutes);
    }
}
