//! The declarative cube definition (`cube.toml`): components, metrics and time settings.
//!
//! The built-in definition is `crates/rxcube-cube/cube.toml`, compiled in; a warehouse can
//! override it. [`CubeDef::parse`] checks everything a query would otherwise trip over later:
//! unique names, known sources, and ratio expressions that name only components.

use std::collections::HashSet;
use std::path::Path;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::time::Grain;

/// The definition shipped with rxcube.
pub const BUILT_IN: &str = include_str!("../cube.toml");

/// The org levels, finest first.
pub const LEVELS: [&str; 5] = [
    "pharmacy",
    "local_area",
    "service_area",
    "region",
    "division",
];

/// The fact sources a component can draw on.
pub const SOURCES: [&str; 4] = ["fills", "sales", "surveys", "payroll"];

/// A problem with a cube definition, naming where it is.
#[derive(Debug, thiserror::Error)]
#[error("cube definition {origin}: {reason}")]
pub struct DefinitionError {
    pub origin: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CubeDef {
    pub time: TimeDef,
    #[serde(rename = "component")]
    pub components: Vec<Component>,
    #[serde(rename = "metric")]
    pub metrics: Vec<Metric>,
    #[serde(rename = "rollup", default)]
    pub rollups: Vec<RollupDef>,
    /// Small-cell protection: which cells' figures users below the level that may see
    /// employee data do not get ([`SmallCells`]).
    #[serde(rename = "small_cells", default)]
    pub small_cells: Vec<SmallCells>,
    /// What `cube.alerts` flags ([`AlertsDef`]).
    #[serde(default)]
    pub alerts: AlertsDef,
}

/// `cube.alerts`: a pharmacy's metric in the current pay period is flagged when it is worse than
/// its peer group's threshold tier, or worse than its peer average by more than
/// `peer_margin_pct` percent of that average.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertsDef {
    #[serde(default = "default_peer_margin")]
    pub peer_margin_pct: f64,
}

impl Default for AlertsDef {
    fn default() -> Self {
        Self {
            peer_margin_pct: default_peer_margin(),
        }
    }
}

fn default_peer_margin() -> f64 {
    10.0
}

/// A small-cell rule, for the sessions that protect small cells (`rxcube.small_cells`, set for
/// users whose scope does not see employee data): every component of `source` (but the
/// `count` component itself), every ratio built on one and every median over the source is
/// NULL in a cell (org node, grain, period) unless the cell is a union of whole `atom` periods
/// each of which, per pharmacy, has no facts of the source or at least `minimum`
/// contributors. The contributors are the distinct values of the fact column `distinct`
/// (employees), or, with `count`, that component's sum (responses).
///
/// Atoms are what stops differencing: a published cell is a sum of published atoms, so no
/// published cell minus others yields a suppressed one (a day's pay minus its published hours
/// would be the pay of the suppressed hours; a month's minus its published days, a small
/// day's). Cells finer than the atom, or not made of atoms (weeks of month atoms), are
/// suppressed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmallCells {
    pub source: String,
    /// A column of the source's facts whose distinct values in a cell are counted.
    pub distinct: Option<String>,
    /// A component of the source whose sum in a cell is the count.
    pub count: Option<String>,
    /// Cells with fewer contributors are suppressed.
    pub minimum: u32,
    /// The grain whose periods are judged one by one (default `day`); a cell shows only if
    /// made of them, none of them small. `None` (`atom = "cell"`): each cell is judged on its
    /// own, which does not stop differencing.
    #[serde(default = "default_atom", deserialize_with = "atom_of")]
    pub atom: Option<Grain>,
    #[serde(default)]
    pub doc: String,
}

fn default_atom() -> Option<Grain> {
    Some(Grain::Day)
}

