//! The rankings report: `/report/rankings?level=&node=&metric=&grain=&period=&among=`, and the
//! same table as CSV at `/report/rankings.csv`.
//!
//! `among=peer_group` (a pharmacy): the pharmacies of its peer group ranked on the metric for
//! the period; `among=children` (a node above the pharmacy): its children ranked among
//! themselves. Rows come from `cube.rankings` through the user's scoped session, so a user
//! sees the rows of its scope, with ranks, group sizes and pacesetters computed over everyone.
//! The points of a score card's graphs link here.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use chrono::NaiveDate;
use maud::html;
use rxcube_access::Level;
use serde::Deserialize;

use crate::Web;
use crate::auth::{Remote, SignedIn, audit_denied, card_path, encode, signed_in};
use crate::card::{
    Reader, child_level, level_plural, level_title, metric, parse_period, parse_target, ts,
};
use crate::data::{PageError, Rows, quote};
use crate::page::{Crumb, error, layout, reports_nav, respond};

#[derive(Debug, Deserialize)]
pub struct RankingsQuery {
    level: Option<String>,
    node: Option<String>,
    metric: Option<String>,
    grain: Option<String>,
    period: Option<String>,
    among: Option<String>,
}

/// A checked request.
struct Asked {
    level: Level,
    node: String,
    metric: crate::card::Metric,
    grain: &'static str,
    period: NaiveDate,
    peer_group: bool,
}

fn check(q: &RankingsQuery) -> Result<Asked, PageError> {
    let bad = |s: &str| PageError::BadRequest(s.to_string());
    let (level, node) = parse_target(
        q.level.as_deref().unwrap_or("pharmacy"),
        q.node.as_deref().unwrap_or(""),
    )?;
    let metric = metric(q.metric.as_deref().unwrap_or("")).ok_or_else(|| {
        bad(
            "The metric must be one of labor_cost_per_rx, csat_pct, on_time_pct, \
             otc_sales_per_rx, crp_usage_pct.",
        )
    })?;
    let grain = match q.grain.as_deref().unwrap_or("pay_period") {
        "pay_period" => "pay_period",
        "quarter" => "quarter",
        _ => return Err(bad("The grain must be pay_period or quarter.")),
    };
    let period = parse_period(q.period.as_deref())?
        .ok_or_else(|| bad("Give the period: the first day of a pay period or quarter."))?;
    let peer_group = match q.among.as_deref() {
        None if level == Level::Pharmacy => true,
        None => false,
        Some("peer_group") if level == Level::Pharmacy => true,
        Some("children") if level != Level::Pharmacy => false,
        Some(_) => {
            return Err(bad(
                "Rank a pharmacy among its peer group (among=peer_group), or the children \
                 of a node above it (among=children).",
            ));
        }
    };
    Ok(Asked {
        level,
        node,
        metric,
        grain,
        period,
        peer_group,
    })
}

const COLUMNS: &str = "node, value, rank, group_name, group_size, pacesetter_1, \
                       pacesetter_1_value, pacesetter_2, pacesetter_2_value";

