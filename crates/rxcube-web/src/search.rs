//! Search for a pharmacy: `/search?q=`, from the form in every page's header.
//!
//! A pharmacy matches when its id starts with the text or its name holds it, ignoring case.
//! The rows are the `pharmacies` rows the user's scoped session reads, and of those only the
//! pharmacies whose cards are within the scope, so a search never names a pharmacy outside it:
//! another pharmacy's id finds nothing, exactly as an id that does not exist. At most
//! [`MAX_RESULTS`] pharmacies are listed, each linking to its card.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::html;
use rxcube_access::Level;
use serde::Deserialize;

use crate::Web;
use crate::auth::{Remote, card_path, signed_in};
use crate::card::Reader;
use crate::data::{PageError, quote};
use crate::page::{Crumb, error, layout, respond};

/// The most pharmacies a search lists.
pub const MAX_RESULTS: usize = 50;
/// The longest search text (in characters).
pub const MAX_QUERY: usize = 100;

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// The SQL of the pharmacies matching `q` (trimmed, non-empty), newest row of each first.
fn sql(q: &str) -> String {
    let q = quote(&q.to_lowercase());
    format!(
        "SELECT pharmacy_id, name FROM pharmacies WHERE starts_with(lower(pharmacy_id), {q}) \
         OR strpos(lower(name), {q}) > 0 ORDER BY pharmacy_id, valid_from DESC LIMIT 2000"
    )
}

/// `GET /search?q=`.
pub async fn page(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    uri: Uri,
    remote: Remote,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Response {
    let user = match signed_in(&web, &headers, &uri, remote).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Ok(Query(q)) = query else {
        return error(
            &PageError::BadRequest("Bad query string.".into()),
            Some(&user),
        );
    };
    let q = q.q.unwrap_or_default().trim().to_string();
    if q.chars().count() > MAX_QUERY || q.chars().any(char::is_control) {
        return error(
            &PageError::BadRequest(format!(
                "Search for at most {MAX_QUERY} characters of a pharmacy's id or name."
            )),
            Some(&user),
        );
    }
    let mut found: Vec<(String, String)> = vec![];
    let mut more = false;
    if !q.is_empty() {
        let rows = match (Reader {
            web: &web,
            user: &user,
        })
        .rows(&sql(&q))
        .await
        {
            Ok(rows) => rows,
            Err(e) => return error(&e, Some(&user)),
        };
        for i in 0..rows.len() {
            let Some(id) = rows.text(i, "pharmacy_id") else {
                continue;
            };
            if found.last().is_some_and(|(last, _)| last == id)
                || !user.reaches(Level::Pharmacy, id)
            {
                continue;
            }
            if found.len() == MAX_RESULTS {
                more = true;
                break;
            }
            found.push((
                id.to_string(),
                rows.text(i, "name").unwrap_or("").to_string(),
            ));
        }
    }
    let title = "Search for a pharmacy";
    let crumbs = [Crumb {
        label: "Search".into(),
        href: None,
    }];
    let body = html! {
        h1 { (title) }
        form.search method="get" action="/search" {
            input type="search" name="q" value=(q) maxlength=(MAX_QUERY) aria-label="Pharmacy id or name";
            button type="submit" { "Search" }
        }
        @if !q.is_empty() {
            @if found.is_empty() {
                p.note data-field="results" { "No pharmacy of yours matches “" (q) "”." }
            } @else {
                p.note data-field="results" {
                    (found.len()) @if more { "+" }
                    @if found.len() == 1 && !more { " pharmacy matches “" } @else { " pharmacies match “" }
                    (q) "”"
                    @if more { " (the first " (MAX_RESULTS) "; type more of the id or name)" }
                    "."
                }
                table.ranked {
                    tr { th { "Pharmacy" } th { "Name" } }
                    @for (id, name) in &found {
                        tr data-result=(id) {
                            td { a href=(card_path(Level::Pharmacy, id)) { (id) } }
                            td { (name) }
                        }
                    }
                }
            }
        }
    };
    respond(StatusCode::OK, layout(title, Some(&user), &crumbs, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_a_quoted_literal_lower_cased() {
        let s = sql("O'Hare RX");
        assert!(
            s.contains("starts_with(lower(pharmacy_id), 'o''hare rx')"),
            "{s}"
        );
        assert!(s.contains("strpos(lower(name), 'o''hare rx') > 0"), "{s}");
    }
}