/// `atom = "cell"` or a grain's name.
fn atom_of<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Grain>, D::Error> {
    let name = String::deserialize(d)?;
    if name == "cell" {
        return Ok(None);
    }
    Grain::parse(&name).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "atom '{name}' is not a grain: give cell or one of {}",
            Grain::ALL.map(|g| g.as_str()).join(", ")
        ))
    })
}

/// The fact columns a small-cell rule may count distinct values of, per source: those of the
/// sources read one fact per row (`fills` and `payroll`; POS lines and survey responses are
/// pre-summed per 15-minute bucket, so they count with a component).
pub const DISTINCT_COLUMNS: [(&str, &[&str]); 2] = [
    ("fills", &["rx_id", "fill_no", "channel"]),
    ("payroll", &["employee_id", "pay_code"]),
];

impl SmallCells {
    /// The name of the cell's contributor count: the `count` component, or
    /// `<source>_distinct_<column>` (also the rollup column keeping the distinct values).
    pub fn counter(&self) -> String {
        match (&self.count, &self.distinct) {
            (Some(c), _) => c.clone(),
            (None, Some(d)) => distinct_column(&self.source, d),
            (None, None) => String::new(),
        }
    }

    /// The cell column counting the cell's small atoms (per pharmacy, between 1 and
    /// `minimum - 1` contributors).
    pub fn small_atoms(&self) -> String {
        format!("{}_small_atoms", self.counter())
    }

    /// The cell column holding the most contributors of any of its atoms.
    pub fn atom_max(&self) -> String {
        format!("{}_atom_max", self.counter())
    }

    /// Whether cells of `grain` are unions of whole atoms (every cell, judged cell by cell).
    pub fn judges(&self, grain: Grain) -> bool {
        self.atom.is_none_or(|a| a.rolls_into(grain))
    }

    /// The atom's name in `cube.toml`.
    pub fn atom_name(&self) -> &'static str {
        self.atom.map_or("cell", Grain::as_str)
    }

    /// The condition, over a cell's columns (`grain`, [`Self::small_atoms`],
    /// [`Self::atom_max`]), under which a cell of one of `grains` is suppressed.
    pub fn suppressed_sql(&self, grains: &[Grain]) -> String {
        let unjudged: Vec<String> = grains
            .iter()
            .filter(|g| !self.judges(**g))
            .map(|g| format!("'{}'", g.as_str()))
            .collect();
        let mut conditions = Vec::new();
        if !unjudged.is_empty() {
            conditions.push(format!("grain IN ({})", unjudged.join(", ")));
        }
        conditions.push(format!("COALESCE({}, 0) > 0", self.small_atoms()));
        conditions.push(format!(
            "COALESCE({}, 0) < {}",
            self.atom_max(),
            self.minimum
        ));
        format!("({})", conditions.join(" OR "))
    }
}

/// The name of the count (in a cell) and the set (in a rollup) of the distinct values of
/// `column` over the facts of `source`.
pub fn distinct_column(source: &str, column: &str) -> String {
    format!("{source}_distinct_{column}")
}

/// A materialized rollup: the mergeable partial states of `measures` per pharmacy, org version
/// and `grain` period (see [`crate::rollup`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RollupDef {
    pub name: String,
    pub grain: crate::time::Grain,
    /// Components and median metrics kept; every one of them when absent. A ratio is kept by
    /// keeping its components.
    pub measures: Option<Vec<String>>,
    #[serde(default)]
    pub doc: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeDef {
    /// ISO date (`YYYY-MM-DD`).
    #[serde(deserialize_with = "iso_date")]
    pub pay_period_anchor: NaiveDate,
    pub default_timezone: String,
    pub default_target_minutes: u32,
}