/// The ranked rows (empty: no such node or period within the scope).
async fn ranked(r: &Reader<'_>, a: &Asked) -> Result<(Level, Rows), PageError> {
    let common = format!(
        "grain = {} AND period_start = {} AND metric = {}",
        quote(a.grain),
        ts(a.period),
        quote(a.metric.name)
    );
    if a.peer_group {
        let own = r
            .rows(&format!(
                "SELECT group_name FROM cube.rankings WHERE level = 'pharmacy' AND node = {} \
                 AND ranked_among = 'peer_group' AND {common}",
                quote(&a.node)
            ))
            .await?;
        let Some(group) = own.text(0, "group_name") else {
            return Err(PageError::NotFound);
        };
        let rows = r
            .rows(&format!(
                "SELECT {COLUMNS} FROM cube.rankings WHERE level = 'pharmacy' \
                 AND ranked_among = 'peer_group' AND group_name = {} AND {common} \
                 ORDER BY rank NULLS LAST, node",
                quote(group)
            ))
            .await?;
        return Ok((Level::Pharmacy, rows));
    }
    let child = child_level(a.level).ok_or(PageError::NotFound)?;
    let own = r
        .rows(&format!(
            "SELECT count(*) AS n FROM cube.metrics WHERE level = {} AND node = {} AND {common}",
            quote(a.level.as_str()),
            quote(&a.node)
        ))
        .await?;
    if own.num(0, "n").unwrap_or(0.0) < 1.0 {
        return Err(PageError::NotFound);
    }
    let rows = r
        .rows(&format!(
            "SELECT {COLUMNS} FROM cube.rankings WHERE level = {} AND ranked_among = 'siblings' \
             AND group_name = {} AND {common} ORDER BY rank NULLS LAST, node",
            quote(child.as_str()),
            quote(&a.node)
        ))
        .await?;
    Ok((child, rows))
}

async fn answer(
    web: &Arc<Web>,
    headers: &HeaderMap,
    uri: &Uri,
    remote: Remote,
    query: Result<Query<RankingsQuery>, QueryRejection>,
    render: impl FnOnce(&SignedIn, &Asked, Level, &Rows, &[Crumb]) -> Response,
) -> Response {
    let user = match signed_in(web, headers, uri, remote).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let result = async {
        let Query(q) = query.map_err(|_| PageError::BadRequest("Bad query string.".into()))?;
        let asked = check(&q)?;
        let reader = Reader { web, user: &user };
        let (level, rows) = ranked(&reader, &asked).await?;
        let card = format!(
            "{}?period={}",
            card_path(asked.level, &asked.node),
            asked.period.format("%Y-%m-%d")
        );
        // The org path as of the period's first day (a quarter's or a pay period's).
        let crumbs = reader
            .report_crumbs(asked.level, &asked.node, asked.period, card, "Rankings")
            .await?;
        Ok::<_, PageError>((asked, level, rows, crumbs))
    }
    .await;
    match result {
        Ok((asked, level, rows, crumbs)) => render(&user, &asked, level, &rows, &crumbs),
        Err(e) => {
            if e == PageError::NotFound {
                audit_denied(
                    web,
                    &user,
                    "/report/rankings: no such node or period, or not within the scope",
                );
            }
            error(&e, Some(&user))
        }
    }
}

fn csv_link(a: &Asked) -> String {
    format!(
        "/report/rankings.csv?level={}&node={}&metric={}&grain={}&period={}&among={}",
        a.level.as_str(),
        encode(&a.node),
        a.metric.name,
        a.grain,
        a.period.format("%Y-%m-%d"),
        if a.peer_group {
            "peer_group"
        } else {
            "children"
        }
    )
}

/// `GET /report/rankings`.
pub async fn page(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    uri: Uri,
    remote: Remote,
    query: Result<Query<RankingsQuery>, QueryRejection>,
) -> Response {
    answer(&web, &headers, &uri, remote, query, |user, a, level, rows, crumbs| {
        let u = a.metric.unit;
        let group = rows.text(0, "group_name").unwrap_or(&a.node).to_string();
        let title = format!(
            "{}: {} ranked, {} {}",
            a.metric.title,
            if a.peer_group {
                format!("peer group {group}")
            } else {
                format!("{} of {}", level_plural(level).to_lowercase(), a.node)
            },
            a.grain.replace('_', " "),
            a.period.format("%Y-%m-%d")
        );
        let body = html! {
            h1 { (title) }
            (reports_nav(a.level, &a.node, (a.grain == "pay_period").then_some(a.period), "rankings"))
            p.sub {
                "Rank 1 is best (" (if a.metric.name == "labor_cost_per_rx" { "lowest" } else { "highest" }) "); "
                "ties share a rank. "
                a href=(csv_link(a)) { "Download CSV" }
            }
            @if let (Some(p1), true) = (rows.text(0, "pacesetter_1"), !rows.is_empty()) {
                p { "Pacesetters: 1. " (p1) " " (u.format(rows.num(0, "pacesetter_1_value")))
                    @if let Some(p2) = rows.text(0, "pacesetter_2") { " · 2. " (p2) " " (u.format(rows.num(0, "pacesetter_2_value"))) }
                }
            }
            table.ranked {
                tr { th { (level_title(level)) } th { "Rank" } th { "Value" } th { "Of" } }
                @for i in 0..rows.len() {
                    @let node = rows.text(i, "node").unwrap_or("");
                    tr data-node=(node) {
                        td { @if user.reaches(level, node) { a href=(card_path(level, node)) { (node) } } @else { (node) } }
                        td data-field="rank" { (rows.num(i, "rank").map_or("n/a".into(), |r| format!("{}", r as i64))) }
                        td data-field="value" { (u.format(rows.num(i, "value"))) }
                        td data-field="group_size" { (rows.num(i, "group_size").map_or("n/a".into(), |r| format!("{}", r as i64))) }
                    }
                }
            }
            @if rows.is_empty() { p.note { "No figures." } }
        };
        respond(StatusCode::OK, layout(&title, Some(user), crumbs, body))
    })
    .await
}

