//! The data contract as Markdown: the generated sections of `docs/contract.md`.
//!
//! [`contract_markdown`] renders every table of [`crate::contract`] (columns, types, keys,
//! references, the rules that reject a record and the advisories that only warn, the storage
//! layout) from the definitions themselves, so the page cannot drift from what the import
//! utility checks. A test compares the page with the rendering; `UPDATE_DOCS=1 cargo test
//! --workspace --lib docs` rewrites it. The cube's metrics are rendered the same way by
//! `rxcube_cube::docs` into another section of the same page ([`sync_section`]).
//!
//! Every [`Check`] and [`RowRule`] is described by a `match` without a wildcard: a new rule does
//! not compile until it is documented here.

use std::fmt::Write as _;
use std::path::Path;

use crate::contract::{
    Check, ColumnDef, MAX_ID_BYTES, PARTITION_COLUMN, RowRule, TableDef, TableName,
};
use crate::domain;

/// The page the generated sections live in, relative to the workspace root.
pub const CONTRACT_PAGE: &str = "docs/contract.md";

/// The name of the section [`contract_markdown`] fills.
pub const TABLES_SECTION: &str = "tables";

/// The environment variable that makes the doc tests rewrite the page instead of failing.
pub const UPDATE_ENV: &str = "UPDATE_DOCS";

/// The command that rewrites every generated section of the page.
pub const REGENERATE: &str = "UPDATE_DOCS=1 cargo test --workspace --lib docs";

/// The tables of the contract, in load order, as Markdown (headings at level 3).
pub fn contract_markdown() -> String {
    let mut out = String::new();
    let names: Vec<String> = TableName::ALL
        .iter()
        .map(|t| format!("[`{t}`](#{t})"))
        .collect();
    let _ = writeln!(
        out,
        "The tables, in the order their references require them to be loaded: {}.\n",
        names.join(", ")
    );
    for t in TableName::ALL {
        table_markdown(&mut out, t.def());
    }
    out
}

fn table_markdown(out: &mut String, def: &TableDef) {
    let _ = writeln!(out, "### {}\n", def.name);
    let _ = writeln!(out, "{}\n", def.doc);
    let _ = writeln!(
        out,
        "- **Natural key:** {}. A record whose key is on file replaces it.",
        code_list(def.key)
    );
    match def.event_time {
        Some(e) => {
            let _ = writeln!(
                out,
                "- **Event table**, event time `{e}`: stored partitioned by `{PARTITION_COLUMN}` \
                 (an extra DATE column: the first day of the UTC month of `{e}`) and sorted by {}.",
                code_list(&def.sort_columns())
            );
        }
        None => {
            let _ = writeln!(
                out,
                "- **Reference table**, not partitioned; stored sorted by {}.",
                code_list(&def.sort_columns())
            );
        }
    }
    for r in def.references {
        let _ = writeln!(
            out,
            "- **Reference:** every `{}` must be on file as a `{}.{}` (that table loads first).",
            r.column, r.table, r.target_column
        );
    }
    let _ = writeln!(
        out,
        "\n| column | type | Arrow type | empty (NULL) | rules (error) | advisories (warning) | meaning |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for c in def.columns {
        let _ = writeln!(
            out,
            "| `{}` | {} | `{}` | {} | {} | {} | {} |",
            c.name,
            c.ty.describe(),
            c.ty.arrow_type(),
            if c.nullable { "allowed" } else { "required" },
            checks_cell(c, c.checks),
            checks_cell(c, c.advisories),
            cell(c.doc),
        );
    }
    out.push('\n');
    if !def.row_rules.is_empty() {
        let _ = writeln!(
            out,
            "Rules between the columns of a record (an error: nothing is posted):\n"
        );
        for r in def.row_rules {
            let _ = writeln!(out, "- {}", row_rule_text(def, r));
        }
        out.push('\n');
    }
    if !def.row_advisories.is_empty() {
        let _ = writeln!(
            out,
            "Advisories between the columns of a record (a record that breaks one is posted, \
             with a warning):\n"
        );
        for r in def.row_advisories {
            let _ = writeln!(out, "- {}", row_rule_text(def, r));
        }
        out.push('\n');
    }
}

