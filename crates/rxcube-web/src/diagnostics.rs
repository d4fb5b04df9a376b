//! The diagnostics behind a score card's graphs, each a page and a CSV of its table:
//!
//! | page | relation | rows |
//! |---|---|---|
//! | `/report/day/<level>/<node>?date=` | `cube.volume`, grain hour | the day's local hours |
//! | `/report/week/<level>/<node>?date=` | `cube.volume`, grain day | the Monday-to-Sunday week holding the date |
//! | `/report/on-time/<level>/<node>?date=` | `cube.weekly_trend` | the weeks of the six months up to the date |
//! | `/report/crp-otc/<level>/<node>?date=` | `cube.weekly_trend` | the same weeks: CRP usage, OTC per Rx |
//!
//! `/report/<kind>.csv/<level>/<node>?date=` downloads the table. (`/report/attainment/...`
//! and `/report/budget/...` are routed here too, to [`crate::bonus`].) The date defaults to the
//! node's last day with facts. Every row is read through the user's scoped session; a node the
//! session has no rows of (none, or outside the scope) is the card's 404, audited.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use chrono::{Datelike, Days, NaiveDate};
use maud::html;
use rxcube_access::Level;
use serde::Deserialize;

use crate::Web;
use crate::auth::{Remote, SignedIn, audit_denied, card_path, encode, refused, signed_in};
use crate::card::{Reader, parse_target, ts};
use crate::chart::{self, LineChart, Series, Style};
use crate::data::{PageError, Rows, quote};
use crate::page::{Crumb, Unit, error, layout, reports_nav, respond};
use crate::rankings::field;

/// Which diagnostic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Day,
    Week,
    OnTime,
    CrpOtc,
}

pub const KINDS: [Kind; 4] = [Kind::Day, Kind::Week, Kind::OnTime, Kind::CrpOtc];

/// A column of a diagnostic's table: its name in the relation, heading and unit.
struct Column {
    name: &'static str,
    title: &'static str,
    unit: Unit,
}

const fn col(name: &'static str, title: &'static str, unit: Unit) -> Column {
    Column { name, title, unit }
}

const VOLUME: [Column; 3] = [
    col("local_fills", "Local fills", Unit::Count),
    col("on_time_pct", "On time", Unit::Percent),
    col(
        "median_processing_minutes",
        "Median processing",
        Unit::Minutes,
    ),
];
const ON_TIME: [Column; 1] = [col("on_time_pct", "Rx processed on time", Unit::Percent)];
const CRP_OTC: [Column; 2] = [
    col("crp_usage_pct", "Refills by CRP", Unit::Percent),
    col("otc_sales_per_rx", "OTC sales per Rx", Unit::Dollars),
];

impl Kind {
    /// The path segment: `/report/<slug>/...`.
    pub fn slug(self) -> &'static str {
        match self {
            Kind::Day => "day",
            Kind::Week => "week",
            Kind::OnTime => "on-time",
            Kind::CrpOtc => "crp-otc",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Day => "Hourly volume and processing time",
            Kind::Week => "Daily volume and processing time",
            Kind::OnTime => "Weekly on-time processing, six months",
            Kind::CrpOtc => "Weekly CRP usage and OTC sales per Rx, six months",
        }
    }

    fn columns(self) -> &'static [Column] {
        match self {
            Kind::Day | Kind::Week => &VOLUME,
            Kind::OnTime => &ON_TIME,
            Kind::CrpOtc => &CRP_OTC,
        }
    }

    /// The first column of the table (the x of the graphs).
    fn key(self) -> (&'static str, &'static str) {
        match self {
            Kind::Day => ("hour_of_day", "Hour"),
            Kind::Week => ("day", "Day"),
            Kind::OnTime | Kind::CrpOtc => ("week", "Week of"),
        }
    }

    /// The SQL of the rows for `date`.
    fn sql(self, level: Level, node: &str, date: NaiveDate) -> String {
        let at = format!(
            "level = {} AND node = {}",
            quote(level.as_str()),
            quote(node)
        );
        let next = |d: NaiveDate, n: u64| d.checked_add_days(Days::new(n)).unwrap_or(d);
        match self {
            Kind::Day => format!(
                "SELECT hour_of_day, local_fills, on_time_pct, median_processing_minutes \
                 FROM cube.volume WHERE {at} AND grain = 'hour' AND period_start >= {} \
                 AND period_start < {} ORDER BY period_start",
                ts(date),
                ts(next(date, 1))
            ),
            Kind::Week => {
                let monday = week_start(date);
                format!(
                    "SELECT CAST(CAST(period_start AS DATE) AS VARCHAR) AS day, local_fills, \
                     on_time_pct, median_processing_minutes FROM cube.volume WHERE {at} \
                     AND grain = 'day' AND period_start >= {} AND period_start < {} \
                     ORDER BY period_start",
                    ts(monday),
                    ts(next(monday, 7))
                )
            }
            Kind::OnTime | Kind::CrpOtc => {
                let names: Vec<&str> = self.columns().iter().map(|c| c.name).collect();
                format!(
                    "SELECT CAST(CAST(period_start AS DATE) AS VARCHAR) AS week, {} \
                     FROM cube.weekly_trend WHERE {at} AND period_start > {} - INTERVAL \
                     '6 months' AND period_start <= {} ORDER BY period_start",
                    names.join(", "),
                    ts(date),
                    ts(date)
                )
            }
        }
    }
}

