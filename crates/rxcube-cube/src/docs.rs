//! The cube definition as Markdown: the `metrics` section of `docs/contract.md`.
//!
//! [`metrics_markdown`] renders the time settings, org levels, grains, metrics and components of
//! a [`CubeDef`] (the built-in `cube.toml` for the page), so the page says what the cube
//! computes. A test compares the page with the rendering; `UPDATE_DOCS=1 cargo test
//! --workspace --lib docs` rewrites it. The tables of the contract are rendered by
//! [`rxcube_model::docs`].

use std::fmt::Write as _;

use rxcube_model::docs::cell;

use crate::definition::{Better, CubeDef, LEVELS, MetricKind};
use crate::time::Grain;

/// The name of the section [`metrics_markdown`] fills.
pub const METRICS_SECTION: &str = "metrics";

/// What `def` computes, as Markdown (headings at level 3).
pub fn metrics_markdown(def: &CubeDef) -> String {
    let mut out = String::new();
    let t = &def.time;
    let _ = writeln!(out, "### Levels, grains and defaults\n");
    let _ = writeln!(
        out,
        "- **Org levels**, finest first: {}.",
        code_list(LEVELS.iter().copied())
    );
    let _ = writeln!(
        out,
        "- **Grains:** {}.",
        code_list(Grain::ALL.iter().map(|g| g.as_str()))
    );
    let _ = writeln!(
        out,
        "- **Pay periods** run 14 days from {} {} (and backwards before it).",
        t.pay_period_anchor.format("%A"),
        t.pay_period_anchor
    );
    let _ = writeln!(
        out,
        "- A pharmacy with no time zone is in `{}`; a peer-group assignment with no target \
         minutes has {} minutes.\n",
        t.default_timezone, t.default_target_minutes
    );

    let _ = writeln!(out, "### Metrics\n");
    let _ = writeln!(out, "| metric | kind | computed as | better | meaning |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for m in &def.metrics {
        let (kind, how) = match m.kind {
            MetricKind::Ratio => {
                let num = m.numerator.as_deref().unwrap_or_default();
                let den = m.denominator.as_deref().unwrap_or_default();
                let scale = if m.scale == 1.0 {
                    String::new()
                } else {
                    format!("{} × ", m.scale)
                };
                (
                    "ratio (pooled)",
                    format!("{scale}{} ÷ {}", operand(num), operand(den)),
                )
            }
            MetricKind::Median => {
                let filter = m
                    .filter
                    .as_deref()
                    .map(|f| format!(" where `{f}`"))
                    .unwrap_or_default();
                (
                    "median (interpolated)",
                    format!(
                        "median of `{}` over the `{}` facts{filter}",
                        m.value.as_deref().unwrap_or_default(),
                        m.source.as_deref().unwrap_or_default()
                    ),
                )
            }
        };
        let _ = writeln!(
            out,
            "| `{}` | {kind} | {} | {} | {} |",
            m.name,
            cell(&how),
            better(m.better),
            cell(&m.doc)
        );
    }
    let _ = writeln!(
        out,
        "\n### Components\n\nAdditive: each is the sum of `value` over the facts of its source \
         that pass its filter, and is a metric of its own name.\n"
    );
    let _ = writeln!(
        out,
        "| component | source | value | filter | better | meaning |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for c in &def.components {
        let _ = writeln!(
            out,
            "| `{}` | `{}` | `{}` | {} | {} | {} |",
            c.name,
            c.source,
            cell(&c.value),
            c.filter
                .as_deref()
                .map_or("every fact".to_string(), |f| format!("`{}`", cell(f))),
            better(c.better),
            cell(&c.doc)
        );
    }
    if !def.small_cells.is_empty() {
        let _ = writeln!(
            out,
            "\n### Small cells\n\nFor users whose scope does not see employee data (pharmacy \
             scopes), each rule judges the periods of its atom grain one by one, per pharmacy: \
             an atom is small when its facts of the rule's source come from at least one but \
             fewer contributors than the rule's minimum. A cell (org node, grain, period) shows \
             the source's figures only when it is made of whole atoms and none of them is \
             small. Otherwise it shows NULL for every component of the source (but the count \
             itself), every ratio naming one and every median over the source, and takes no \
             part in their peer averages, ranks and peer sizes. A published cell is then a sum \
             of published atoms, so no difference of published cells (a day minus its hours, a \
             month minus its days) gives a suppressed one away. Administrators and scopes above \
             the pharmacy see every cell.\n"
        );
        let _ = writeln!(
            out,
            "| source | contributors | minimum | atom | shown at | suppressed | why |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for r in &def.small_cells {
            let contributors = match (&r.distinct, &r.count) {
                (Some(d), _) => format!("distinct `{d}` in the atom"),
                (None, Some(c)) => format!("`{c}` in the atom"),
                (None, None) => String::new(),
            };
            let suppressed: Vec<&str> = def
                .metric_names()
                .into_iter()
                .filter(|m| {
                    def.small_cell_rules_of(m)
                        .iter()
                        .any(|k| k.source == r.source)
                })
                .collect();
            let shown = Grain::ALL
                .into_iter()
                .filter(|g| r.judges(*g))
                .map(|g| g.as_str());
            let _ = writeln!(
                out,
                "| `{}` | {contributors} | {} | `{}` | {} | {} | {} |",
                r.source,
                r.minimum,
                r.atom_name(),
                code_list(shown),
                code_list(suppressed.into_iter()),
                cell(&r.doc)
            );
        }
    }
    out
}

/// A ratio's numerator or denominator: a component name, or a parenthesized expression.
fn operand(expr: &str) -> String {
    let simple = expr.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if simple {
        format!("`{expr}`")
    } else {
        format!("(`{expr}`)")
    }
}

fn better(b: Better) -> &'static str {
    match b {
        Better::Higher => "higher",
        Better::Lower => "lower",
    }
}

fn code_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use rxcube_model::docs::{CONTRACT_PAGE, REGENERATE, sync_section};
    use rxcube_model::domain;

    #[test]
    fn docs_contract_md_matches_the_cube_definition() {
        // The workspace root, two levels above this crate.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2);
        let page = root.expect("workspace root").join(CONTRACT_PAGE);
        if let Err(e) = sync_section(
            &page,
            METRICS_SECTION,
            &metrics_markdown(&CubeDef::built_in()),
            REGENERATE,
        ) {
            panic!("{e}");
        }
    }

    #[test]
    fn every_metric_and_component_is_rendered() {
        let def = CubeDef::built_in();
        let md = metrics_markdown(&def);
        for name in def.metric_names() {
            assert!(md.contains(&format!("| `{name}` |")), "{name}");
        }
    }

    /// The page states the cube's defaults once; they are the contract's defaults.
    #[test]
    fn the_cube_defaults_are_the_contract_defaults() {
        let t = CubeDef::built_in().time;
        assert_eq!(t.default_timezone, domain::DEFAULT_TIMEZONE);
        assert_eq!(
            i64::from(t.default_target_minutes),
            i64::from(domain::DEFAULT_RX_TARGET_MINUTES)
        );
        for m in domain::KEY_METRICS
            .iter()
            .chain(domain::OTHER_TARGETABLE_METRICS)
        {
            assert!(CubeDef::built_in().lookup(m).is_some(), "{m}");
        }
    }
}