fn checks_cell(c: &ColumnDef, checks: &[Check]) -> String {
    if checks.is_empty() {
        return "—".to_string();
    }
    checks
        .iter()
        .map(|k| cell(&check_text(k, c)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a value must be to pass `check`, in words (for the column `c`).
pub fn check_text(check: &Check, c: &ColumnDef) -> String {
    match *check {
        Check::OneOf(values) => format!("one of {}", code_list(values)),
        Check::IntRange(lo, hi) => format!("from {lo} to {hi}"),
        Check::NumRange(lo, hi) => format!("from {lo} to {hi}"),
        Check::YearRange(from, to) => {
            let what = match c.ty {
                crate::ColumnType::Instant => "an instant",
                _ => "a date",
            };
            format!("{what} in the years {from} to {to}")
        }
        Check::NonEmpty => "not blank".to_string(),
        Check::TimeZone => {
            "an IANA time zone name of the tz database (e.g. `America/Chicago`)".to_string()
        }
        Check::Ssn => "`NNN-NN-NNNN` (3 digits, 2 digits, 4 digits)".to_string(),
        Check::TargetableMetric => {
            let metrics: Vec<&str> = domain::KEY_METRICS
                .iter()
                .chain(domain::OTHER_TARGETABLE_METRICS)
                .copied()
                .collect();
            format!(
                "a metric that takes targets: {}, or a metric the warehouse's `cube.toml` adds",
                code_list(&metrics)
            )
        }
        Check::Identifier => format!(
            "an identifier: not blank, at most {MAX_ID_BYTES} bytes, no control characters; kept \
             exactly as written"
        ),
    }
}

/// A rule between the columns of a record of `def`, in words.
pub fn row_rule_text(def: &TableDef, rule: &RowRule) -> String {
    match *rule {
        RowRule::Ordered {
            earlier,
            later,
            strict,
        } => {
            let empty: Vec<&str> = [earlier, later]
                .into_iter()
                .filter(|c| def.column(c).is_some_and(|c| c.nullable))
                .collect();
            let unless = if empty.is_empty() {
                String::new()
            } else {
                format!(" (unless {} is empty)", code_list(&empty))
            };
            format!(
                "`{later}` is {} `{earlier}`{unless}.",
                if strict { "after" } else { "on or after" }
            )
        }
        RowRule::MaxSpanHours { start, end, hours } => {
            format!("`{end}` is at most {hours} hours after `{start}`.")
        }
        RowRule::HoursWithinSpan { hours, start, end } => format!(
            "`{hours}` does not exceed the elapsed time from `{start}` to `{end}`, in hours."
        ),
        RowRule::SignMatches { amount, quantity } => format!(
            "`{quantity}` is not 0 (a return is negative), and `{amount}` is 0 or has the sign \
             of `{quantity}`."
        ),
        RowRule::OnlyWhen {
            column,
            when,
            value,
        } => format!("`{column}` is set only when `{when}` is `{value}`."),
        RowRule::PercentageTarget { metric, value } => {
            let percentages: Vec<&str> = domain::KEY_METRICS
                .iter()
                .chain(domain::OTHER_TARGETABLE_METRICS)
                .copied()
                .filter(|m| domain::is_percentage_metric(m))
                .collect();
            format!(
                "When `{metric}` is a percentage ({}), `{value}` is at most 100.",
                code_list(&percentages)
            )
        }
    }
}

fn code_list<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Text made safe for a Markdown table cell.
pub fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn markers(section: &str) -> (String, String) {
    (
        format!("<!-- BEGIN GENERATED {section}: edit the source, not this section -->"),
        format!("<!-- END GENERATED {section} -->"),
    )
}

/// `document` with the generated `section` (between its markers) replaced by `body`.
pub fn splice(document: &str, section: &str, body: &str) -> Result<String, String> {
    let (begin, end) = markers(section);
    let start = document
        .find(&begin)
        .ok_or_else(|| format!("no line `{begin}`"))?
        + begin.len();
    let stop = document[start..]
        .find(&end)
        .map(|i| start + i)
        .ok_or_else(|| format!("no line `{end}` after `{begin}`"))?;
    Ok(format!(
        "{}\n\n{}\n\n{}",
        &document[..start],
        body.trim_end(),
        &document[stop..]
    ))
}

/// Checks that the generated `section` of the page at `path` is `body`; with
/// [`UPDATE_ENV`]`=1` rewrites it instead. The error says how to regenerate (`regenerate`, a
/// command) and where the page first differs.
pub fn sync_section(
    path: &Path,
    section: &str,
    body: &str,
    regenerate: &str,
) -> Result<(), String> {
    let page = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let want = splice(&page, section, body).map_err(|e| format!("{}: {e}", path.display()))?;
    if want == page {
        return Ok(());
    }
    if std::env::var(UPDATE_ENV).is_ok_and(|v| v == "1") {
        return std::fs::write(path, want).map_err(|e| format!("{}: {e}", path.display()));
    }
    let (line, theirs, ours) = page
        .lines()
        .zip(want.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i + 1, a.to_string(), b.to_string()))
        .unwrap_or_else(|| {
            (
                page.lines().count().min(want.lines().count()) + 1,
                String::new(),
                String::new(),
            )
        });
    Err(format!(
        "{} is out of date: its generated section '{section}' differs from the definitions. \
         Regenerate it with `{regenerate}`.\nFirst difference, line {line}:\n  page: {theirs}\n  \
         want: {ours}",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{PEER_GROUPS, PHARMACIES};

    #[test]
    fn docs_contract_md_matches_the_contract() {
        // The workspace root, two levels above this crate.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2);
        let page = root.expect("workspace root").join(CONTRACT_PAGE);
        if let Err(e) = sync_section(&page, TABLES_SECTION, &contract_markdown(), REGENERATE) {
            panic!("{e}");
        }
    }

    #[test]
    fn every_table_column_and_rule_is_rendered() {
        let md = contract_markdown();
        for t in TableName::ALL {
            let def = t.def();
            assert!(md.contains(&format!("### {}\n", def.name)), "{}", def.name);
            for c in def.columns {
                assert!(md.contains(&format!("| `{}` |", c.name)), "{}", c.name);
            }
            for r in def.row_rules.iter().chain(def.row_advisories) {
                assert!(md.contains(&row_rule_text(def, r)), "{r:?}");
            }
        }
    }

    /// The defaults the column docs promise are the defaults the domain applies.
    #[test]
    fn documented_defaults_are_the_domain_defaults() {
        let tz = PHARMACIES
            .column("timezone")
            .map(|c| c.doc)
            .unwrap_or_default();
        assert!(tz.contains(domain::DEFAULT_TIMEZONE), "{tz}");
        let minutes = PEER_GROUPS
            .column("rx_target_minutes")
            .map(|c| c.doc)
            .unwrap_or_default();
        assert!(
            minutes.contains(&format!("NULL = {}", domain::DEFAULT_RX_TARGET_MINUTES)),
            "{minutes}"
        );
    }

    #[test]
    fn splice_replaces_only_the_section() {
        let (b, e) = markers("x");
        let page = format!("intro\n{b}\nold\n{e}\noutro\n");
        let new = splice(&page, "x", "new\n").expect("markers");
        assert_eq!(new, format!("intro\n{b}\n\nnew\n\n{e}\noutro\n"));
        assert_eq!(splice(&new, "x", "new").expect("markers"), new);
        assert!(splice(&page, "y", "z").is_err());
    }
}
