//! The layout every page shares, the stylesheet (screen and print), error pages and the
//! formatting of numbers.

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::NaiveDate;
use maud::{DOCTYPE, Markup, html};
use rxcube_access::Level;

use crate::auth::{SignedIn, card_path, encode};
use crate::data::PageError;

/// How a metric's values read: dollars with two decimals, percentages with one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Dollars,
    Percent,
    /// A count (fills): whole numbers.
    Count,
    /// Minutes, one decimal.
    Minutes,
}

impl Unit {
    pub fn format(self, v: Option<f64>) -> String {
        match v {
            None => "n/a".to_string(),
            Some(v) if !v.is_finite() => "n/a".to_string(),
            Some(v) => match self {
                Unit::Dollars => format!("${v:.2}"),
                Unit::Percent => format!("{v:.1}%"),
                Unit::Count => format!("{v:.0}"),
                Unit::Minutes => format!("{v:.1} min"),
            },
        }
    }

    /// An axis label, on an axis spanning `span`: whole percents unless the span is small.
    pub fn tick(self, v: f64, span: f64) -> String {
        match self {
            Unit::Dollars => format!("${v:.2}"),
            Unit::Percent if span < 6.0 => format!("{v:.1}%"),
            Unit::Percent => format!("{v:.0}%"),
            Unit::Count if span < 6.0 => format!("{v:.1}"),
            Unit::Count => format!("{v:.0}"),
            Unit::Minutes => format!("{v:.1}"),
        }
    }
}

/// A link in the breadcrumbs (no `href`: shown as text).
#[derive(Debug, Clone)]
pub struct Crumb {
    pub label: String,
    pub href: Option<String>,
}

/// The reports of a node, in the navigation of its card and of every report: the path
/// segment after `/report/` (`card`: the score card) and the link's text.
pub const REPORTS: [(&str, &str); 7] = [
    ("card", "Score card"),
    ("day", "Hours of a day"),
    ("week", "Days of a week"),
    ("on-time", "Weekly on-time"),
    ("crp-otc", "Weekly CRP and OTC"),
    ("attainment", "Target attainment and bonus"),
    ("budget", "Budget estimator"),
];

/// The navigation between a node's card and reports (`current`: the one shown, not linked).
/// The card and the attainment report are for the pay period holding `day`, the diagnostics
/// for `day` itself (none: each page's default).
pub fn reports_nav(level: Level, node: &str, day: Option<NaiveDate>, current: &str) -> Markup {
    let at = |key: &str| {
        day.map(|d| format!("?{key}={}", d.format("%Y-%m-%d")))
            .unwrap_or_default()
    };
    html! {
        nav.reports.noprint aria-label="Reports" {
            @for (i, (slug, text)) in REPORTS.iter().enumerate() {
                @if i > 0 { " · " }
                @if *slug == current { strong { (text) } }
                @else {
                    @let href = match *slug {
                        "card" => format!("{}{}", card_path(level, node), at("period")),
                        "attainment" => format!("/report/attainment/{}/{}{}", level.as_str(), encode(node), at("period")),
                        "budget" => format!("/report/budget/{}/{}", level.as_str(), encode(node)),
                        k => format!("/report/{k}/{}/{}{}", level.as_str(), encode(node), at("date")),
                    };
                    a href=(href) { (text) }
                }
            }
        }
    }
}