/// An additive measure: `SUM(value)` over the facts of `source` that pass `filter`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: String,
    pub source: String,
    pub value: String,
    pub filter: Option<String>,
    /// Which way ranks run when the component is ranked on its own (default higher).
    #[serde(default)]
    pub better: Better,
    pub doc: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    #[default]
    Higher,
    Lower,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Ratio,
    Median,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    /// Ratio: SQL over component names.
    pub numerator: Option<String>,
    pub denominator: Option<String>,
    #[serde(default = "one")]
    pub scale: f64,
    /// Median: the fact source, value and filter.
    pub source: Option<String>,
    pub value: Option<String>,
    pub filter: Option<String>,
    pub better: Better,
    pub doc: String,
}

fn iso_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    let text = String::deserialize(d)?;
    NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .map_err(|e| serde::de::Error::custom(format!("'{text}' is not a date (YYYY-MM-DD): {e}")))
}

fn one() -> f64 {
    1.0
}

/// What a metric name means in a query.
#[derive(Debug, Clone, Copy)]
pub enum MetricRef<'a> {
    Component(&'a Component),
    Defined(&'a Metric),
}

impl CubeDef {
    /// The built-in definition.
    pub fn built_in() -> Self {
        // The built-in definition is checked by a test; failing here is a build defect.
        Self::parse(BUILT_IN, "built-in cube.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads the definition in `path`.
    pub fn load(path: &Path) -> Result<Self, DefinitionError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| DefinitionError {
            origin: origin.clone(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &origin)
    }

    /// Parses and checks a definition; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, DefinitionError> {
        let fail = |reason: String| DefinitionError {
            origin: origin.to_string(),
            reason,
        };
        let def: CubeDef = toml::from_str(text).map_err(|e| fail(e.to_string()))?;
        let mut names = HashSet::new();
        for c in &def.components {
            check_name(&c.name).map_err(&fail)?;
            if !names.insert(c.name.as_str()) {
                return Err(fail(format!("'{}' is defined twice", c.name)));
            }
            if !SOURCES.contains(&c.source.as_str()) {
                return Err(fail(format!(
                    "component '{}': unknown source '{}'; the sources are {}",
                    c.name,
                    c.source,
                    SOURCES.join(", ")
                )));
            }
        }
        let components: HashSet<&str> = def.components.iter().map(|c| c.name.as_str()).collect();
        for m in &def.metrics {
            check_name(&m.name).map_err(&fail)?;
            if !names.insert(m.name.as_str()) {
                return Err(fail(format!("'{}' is defined twice", m.name)));
            }
            match m.kind {
                MetricKind::Ratio => {
                    for (what, expr) in
                        [("numerator", &m.numerator), ("denominator", &m.denominator)]
                    {
                        let Some(expr) = expr else {
                            return Err(fail(format!("ratio '{}' needs a {what}", m.name)));
                        };
                        for ident in identifiers(expr) {
                            if !components.contains(ident) {
                                return Err(fail(format!(
                                    "ratio '{}': {what} names '{ident}', which is not a component",
                                    m.name
                                )));
                            }
                        }
                    }
                }
                MetricKind::Median => {
                    let source = m.source.as_deref().unwrap_or_default();
                    if !SOURCES.contains(&source) || m.value.is_none() {
                        return Err(fail(format!(
                            "median '{}' needs a source (one of {}) and a value",
                            m.name,
                            SOURCES.join(", ")
                        )));
                    }
                }
            }
        }
        let mut rollup_names = HashSet::new();
        for r in &def.rollups {
            check_name(&r.name).map_err(&fail)?;
            if !rollup_names.insert(r.name.as_str()) {
                return Err(fail(format!("rollup '{}' is defined twice", r.name)));
            }
            for m in r.measures.iter().flatten() {
                let ok = match def.lookup(m) {
                    Some(MetricRef::Component(_)) => true,
                    Some(MetricRef::Defined(d)) => d.kind == MetricKind::Median,
                    None => false,
                };
                if !ok {
                    return Err(fail(format!(
                        "rollup '{}': measure '{m}' is not a component or a median metric",
                        r.name
                    )));
                }
            }
        }
        let mut protected = HashSet::new();
        for r in &def.small_cells {
            let what = format!("small_cells rule for '{}'", r.source);
            if !SOURCES.contains(&r.source.as_str()) {
                return Err(fail(format!(
                    "{what}: unknown source; the sources are {}",
                    SOURCES.join(", ")
                )));
            }
            if !protected.insert(r.source.as_str()) {
                return Err(fail(format!("{what}: the source has two rules")));
            }
            if r.minimum < 1 {
                return Err(fail(format!("{what}: minimum must be at least 1")));
            }
            match (&r.distinct, &r.count) {
                (Some(d), None) => {
                    let allowed = DISTINCT_COLUMNS
                        .iter()
                        .find(|(s, _)| *s == r.source)
                        .map(|(_, c)| *c)
                        .unwrap_or(&[]);
                    if !allowed.contains(&d.as_str()) {
                        return Err(fail(format!(
                            "{what}: distinct '{d}' is not a column it can count ({}); \
                             count a component instead",
                            if allowed.is_empty() {
                                "none for this source".to_string()
                            } else {
                                allowed.join(", ")
                            }
                        )));
                    }
                    let name = distinct_column(&r.source, d);
                    if names.contains(name.as_str()) {
                        return Err(fail(format!(
                            "{what}: '{name}' names its count and is also a metric"
                        )));
                    }
                }
                (None, Some(c)) => {
                    if !def
                        .components
                        .iter()
                        .any(|k| k.name == *c && k.source == r.source)
                    {
                        return Err(fail(format!(
                            "{what}: count '{c}' is not a component of the source"
                        )));
                    }
                }
                _ => {
                    return Err(fail(format!(
                        "{what}: give one of distinct (a fact column) or count (a component)"
                    )));
                }
            }
        }
        let margin = def.alerts.peer_margin_pct;
        if !(margin.is_finite() && margin >= 0.0) {
            return Err(fail(format!(
                "alerts: peer_margin_pct must be a percentage of at least 0, not {margin}"
            )));
        }
        check_expressions(&def).map_err(&fail)?;
        Ok(def)
    }

    /// The small-cell rule of `source`, if any.
    pub fn small_cell_rule(&self, source: &str) -> Option<&SmallCells> {
        self.small_cells.iter().find(|r| r.source == source)
    }

    /// The small-cell rules that suppress `metric` (a metric or component name) in a small
    /// cell: the rule of each source it draws on, except a rule's own count component.
    pub fn small_cell_rules_of(&self, metric: &str) -> Vec<&SmallCells> {
        // (source, the component drawn on; None for a median)
        let drawn: Vec<(&str, Option<&str>)> = match self.lookup(metric) {
            Some(MetricRef::Defined(m)) if m.kind == MetricKind::Median => {
                vec![(m.source.as_deref().unwrap_or_default(), None)]
            }
            Some(_) => self
                .components_of(metric)
                .into_iter()
                .map(|c| (c.source.as_str(), Some(c.name.as_str())))
                .collect(),
            None => Vec::new(),
        };
        let mut rules: Vec<&SmallCells> = Vec::new();
        for (source, component) in drawn {
            if let Some(r) = self.small_cell_rule(source)
                && (component.is_none() || r.count.as_deref() != component)
                && !rules.iter().any(|k| k.source == r.source)
            {
                rules.push(r);
            }
        }
        rules
    }

    /// The components and medians a rollup keeps, in definition order.
    pub fn rollup_measures(&self, r: &RollupDef) -> (Vec<&Component>, Vec<&Metric>) {
        let kept = |name: &str| {
            r.measures
                .as_ref()
                .is_none_or(|m| m.iter().any(|x| x == name))
        };
        (
            self.components.iter().filter(|c| kept(&c.name)).collect(),
            self.metrics
                .iter()
                .filter(|m| m.kind == MetricKind::Median && kept(&m.name))
                .collect(),
        )
    }

    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// The metrics a target may be set on: every `[[metric]]` (ratios and medians), in
    /// definition order. The import checks `targets.metric` against it.
    pub fn target_metrics(&self) -> Vec<String> {
        self.metrics.iter().map(|m| m.name.clone()).collect()
    }

    /// Every metric name, components included, in definition order (metrics first).
    pub fn metric_names(&self) -> Vec<&str> {
        self.metrics
            .iter()
            .map(|m| m.name.as_str())
            .chain(self.components.iter().map(|c| c.name.as_str()))
            .collect()
    }

    pub fn lookup(&self, name: &str) -> Option<MetricRef<'_>> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(MetricRef::Defined)
            .or_else(|| self.component(name).map(MetricRef::Component))
    }

    /// Which way a metric or component ranks (unknown names rank higher-first).
    pub fn better(&self, name: &str) -> Better {
        match self.lookup(name) {
            Some(MetricRef::Defined(m)) => m.better,
            Some(MetricRef::Component(c)) => c.better,
            None => Better::Higher,
        }
    }

    /// SQL for the ranking direction of the metric named by `column`: 1.0 where lower is
    /// better, -1.0 where higher is; `value * direction` sorts best first.
    pub fn direction_sql(&self, column: &str) -> String {
        let lower: Vec<String> = self
            .metric_names()
            .into_iter()
            .filter(|m| self.better(m) == Better::Lower)
            .map(|m| format!("'{m}'"))
            .collect();
        if lower.is_empty() {
            "-1.0".to_string()
        } else {
            format!(
                "CASE WHEN {column} IN ({}) THEN 1.0 ELSE -1.0 END",
                lower.join(", ")
            )
        }
    }

    /// The components a metric is computed from.
    pub fn components_of(&self, name: &str) -> Vec<&Component> {
        match self.lookup(name) {
            Some(MetricRef::Component(c)) => vec![c],
            Some(MetricRef::Defined(m)) => [&m.numerator, &m.denominator]
                .into_iter()
                .flatten()
                .flat_map(|e| identifiers(e))
                .filter_map(|i| self.component(i))
                .collect(),
            None => Vec::new(),
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid name (lower-case letters, digits and _, starting with a letter)"
        ))
    }
}