/// The Monday of the week holding `d`.
pub fn week_start(d: NaiveDate) -> NaiveDate {
    let back = u64::from(d.weekday().num_days_from_monday());
    d.checked_sub_days(Days::new(back)).unwrap_or(d)
}

/// The path of a diagnostic (`csv`: its download) for `date`.
pub fn link(kind: Kind, level: Level, node: &str, date: NaiveDate, csv: bool) -> String {
    format!(
        "/report/{}{}/{}/{}?date={}",
        kind.slug(),
        if csv { ".csv" } else { "" },
        level.as_str(),
        encode(node),
        date.format("%Y-%m-%d")
    )
}

#[derive(Debug, Deserialize)]
pub struct DateQuery {
    date: Option<String>,
}

/// A `?date=` value: `YYYY-MM-DD` (none: the default).
fn parse_date(s: Option<&str>) -> Result<Option<NaiveDate>, PageError> {
    match s.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) if s.len() == 10 => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| bad_date()),
        Some(_) => Err(bad_date()),
    }
}

fn bad_date() -> PageError {
    PageError::BadRequest("The date must be a day, YYYY-MM-DD.".into())
}

/// A request's path (level, node) and query (the date), as extracted.
type Asked = (
    Result<Path<(String, String)>, PathRejection>,
    Result<Query<DateQuery>, QueryRejection>,
);

struct Shown {
    level: Level,
    node: String,
    date: NaiveDate,
    rows: Rows,
    crumbs: Vec<Crumb>,
}

async fn read(
    r: &Reader<'_>,
    kind: Kind,
    level: &str,
    node: &str,
    date: Option<&str>,
) -> Result<Shown, PageError> {
    let (level, node) = parse_target(level, node)?;
    let asked = parse_date(date)?;
    // The node's days as the session sees them: none, the node is not the user's (or is not).
    let days = r
        .rows(&format!(
            "SELECT count(*) AS n, CAST(max(period_start) AS VARCHAR) AS last_day \
             FROM cube.volume WHERE level = {} AND node = {} AND grain = 'day'",
            quote(level.as_str()),
            quote(&node)
        ))
        .await?;
    if days.num(0, "n").unwrap_or(0.0) < 1.0 {
        return Err(PageError::NotFound);
    }
    let date = match asked {
        Some(d) => d,
        None => days.date(0, "last_day").ok_or(PageError::NotFound)?,
    };
    let rows = r.rows(&kind.sql(level, &node, date)).await?;
    let card = format!(
        "{}?period={}",
        card_path(level, &node),
        date.format("%Y-%m-%d")
    );
    let crumbs = r
        .report_crumbs(level, &node, date, card, kind.title())
        .await?;
    Ok(Shown {
        level,
        node,
        date,
        rows,
        crumbs,
    })
}

async fn answer(
    web: &Arc<Web>,
    kind: Kind,
    (path, query): Asked,
    headers: &HeaderMap,
    uri: &Uri,
    remote: Remote,
    render: impl FnOnce(&SignedIn, Kind, &Shown) -> Response,
) -> Response {
    let user = match signed_in(web, headers, uri, remote).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let result = async {
        let Path((level, node)) = path.map_err(|_| PageError::NotFound)?;
        let Query(q) = query.map_err(|_| PageError::BadRequest("Bad query string.".into()))?;
        read(
            &Reader { web, user: &user },
            kind,
            &level,
            &node,
            q.date.as_deref(),
        )
        .await
    }
    .await;
    match result {
        Ok(shown) => render(&user, kind, &shown),
        Err(e) => refused(web, &user, uri, &e, "no such node, or not within the scope"),
    }
}

/// The x label of a row.
fn label(kind: Kind, rows: &Rows, i: usize) -> String {
    let (key, _) = kind.key();
    match kind {
        Kind::Day => rows
            .num(i, key)
            .map_or_else(String::new, |h| format!("{:02}:00", h as i64)),
        _ => rows.text(i, key).unwrap_or("").to_string(),
    }
}

/// Where a point of a diagnostic's graph goes: a day of the week to its hours, a week of the
/// six months to its days.
fn point_link(kind: Kind, s: &Shown, i: usize) -> Option<String> {
    let (key, _) = kind.key();
    let day = s.rows.date(i, key)?;
    match kind {
        Kind::Day => None,
        Kind::Week => Some(link(Kind::Day, s.level, &s.node, day, false)),
        Kind::OnTime | Kind::CrpOtc => Some(link(Kind::Week, s.level, &s.node, day, false)),
    }
}