/// One CSV field, quoted when it holds a comma, quote or line break.
pub(crate) fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `GET /report/rankings.csv`: the report's rows, full precision.
pub async fn csv(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    uri: Uri,
    remote: Remote,
    query: Result<Query<RankingsQuery>, QueryRejection>,
) -> Response {
    answer(
        &web,
        &headers,
        &uri,
        remote,
        query,
        |_, a, level, rows, _| {
            let columns: Vec<&str> = COLUMNS.split(',').map(str::trim).collect();
            let mut out = format!("level,{}\n", columns.join(","));
            for i in 0..rows.len() {
                let cells: Vec<String> = columns
                    .iter()
                    .map(|c| field(rows.text(i, c).unwrap_or("")))
                    .collect();
                out.push_str(&format!("{},{}\n", level.as_str(), cells.join(",")));
            }
            let name = format!(
                "attachment; filename=\"rankings-{}-{}.csv\"",
                a.metric.name,
                a.period.format("%Y-%m-%d")
            );
            crate::page::csv(name, out)
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> RankingsQuery {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(a, _)| *a == k)
                .map(|(_, v)| v.to_string())
        };
        RankingsQuery {
            level: get("level"),
            node: get("node"),
            metric: get("metric"),
            grain: get("grain"),
            period: get("period"),
            among: get("among"),
        }
    }

    #[test]
    fn requests_are_checked() {
        let ok = check(&q(&[
            ("node", "RX101"),
            ("metric", "on_time_pct"),
            ("period", "2024-03-03"),
        ]))
        .expect("valid");
        assert!(ok.peer_group);
        assert_eq!(ok.grain, "pay_period");
        let region = check(&q(&[
            ("level", "region"),
            ("node", "West"),
            ("metric", "csat_pct"),
            ("grain", "quarter"),
            ("period", "2024-01-01"),
        ]))
        .expect("valid");
        assert!(!region.peer_group);
        for bad in [
            vec![
                ("node", "RX101"),
                ("metric", "ssn"),
                ("period", "2024-03-03"),
            ],
            vec![("node", "RX101"), ("metric", "on_time_pct")],
            vec![
                ("node", "RX101"),
                ("metric", "on_time_pct"),
                ("period", "2024-03-03"),
                ("grain", "hour"),
            ],
            vec![
                ("node", "RX101"),
                ("metric", "on_time_pct"),
                ("period", "2024-03-03"),
                ("among", "children"),
            ],
        ] {
            assert!(matches!(check(&q(&bad)), Err(PageError::BadRequest(_))));
        }
        assert_eq!(
            check(&q(&[("level", "nowhere"), ("node", "x")])).err(),
            Some(PageError::NotFound)
        );
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(field("RX101"), "RX101");
        assert_eq!(field("A, B"), "\"A, B\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
