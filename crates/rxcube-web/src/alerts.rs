//! The metrics that slipped: `/alerts`, linked from every page's header.
//!
//! One row per pharmacy, metric and reason of `cube.alerts` in the user's scoped session (so a
//! pharmacy manager sees their own pharmacy's alerts, an area manager those of the pharmacies
//! under the area): the current pay period's value, what it is worse than (the threshold target
//! or the peer average) and for how many consecutive pay periods. Each pharmacy links to its
//! card for that pay period.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::html;
use rxcube_access::Level;

use crate::Web;
use crate::auth::{Remote, card_path, signed_in};
use crate::bonus::metric_shown;
use crate::card::Reader;
use crate::page::{Crumb, error, layout, respond};

const SQL: &str = "SELECT node, metric, value, reason, reference, \
     CAST(CAST(period_start AS DATE) AS VARCHAR) AS period, \
     CAST(CAST(since AS DATE) AS VARCHAR) AS since, periods \
     FROM cube.alerts ORDER BY node, metric, reason";

/// `GET /alerts`.
pub async fn page(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    uri: Uri,
    remote: Remote,
) -> Response {
    let user = match signed_in(&web, &headers, &uri, remote).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let rows = match (Reader {
        web: &web,
        user: &user,
    })
    .rows(SQL)
    .await
    {
        Ok(rows) => rows,
        Err(e) => return error(&e, Some(&user)),
    };
    let title = "Alerts";
    let crumbs = [Crumb {
        label: title.into(),
        href: None,
    }];
    let period = (0..rows.len()).find_map(|i| rows.text(i, "period"));
    let body = html! {
        h1 { (title) }
        @match period {
            None => p.note data-field="alerts" { "No metric of yours has slipped in the current pay period." },
            Some(p) => {
                p.note data-field="alerts" {
                    "Pay period of " (p) ": metrics worse than their peer group's threshold, or \
                     worse than the peer average by more than the configured margin."
                }
                table.ranked {
                    tr {
                        th { "Pharmacy" } th { "Metric" } th { "Value" } th { "Reason" }
                        th { "Worse than" } th { "Pay periods" } th { "Since" }
                    }
                    @for i in 0..rows.len() {
                        @let node = rows.text(i, "node").unwrap_or_default();
                        @let (metric, unit) = metric_shown(rows.text(i, "metric").unwrap_or_default());
                        tr data-alert=(format!("{node}/{}/{}", rows.text(i, "metric").unwrap_or_default(), rows.text(i, "reason").unwrap_or_default())) {
                            td { a href=(format!("{}?period={p}", card_path(Level::Pharmacy, node))) { (node) } }
                            td { (metric) }
                            td data-field="value" { (unit.format(rows.num(i, "value"))) }
                            td { (rows.text(i, "reason").unwrap_or_default()) }
                            td data-field="reference" { (unit.format(rows.num(i, "reference"))) }
                            td data-field="periods" { (rows.num(i, "periods").map(|n| n as i64).unwrap_or_default()) }
                            td { (rows.text(i, "since").unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    };
    respond(StatusCode::OK, layout(title, Some(&user), &crumbs, body))
}