fn page(user: &SignedIn, kind: Kind, s: &Shown) -> Response {
    let day = s.date.format("%Y-%m-%d").to_string();
    let scope = match kind {
        Kind::Day => format!("on {day}"),
        Kind::Week => format!("week of {}", week_start(s.date).format("%Y-%m-%d")),
        _ => format!("six months to {day}"),
    };
    let title = format!("{}: {}, {scope}", kind.title(), s.node);
    let x: Vec<String> = (0..s.rows.len()).map(|i| label(kind, &s.rows, i)).collect();
    let (_, key_title) = kind.key();
    let body = html! {
        h1 { (title) }
        (reports_nav(s.level, &s.node, Some(s.date), kind.slug()))
        p.sub { a href=(link(kind, s.level, &s.node, s.date, true)) { "Download CSV" } }
        form.period method="get" action=(format!("/report/{}/{}/{}", kind.slug(), s.level.as_str(), encode(&s.node))) {
            label { "Day " input type="date" name="date" value=(day); }
            button type="submit" { "Show" }
        }
        div.panels.consolidated {
            @for c in kind.columns() {
                div.panel {
                    div {
                        h2 { (c.title) }
                        (chart::line_chart(&LineChart {
                            title: format!("{} ({})", c.title, scope),
                            unit: c.unit,
                            x: x.clone(),
                            series: vec![Series {
                                label: "value".into(),
                                style: Style::Value,
                                points: (0..s.rows.len()).map(|i| s.rows.num(i, c.name)).collect(),
                            }],
                            links: (0..s.rows.len()).map(|i| point_link(kind, s, i)).collect(),
                            tips: vec![],
                            selected: None,
                        }))
                    }
                }
            }
        }
        table.ranked {
            tr { th { (key_title) } @for c in kind.columns() { th { (c.title) } } }
            @for i in 0..s.rows.len() {
                tr data-row=(x[i]) {
                    td { (x[i]) }
                    @for c in kind.columns() { td data-field=(c.name) { (c.unit.format(s.rows.num(i, c.name))) } }
                }
            }
        }
        @if s.rows.is_empty() { p.note { "No figures." } }
    };
    respond(StatusCode::OK, layout(&title, Some(user), &s.crumbs, body))
}

/// The table as CSV, full precision.
fn csv(_: &SignedIn, kind: Kind, s: &Shown) -> Response {
    let (key, _) = kind.key();
    let names: Vec<&str> = kind.columns().iter().map(|c| c.name).collect();
    let mut out = format!("level,node,{key},{}\n", names.join(","));
    for i in 0..s.rows.len() {
        let mut cells = vec![
            s.level.as_str().to_string(),
            field(&s.node),
            field(s.rows.text(i, key).unwrap_or("")),
        ];
        cells.extend(names.iter().map(|c| field(s.rows.text(i, c).unwrap_or(""))));
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    crate::page::csv(
        format!(
            "attachment; filename=\"{}-{}.csv\"",
            kind.slug(),
            s.date.format("%Y-%m-%d")
        ),
        out,
    )
}

/// `GET /report/<kind>/<level>/<node>` (and `/report/<kind>.csv/...`): a diagnostic's
/// page or CSV. An unknown kind is the same 404 as an unknown node.
pub async fn report(
    State(web): State<Arc<Web>>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    query: Result<Query<DateQuery>, QueryRejection>,
    headers: HeaderMap,
    uri: Uri,
    remote: Remote,
) -> Response {
    let (kind, csv_wanted, path) = match path {
        Ok(Path((kind, level, node))) => {
            let (slug, csv_wanted) = match kind.strip_suffix(".csv") {
                Some(s) => (s, true),
                None => (kind.as_str(), false),
            };
            if let Some(which) = crate::bonus::which(slug) {
                return crate::bonus::answer(
                    &web,
                    which,
                    csv_wanted,
                    (level, node),
                    &headers,
                    &uri,
                    remote,
                )
                .await;
            }
            let kind = KINDS.iter().copied().find(|k| k.slug() == slug);
            (kind, csv_wanted, Path((level, node)))
        }
        Err(_) => (None, false, Path((String::new(), String::new()))),
    };
    let Some(kind) = kind else {
        return match signed_in(&web, &headers, &uri, remote).await {
            Ok(user) => {
                let shown: String = uri.path().chars().take(200).collect();
                audit_denied(&web, &user, &format!("{shown}: no such report"));
                error(&PageError::NotFound, Some(&user))
            }
            Err(r) => r,
        };
    };
    let render = if csv_wanted { csv } else { page };
    answer(
        &web,
        kind,
        (Ok(path), query),
        &headers,
        &uri,
        remote,
        render,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday_and_dates_are_checked() {
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        assert_eq!(week_start(d("2024-03-10")), d("2024-03-04"));
        assert_eq!(week_start(d("2024-03-04")), d("2024-03-04"));
        assert_eq!(week_start(d("2024-03-05")), d("2024-03-04"));
        assert_eq!(parse_date(Some("2024-03-10")), Ok(Some(d("2024-03-10"))));
        assert_eq!(parse_date(None), Ok(None));
        for bad in ["2024-02-30", "2024-3-1", "yesterday", "2024-03-10x"] {
            assert!(matches!(
                parse_date(Some(bad)),
                Err(PageError::BadRequest(_))
            ));
        }
    }
}