/// A whole page: the header (who is signed in, sign-out), the breadcrumbs and `body`.
pub fn layout(title: &str, user: Option<&SignedIn>, crumbs: &[Crumb], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · rxcube" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                header.top {
                    a.brand href="/" { "rxcube" }
                    @if !crumbs.is_empty() {
                        nav.crumbs aria-label="Breadcrumbs" {
                            @for (i, c) in crumbs.iter().enumerate() {
                                @if i > 0 { span.sep { " › " } }
                                @match &c.href {
                                    Some(h) => a href=(h) { (c.label) },
                                    None => span { (c.label) },
                                }
                            }
                        }
                    }
                    @if user.is_some() {
                        a.alerts.noprint href="/alerts" { "Alerts" }
                        form.search.noprint method="get" action="/search" role="search" {
                            input type="search" name="q" placeholder="Pharmacy id or name" aria-label="Search for a pharmacy" maxlength="100";
                            button type="submit" { "Search" }
                        }
                    }
                    @if let Some(u) = user {
                        form.signout method="post" action="/logout" {
                            span.who { (u.principal.name) " (" (u.principal.scope) ")" }
                            input type="hidden" name="csrf" value=(u.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// An HTML response.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A CSV download: `disposition` is the `Content-Disposition` (its file name).
pub fn csv(disposition: String, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

/// The page of an error. The 404 page is one text whatever was asked: a node that does not
/// exist and one outside the scope look alike.
pub fn error(e: &PageError, user: Option<&SignedIn>) -> Response {
    let (status, title, text) = match e {
        PageError::NotFound => (
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such page.".to_string(),
        ),
        PageError::BadRequest(why) => (StatusCode::BAD_REQUEST, "Bad request", why.clone()),
        PageError::Failed => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "The page could not be computed",
            "The page could not be computed; try again later.".to_string(),
        ),
    };
    respond(
        status,
        layout(
            title,
            user,
            &[],
            html! {
                h1 { (title) }
                p.error { (text) }
                p { a href="/" { "Your score card" } }
            },
        ),
    )
}

/// Any path no route serves.
pub async fn not_found_route() -> Response {
    error(&PageError::NotFound, None)
}

/// A method a route does not take (a POST to a card, a GET of `/logout`).
pub async fn method_not_allowed() -> Response {
    let mut r = error(
        &PageError::BadRequest("This page is not sent or read that way.".into()),
        None,
    );
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// The stylesheet (served from the binary).
pub async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

/// Few colours; line styles tell value, peer average and target tiers apart, so a greyscale
/// print reads as the screen does. The print rules fit a score card on one page of US Letter
/// and of A4 (the smaller of each dimension: 190 mm by 259 mm inside 10 mm margins).
pub const STYLE: &str = r#"
:root { --ink: #111; --mid: #555; --faint: #ddd; --accent: #1f4e79; }
* { box-sizing: border-box; }
body { font: 14px/1.35 system-ui, sans-serif; color: var(--ink); margin: 0 auto; max-width: 1100px; padding: 0 12px 24px; }
a { color: var(--accent); }
header.top { display: flex; flex-wrap: wrap; align-items: center; gap: 12px; border-bottom: 1px solid var(--faint); padding: 6px 0; }
header.top .brand { font-weight: 700; text-decoration: none; color: var(--ink); }
nav.crumbs { flex: 1; }
nav.crumbs .sep { color: var(--mid); }
form.signout { margin-left: auto; display: flex; gap: 8px; align-items: center; }
.who { color: var(--mid); }
h1 { font-size: 20px; margin: 10px 0 4px; }
h2 { font-size: 15px; margin: 0 0 4px; }
.sub { color: var(--mid); margin: 0 0 8px; }
form.period { display: inline-flex; gap: 6px; align-items: center; margin: 0 0 8px; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; font-size: 12px; color: var(--mid); margin: 4px 0 8px; }
.legend svg { vertical-align: middle; }
.panel { display: grid; grid-template-columns: 3fr 2fr; gap: 12px; border-top: 1px solid var(--faint); padding: 6px 0; break-inside: avoid; }
.panel svg.chart { width: 100%; height: auto; display: block; }
.panels.consolidated { display: grid; grid-template-columns: 1fr 1fr; column-gap: 16px; }
.panels.consolidated .panel { grid-template-columns: 1fr; gap: 2px; align-content: start; }
.panels.consolidated .panel > div:first-child { order: 2; }
table.figures { border-collapse: collapse; font-size: 13px; width: 100%; }
table.figures th { text-align: left; font-weight: 400; color: var(--mid); padding: 1px 8px 1px 0; white-space: nowrap; }
table.figures td { padding: 1px 0; font-variant-numeric: tabular-nums; }
table.ranked { border-collapse: collapse; font-size: 13px; width: 100%; margin-top: 6px; }
table.ranked th, table.ranked td { border-bottom: 1px solid var(--faint); padding: 2px 6px; text-align: right; font-variant-numeric: tabular-nums; }
table.ranked th:first-child, table.ranked td:first-child { text-align: left; }
.rank { color: var(--mid); font-size: 11px; }
p.error { font-size: 16px; }
form.login { display: grid; gap: 8px; max-width: 320px; margin-top: 16px; }
form.login input { font-size: 15px; padding: 4px; }
.note { color: var(--mid); font-size: 12px; }
nav.reports { font-size: 13px; margin: 0 0 6px; }
form.search { display: flex; gap: 4px; }
form.search input { width: 11em; }
@media print {
  @page { margin: 10mm; }
  body { font-size: 10px; max-width: none; padding: 0; }
  form.signout, form.period, .noprint { display: none; }
  a { color: var(--ink); text-decoration: none; }
  h1 { font-size: 14px; margin: 2px 0; }
  h2 { font-size: 11px; }
  .sub, .legend { margin: 0 0 2px; }
  .panel { grid-template-columns: 120mm 1fr; gap: 4mm; padding: 1mm 0; }
  .panel svg.chart { width: 120mm; height: 34mm; }
  .panels.consolidated { column-gap: 6mm; }
  .panels.consolidated .panel { grid-template-columns: 1fr; gap: 0; }
  .panels.consolidated .panel svg.chart { width: 88mm; height: 27.5mm; }
  table.figures, table.ranked { font-size: 9px; }
  table.ranked th, table.ranked td { padding: 0 4px; }
}
"#;