/// Plans every SQL expression of `def` against what it ranges over, so a typo, an unknown
/// column or a filter that is not a condition fails when the definition loads, naming the entry
/// and the field: a component's or a median's `value` and `filter` over its source's columns
/// ([`crate::sql::source_schema`]), a ratio's `numerator` and `denominator` over the components.
fn check_expressions(def: &CubeDef) -> Result<(), String> {
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::DFSchema;
    use datafusion::logical_expr::ExprSchemable;
    let ctx = datafusion::prelude::SessionContext::new();
    crate::udf::register(&ctx);
    let check = |entry: String, field: &str, sql: &str, schema: &DFSchema, condition: bool| {
        let at = || format!("{entry}, {field} = \"{sql}\"");
        let expr = ctx
            .parse_sql_expr(sql, schema)
            .map_err(|e| format!("{}: {}", at(), e.strip_backtrace()))?;
        let ty = expr
            .get_type(schema)
            .map_err(|e| format!("{}: {}", at(), e.strip_backtrace()))?;
        let fits = if condition {
            ty == DataType::Boolean || ty == DataType::Null
        } else {
            ty.is_numeric() || ty == DataType::Boolean || ty == DataType::Null
        };
        if fits {
            Ok(())
        } else if condition {
            Err(format!(
                "{}: a filter is a condition (true or false), not {ty}",
                at()
            ))
        } else {
            Err(format!("{}: a value is a number, not {ty}", at()))
        }
    };
    let source = |name: &str| -> Result<DFSchema, String> {
        let schema = crate::sql::source_schema(name).ok_or_else(|| {
            format!(
                "unknown source '{name}'; the sources are {}",
                SOURCES.join(", ")
            )
        })?;
        DFSchema::try_from(schema).map_err(|e| e.to_string())
    };
    for c in &def.components {
        let schema = source(&c.source)?;
        let entry = format!("component '{}' (source {})", c.name, c.source);
        check(entry.clone(), "value", &c.value, &schema, false)?;
        if let Some(f) = &c.filter {
            check(entry, "filter", f, &schema, true)?;
        }
    }
    let components = DFSchema::try_from(Schema::new(
        def.components
            .iter()
            .map(|c| Field::new(&c.name, DataType::Float64, true))
            .collect::<Vec<_>>(),
    ))
    .map_err(|e| e.to_string())?;
    for m in &def.metrics {
        match m.kind {
            MetricKind::Ratio => {
                for (field, expr) in [("numerator", &m.numerator), ("denominator", &m.denominator)]
                {
                    if let Some(expr) = expr {
                        check(
                            format!("ratio '{}'", m.name),
                            field,
                            expr,
                            &components,
                            false,
                        )?;
                    }
                }
            }
            MetricKind::Median => {
                let name = m.source.as_deref().unwrap_or_default();
                let schema = source(name)?;
                let entry = format!("median '{}' (source {name})", m.name);
                if let Some(v) = &m.value {
                    check(entry.clone(), "value", v, &schema, false)?;
                }
                if let Some(f) = &m.filter {
                    check(entry, "filter", f, &schema, true)?;
                }
            }
        }
    }
    Ok(())
}

/// The identifiers of a SQL expression over component names (numbers and operators skipped).
pub fn identifiers(expr: &str) -> impl Iterator<Item = &str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A typo in an expression fails at load, naming the file, the entry and the field.
    #[test]
    fn expressions_are_planned_when_the_definition_loads() {
        let with = |extra: &str| {
            CubeDef::parse(&format!("{BUILT_IN}\n{extra}"), "w/_rxcube/cube.toml")
                .err()
                .map(|e| e.to_string())
        };
        let component = |value: &str, filter: &str| {
            format!(
                "[[component]]\nname = \"slow_fills\"\nsource = \"fills\"\nvalue = \"{value}\"\n\
                 filter = \"{filter}\"\ndoc = \"Fills over an hour\"\n"
            )
        };
        assert_eq!(with(&component("1", "processing_minutes > 60")), None);
        let unknown = with(&component("1", "procesing_minutes > 60")).expect("an error");
        assert!(
            unknown.starts_with(
                "cube definition w/_rxcube/cube.toml: component 'slow_fills' (source fills), \
                 filter = \"procesing_minutes > 60\": "
            ) && unknown.contains("procesing_minutes")
                && unknown.contains("processing_minutes"),
            "{unknown}"
        );
        let syntax = with(&component("1", "channel = 'local' AND")).expect("an error");
        assert!(
            syntax.contains("component 'slow_fills' (source fills), filter = "),
            "{syntax}"
        );
        let not_a_condition = with(&component("1", "fill_no")).expect("an error");
        assert!(
            not_a_condition.ends_with(
                "filter = \"fill_no\": a filter is a condition (true or false), not Int32"
            ),
            "{not_a_condition}"
        );
        let not_a_number = with(&component("channel", "on_time")).expect("an error");
        assert!(
            not_a_number.ends_with("value = \"channel\": a value is a number, not Utf8"),
            "{not_a_number}"
        );
        let ratio = with(
            "[[metric]]\nname = \"odd_pct\"\nkind = \"ratio\"\nnumerator = \"refills +\"\n\
             denominator = \"refills\"\nbetter = \"higher\"\ndoc = \"x\"\n",
        )
        .expect("an error");
        assert!(
            ratio.contains("ratio 'odd_pct', numerator = \"refills +\": "),
            "{ratio}"
        );
        let median = with(
            "[[metric]]\nname = \"median_wait\"\nkind = \"median\"\nsource = \"sales\"\n\
             value = \"processing_minutes\"\nbetter = \"lower\"\ndoc = \"x\"\n",
        )
        .expect("an error");
        assert!(
            median
                .contains("median 'median_wait' (source sales), value = \"processing_minutes\": "),
            "{median}"
        );
    }

    /// An import with no cube definition at hand checks targets against the contract's list:
    /// it must be the built-in cube's.
    #[test]
    fn the_built_in_target_metrics_are_the_contracts() {
        let mut contract: Vec<&str> = rxcube_model::domain::KEY_METRICS
            .iter()
            .chain(rxcube_model::domain::OTHER_TARGETABLE_METRICS)
            .copied()
            .collect();
        contract.sort();
        let def = CubeDef::built_in();
        let mut built_in: Vec<String> = def.target_metrics();
        built_in.sort();
        assert_eq!(built_in, contract);
    }

    #[test]
    fn the_built_in_definition_holds_the_five_key_metrics() {
        let def = CubeDef::built_in();
        for m in [
            "labor_cost_per_rx",
            "csat_pct",
            "on_time_pct",
            "otc_sales_per_rx",
            "crp_usage_pct",
            "median_processing_minutes",
            "rx_sold",
        ] {
            assert!(def.lookup(m).is_some(), "{m}");
        }
        let parts: Vec<&str> = def
            .components_of("csat_pct")
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(parts, ["very_satisfied", "satisfied", "survey_responses"]);
    }

    #[test]
    fn small_cell_rules_cover_pay_and_survey_shares_but_not_the_response_count() {
        let def = CubeDef::built_in();
        let sources = |m: &str| -> Vec<String> {
            def.small_cell_rules_of(m)
                .iter()
                .map(|r| format!("{} < {}", r.counter(), r.minimum))
                .collect()
        };
        let pay = ["payroll_distinct_employee_id < 3"];
        let surveys = ["survey_responses < 5"];
        assert_eq!(sources("labor_cost"), pay);
        assert_eq!(sources("labor_hours"), pay);
        assert_eq!(sources("labor_cost_per_rx"), pay);
        assert_eq!(sources("csat_pct"), surveys);
        assert_eq!(sources("pct_very_dissatisfied"), surveys);
        assert_eq!(sources("very_satisfied"), surveys);
        assert!(sources("survey_responses").is_empty());
        assert!(sources("rx_sold").is_empty());
        assert!(sources("on_time_pct").is_empty());
        assert!(sources("median_processing_minutes").is_empty());
    }

    /// Pay is judged per day, survey shares per month: a cell shows only at the grains made of
    /// whole atoms.
    #[test]
    fn small_cell_rules_show_only_grains_made_of_their_atoms() {
        let def = CubeDef::built_in();
        let shown = |source: &str| -> Vec<&str> {
            let rule = def.small_cell_rule(source).expect("a rule");
            Grain::ALL
                .into_iter()
                .filter(|g| rule.judges(*g))
                .map(|g| g.as_str())
                .collect()
        };
        assert_eq!(
            shown("payroll"),
            ["day", "week", "pay_period", "month", "quarter", "year"]
        );
        // Survey shares are judged cell by cell.
        assert_eq!(shown("surveys").len(), Grain::ALL.len());
        let pay = def.small_cell_rule("payroll").expect("a rule");
        assert_eq!(
            pay.suppressed_sql(&[Grain::Hour, Grain::Day, Grain::Week]),
            "(grain IN ('hour') OR COALESCE(payroll_distinct_employee_id_small_atoms, 0) > 0 \
             OR COALESCE(payroll_distinct_employee_id_atom_max, 0) < 3)"
        );
        // The atom defaults to the day.
        let text = BUILT_IN.replace("atom = \"day\"\n", "");
        let parsed = CubeDef::parse(&text, "cube.toml").expect("parses");
        let rule = parsed.small_cell_rule("payroll").expect("a rule");
        assert_eq!(rule.atom, Some(Grain::Day));
        // Judged cell by cell: every grain, one count per cell.
        let rule = def.small_cell_rule("surveys").expect("a rule");
        assert_eq!(rule.atom, None);
        assert_eq!(
            rule.suppressed_sql(&[Grain::Hour]),
            "(COALESCE(survey_responses_small_atoms, 0) > 0 \
             OR COALESCE(survey_responses_atom_max, 0) < 5)"
        );
        // Month atoms: shown by month, quarter and year.
        let text = BUILT_IN.replace("atom = \"cell\"", "atom = \"month\"");
        let parsed = CubeDef::parse(&text, "cube.toml").expect("parses");
        let rule = parsed.small_cell_rule("surveys").expect("a rule");
        let shown: Vec<&str> = Grain::ALL
            .into_iter()
            .filter(|g| rule.judges(*g))
            .map(|g| g.as_str())
            .collect();
        assert_eq!(shown, ["month", "quarter", "year"]);
        let text = BUILT_IN.replace("atom = \"cell\"", "atom = \"fortnight\"");
        let error = CubeDef::parse(&text, "cube.toml").expect_err("no such grain");
        assert!(
            error.to_string().contains(
                "atom 'fortnight' is not a grain: give cell or one of hour, day, week, \
                 pay_period, month, quarter, year"
            ),
            "{error}"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                &BUILT_IN.replace("\"2024-01-07\"", "\"2024-13-07\""),
                "'2024-13-07' is not a date (YYYY-MM-DD)",
            ),
            (
                &BUILT_IN.replace("denominator = \"rx_sold\"", "denominator = \"rx_sald\""),
                "ratio 'labor_cost_per_rx': denominator names 'rx_sald', which is not a component",
            ),
            (
                &BUILT_IN.replace("source = \"payroll\"", "source = \"timecards\""),
                "unknown source 'timecards'",
            ),
            (
                &BUILT_IN.replace("name = \"refills\"", "name = \"rx_sold\""),
                "'rx_sold' is defined twice",
            ),
            (
                &format!(
                    "{BUILT_IN}\n[[rollup]]\nname = \"x\"\ngrain = \"day\"\nmeasures = [\"csat_pct\"]\n"
                ),
                "rollup 'x': measure 'csat_pct' is not a component or a median metric",
            ),
            (
                &format!("{BUILT_IN}\n[[rollup]]\nname = \"x\"\ngrain = \"fortnight\"\n"),
                "unknown variant `fortnight`",
            ),
            (
                &BUILT_IN.replace("distinct = \"employee_id\"", "distinct = \"cost\""),
                "small_cells rule for 'payroll': distinct 'cost' is not a column it can count",
            ),
            (
                &BUILT_IN.replace("count = \"survey_responses\"", "count = \"rx_sold\""),
                "small_cells rule for 'surveys': count 'rx_sold' is not a component of the source",
            ),
            (
                &BUILT_IN.replace(
                    "count = \"survey_responses\"",
                    "count = \"survey_responses\"\ndistinct = \"rating\"",
                ),
                "small_cells rule for 'surveys': give one of distinct",
            ),
            (
                &BUILT_IN.replace("minimum = 3", "minimum = 0"),
                "small_cells rule for 'payroll': minimum must be at least 1",
            ),
            (
                &BUILT_IN.replace("source = \"surveys\"\ncount", "source = \"payroll\"\ncount"),
                "small_cells rule for 'payroll': the source has two rules",
            ),
        ];
        for (text, want) in cases {
            let err = CubeDef::parse(text, "test.toml")
                .expect_err(want)
                .to_string();
            assert!(err.starts_with("cube definition test.toml: "), "{err}");
            assert!(err.contains(want), "{err}\nwanted: {want}");
        }
    }
}
