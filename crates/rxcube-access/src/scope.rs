//! Org scopes: `level:node`, and what a scope reaches in the org.
//!
//! A scope means what the cube's consolidation means, "as was": a user sees the facts that
//! roll up into their node. A pharmacy is within a scope for the local dates of its
//! `pharmacies` rows that place it under the scope's node, so after a pharmacy moves, its old
//! manager keeps its facts from before the move and the new manager gets those from after.
//! Raw facts are in scope at the instants of those dates (in the pharmacy's time zone), cube
//! rows of a node below the scope's for the periods that lie wholly in them, effective-dated
//! rows where they overlap them; employees are in scope while their home pharmacy is (its
//! latest row places it under the scope's node).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, IntervalMonthDayNano};
use chrono::{NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use datafusion::common::{Column, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, Operator, binary_expr, cast, lit, when};
use datafusion::prelude::{SessionContext, col};
use serde::{Deserialize, Serialize};

use crate::{AccessError, Result};

/// An org level, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Pharmacy,
    LocalArea,
    ServiceArea,
    Region,
    Division,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Pharmacy,
        Level::LocalArea,
        Level::ServiceArea,
        Level::Region,
        Level::Division,
    ];

    /// The name used in `cube.metrics.level` and in scopes.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Pharmacy => "pharmacy",
            Level::LocalArea => "local_area",
            Level::ServiceArea => "service_area",
            Level::Region => "region",
            Level::Division => "division",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = AccessError;
    fn from_str(s: &str) -> Result<Self> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                AccessError::Invalid(format!(
                    "unknown org level '{s}' (expected pharmacy, local_area, service_area, region or division)"
                ))
            })
    }
}

/// Where in the org a user stands: `pharmacy:4`, `local_area:Chicago`, `division:ALL`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scope {
    pub level: Level,
    pub node: String,
}

impl Scope {
    pub fn division() -> Self {
        Self {
            level: Level::Division,
            node: "ALL".into(),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level, self.node)
    }
}

impl FromStr for Scope {
    type Err = AccessError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: String| AccessError::Invalid(format!("bad scope '{s}': {why}"));
        let (level, node) = s
            .split_once(':')
            .ok_or_else(|| bad("expected level:node, e.g. region:West or pharmacy:4".into()))?;
        let level: Level = level.parse().map_err(|e: AccessError| bad(e.to_string()))?;
        let node = node.trim();
        if node.is_empty() {
            return Err(bad("the node is empty".into()));
        }
        match level {
            Level::Division if node != "ALL" => Err(bad("the division's node is ALL".into())),
            _ => Ok(Self {
                level,
                node: node.to_string(),
            }),
        }
    }
}

impl TryFrom<String> for Scope {
    type Error = AccessError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        s.to_string()
    }
}

/// One placement of a pharmacy in the org: a `pharmacies` row, for its local dates
/// `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Placement {
    pharmacy_id: String,
    /// local area, service area, region
    areas: [String; 3],
    from: NaiveDate,
    /// `None`: open.
    to: Option<NaiveDate>,
}

impl Placement {
    /// The node of this placement at `level` (the pharmacy id at the pharmacy level).
    fn node(&self, level: Level) -> &str {
        match level {
            Level::Pharmacy => &self.pharmacy_id,
            Level::LocalArea => &self.areas[0],
            Level::ServiceArea => &self.areas[1],
            Level::Region => &self.areas[2],
            Level::Division => "ALL",
        }
    }

    fn span(&self) -> Span {
        Span {
            from: Some(self.from),
            to: self.to,
        }
    }
}

/// Local dates `[from, to)`; `None` is unbounded on that side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl Span {
    const ALWAYS: Span = Span {
        from: None,
        to: None,
    };
}

/// `spans` sorted and merged: overlapping or touching spans become one.
fn merged(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| s.from);
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(last)
                if last
                    .to
                    .is_none_or(|to| s.from.is_none_or(|from| from <= to)) =>
            {
                last.to = match (last.to, s.to) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            _ => out.push(s),
        }
    }
    out
}

/// Every placement of every pharmacy, read once per snapshot of the warehouse.
#[derive(Debug, Clone, Default)]
pub struct OrgIndex {
    placements: Vec<Placement>,
    /// Each pharmacy's time zone: that of its latest row (the zone its facts are bucketed in).
    zones: BTreeMap<String, Tz>,
}

impl OrgIndex {
    /// Reads the placements from the `pharmacies` table of `ctx`; a pharmacy without a time
    /// zone is in `default_timezone`.
    pub async fn load(ctx: &SessionContext, default_timezone: &str) -> Result<Self> {
        let batches = ctx
            .sql(
                "SELECT CAST(pharmacy_id AS VARCHAR), CAST(local_area AS VARCHAR), \
                 CAST(service_area AS VARCHAR), CAST(region AS VARCHAR), \
                 CAST(valid_from AS VARCHAR), CAST(valid_to AS VARCHAR), \
                 CAST(timezone AS VARCHAR) FROM pharmacies",
            )
            .await?
            .collect()
            .await?;
        let default_zone: Tz = default_timezone.parse().map_err(|e| {
            AccessError::Invalid(format!("default time zone '{default_timezone}': {e}"))
        })?;
        let mut placements = Vec::new();
        let mut latest: BTreeMap<String, (NaiveDate, Tz)> = BTreeMap::new();
        for b in batches {
            let cols = (0..7)
                .map(|i| arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| AccessError::from(DataFusionError::from(e)))?;
            let text = |i: usize, row: usize| {
                (!cols[i].is_null(row)).then(|| cols[i].as_string::<i32>().value(row).to_string())
            };
            let date = |i: usize, row: usize| -> Result<Option<NaiveDate>> {
                text(i, row)
                    .map(|d| {
                        d.parse::<NaiveDate>().map_err(|e| {
                            AccessError::Invalid(format!("pharmacies: bad date '{d}': {e}"))
                        })
                    })
                    .transpose()
            };
            for row in 0..b.num_rows() {
                let (Some(id), Some(from)) = (text(0, row), date(4, row)?) else {
                    continue;
                };
                let zone = match text(6, row) {
                    Some(z) => z.parse::<Tz>().unwrap_or(default_zone),
                    None => default_zone,
                };
                if latest.get(&id).is_none_or(|(d, _)| *d < from) {
                    latest.insert(id.clone(), (from, zone));
                }
                placements.push(Placement {
                    pharmacy_id: id,
                    areas: [
                        text(1, row).unwrap_or_default(),
                        text(2, row).unwrap_or_default(),
                        text(3, row).unwrap_or_default(),
                    ],
                    from,
                    to: date(5, row)?,
                });
            }
        }
        placements.sort();
        placements.dedup();
        Ok(Self {
            placements,
            zones: latest.into_iter().map(|(id, (_, z))| (id, z)).collect(),
        })
    }

    /// Checks that `scope` names a node of the org.
    pub fn check(&self, scope: &Scope) -> Result<()> {
        if scope.level == Level::Division
            || self
                .placements
                .iter()
                .any(|p| p.node(scope.level) == scope.node)
        {
            return Ok(());
        }
        Err(AccessError::Invalid(format!(
            "bad scope '{scope}': no {} '{}' in the pharmacies table",
            scope.level.as_str().replace('_', " "),
            scope.node
        )))
    }

    /// What `scope` reaches, "as was": each node below the scope's for the local dates it was
    /// placed under the scope's node.
    pub fn reach(&self, scope: &Scope) -> Reach {
        let mut spans: [BTreeMap<String, Vec<Span>>; 5] = Default::default();
        let mut lifetime: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
        let mut latest: BTreeMap<&str, &Placement> = BTreeMap::new();
        let mut placed = false;
        for p in &self.placements {
            lifetime.entry(&p.pharmacy_id).or_default().push(p.span());
            if latest
                .get(p.pharmacy_id.as_str())
                .is_none_or(|l| l.from < p.from)
            {
                latest.insert(&p.pharmacy_id, p);
            }
            if p.node(scope.level) != scope.node {
                continue;
            }
            placed = true;
            for level in Level::ALL.into_iter().filter(|l| *l < scope.level) {
                spans[level.index()]
                    .entry(p.node(level).to_string())
                    .or_default()
                    .push(p.span());
            }
        }
        if scope.level == Level::Division || placed {
            spans[scope.level.index()].insert(scope.node.clone(), vec![Span::ALWAYS]);
        }
        let lifetime: BTreeMap<&str, Vec<Span>> = lifetime
            .into_iter()
            .map(|(id, s)| (id, merged(s)))
            .collect();
        for (level, nodes) in spans.iter_mut().enumerate() {
            for (node, s) in nodes.iter_mut() {
                *s = merged(std::mem::take(s));
                // A pharmacy placed under the scope for its whole life is in it at any time
                // (also for facts dated outside every row, which roll up nowhere else).
                if level == Level::Pharmacy.index()
                    && lifetime.get(node.as_str()).is_some_and(|l| l == s)
                {
                    *s = vec![Span::ALWAYS];
                }
            }
        }
        let current = latest
            .into_iter()
            .filter(|(_, p)| scope.level == Level::Division || p.node(scope.level) == scope.node)
            .map(|(id, _)| id.to_string())
            .collect();
        Reach {
            scope: scope.clone(),
            pharmacies: spans[Level::Pharmacy.index()].keys().cloned().collect(),
            current,
            nodes: spans.each_ref().map(|m| m.keys().cloned().collect()),
            spans,
            zones: self.zones.clone(),
        }
    }
}

/// The pharmacies and org nodes a scope reaches, and for which local dates.
#[derive(Debug, Clone, PartialEq)]
pub struct Reach {
    pub scope: Scope,
    /// Every pharmacy placed under the scope at some time.
    pub pharmacies: BTreeSet<String>,
    /// The pharmacies whose latest placement is under the scope: their employees are in it.
    pub current: BTreeSet<String>,
    nodes: [BTreeSet<String>; 5],
    /// Per level, each node within the scope and the local dates it is.
    spans: [BTreeMap<String, Vec<Span>>; 5],
    zones: BTreeMap<String, Tz>,
}

/// How a relation's rows are dated, for [`Reach::period_filter`].
#[derive(Debug, Clone, Copy)]
pub enum Grain<'a> {
    /// Every row is a period of this grain (`hour`, `day`, `week`, `pay_period`, `month`,
    /// `quarter`, `year`).
    Fixed(&'a str),
    /// The grain is in this column.
    Column(&'a str),
}

/// The length of a period of `grain`; `None` for an unknown grain.
fn period_length(grain: &str) -> Option<IntervalMonthDayNano> {
    let hour = 3_600_000_000_000;
    Some(match grain {
        "hour" => IntervalMonthDayNano::new(0, 0, hour),
        "day" => IntervalMonthDayNano::new(0, 1, 0),
        "week" => IntervalMonthDayNano::new(0, 7, 0),
        "pay_period" => IntervalMonthDayNano::new(0, 14, 0),
        "month" => IntervalMonthDayNano::new(1, 0, 0),
        "quarter" => IntervalMonthDayNano::new(3, 0, 0),
        "year" => IntervalMonthDayNano::new(12, 0, 0),
        _ => return None,
    })
}

const GRAINS: [&str; 7] = [
    "hour",
    "day",
    "week",
    "pay_period",
    "month",
    "quarter",
    "year",
];

fn column(name: &str) -> Expr {
    col(Column::new_unqualified(name))
}

fn in_list(name: &str, values: Vec<String>) -> Option<Expr> {
    (!values.is_empty()).then(|| column(name).in_list(values.into_iter().map(lit).collect(), false))
}

/// `parts` OR-ed as a balanced tree (deep chains strain the planner); FALSE when empty.
fn any(mut parts: Vec<Expr>) -> Expr {
    if parts.is_empty() {
        return lit(false);
    }
    while parts.len() > 1 {
        let mut next = Vec::with_capacity(parts.len().div_ceil(2));
        let mut it = parts.into_iter();
        while let Some(a) = it.next() {
            next.push(match it.next() {
                Some(b) => a.or(b),
                None => a,
            });
        }
        parts = next;
    }
    parts.pop().unwrap_or_else(|| lit(false))
}

/// Local midnight of `date` in `zone` as microseconds since the epoch (the earlier instant
/// where midnight repeats, the first instant after it where it is skipped).
fn local_midnight_us(date: NaiveDate, zone: Tz) -> i64 {
    let midnight = date.and_time(NaiveTime::MIN);
    let instant = zone
        .from_local_datetime(&midnight)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(midnight + TimeDelta::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| midnight.and_utc());
    instant.timestamp_micros()
}

fn local_midnight(date: NaiveDate, data_type: &DataType) -> Expr {
    let us = date.and_time(NaiveTime::MIN).and_utc().timestamp_micros();
    cast(
        lit(ScalarValue::TimestampMicrosecond(Some(us), None)),
        data_type.clone(),
    )
}

impl Reach {
    /// The nodes of `level` within the scope at some time (none above the scope's own level).
    pub fn nodes(&self, level: Level) -> &BTreeSet<String> {
        &self.nodes[level.index()]
    }

    /// Everything: the division's scope.
    pub fn is_everything(&self) -> bool {
        self.scope.level == Level::Division
    }

    /// Whether an employee's individual data (SSN, rate, pay) shows: only to users above the
    /// employee's pharmacy, i.e. every scope but a pharmacy's.
    pub fn sees_employee_data(&self) -> bool {
        self.scope.level > Level::Pharmacy
    }

    /// Rows of the nodes of `level` within the scope (key column `key`): a node always within
    /// it by the key alone, another while `during(span)` holds for one of its spans.
    fn within(&self, level: Level, key: &str, during: impl Fn(&str, &Span) -> Expr) -> Expr {
        let mut always = Vec::new();
        let mut parts = Vec::new();
        for (node, spans) in &self.spans[level.index()] {
            if spans == &[Span::ALWAYS] {
                always.push(node.clone());
                continue;
            }
            let when = any(spans.iter().map(|s| during(node, s)).collect());
            parts.push(column(key).eq(lit(node.clone())).and(when));
        }
        parts.extend(in_list(key, always));
        any(parts)
    }

    /// Facts (`pharmacy` column, instant column `time` of type `time_type`) that roll up into
    /// the scope: those of a pharmacy at an instant of a local date it was placed under it.
    pub fn fact_filter(&self, pharmacy: &str, time: &str, time_type: &DataType) -> Expr {
        self.within(Level::Pharmacy, pharmacy, |id, s| {
            let zone = self
                .zones
                .get(id)
                .copied()
                .unwrap_or(Tz::America__Los_Angeles);
            let instant = |d: NaiveDate| {
                cast(
                    lit(ScalarValue::TimestampMicrosecond(
                        Some(local_midnight_us(d, zone)),
                        Some("UTC".into()),
                    )),
                    time_type.clone(),
                )
            };
            all(
                s.from.map(|d| column(time).gt_eq(instant(d))),
                s.to.map(|d| column(time).lt(instant(d))),
            )
        })
    }

    /// Effective-dated rows (`pharmacy` column, local dates `[from, to)`, `to` NULL = open)
    /// that overlap a time their pharmacy was under the scope.
    pub fn dated_filter(&self, pharmacy: &str, from: &str, to: &str) -> Expr {
        let date = |d: NaiveDate| lit(ScalarValue::Date32(Some(days(d))));
        self.within(Level::Pharmacy, pharmacy, |_, s| {
            all(
                s.to.map(|d| column(from).lt(date(d))),
                s.from
                    .map(|d| column(to).is_null().or(column(to).gt(date(d)))),
            )
        })
    }

    /// Rows of `level` (a `node` column, local `period_start` of type `start_type`, dated by
    /// `grain`) whose whole period lies in a time the node was within the scope.
    pub fn period_filter(&self, level: Level, grain: Grain<'_>, start_type: &DataType) -> Expr {
        let length = match grain {
            Grain::Fixed(g) => match period_length(g) {
                Some(l) => lit(ScalarValue::IntervalMonthDayNano(Some(l))),
                None => return lit(false),
            },
            Grain::Column(c) => {
                let interval = |g: &str| lit(ScalarValue::IntervalMonthDayNano(period_length(g)));
                let mut case = when(column(c).eq(lit(GRAINS[0])), interval(GRAINS[0]));
                for g in &GRAINS[1..] {
                    case = case.when(column(c).eq(lit(*g)), interval(g));
                }
                // An unknown grain has no length: its rows compare NULL and are left out.
                match case.otherwise(lit(ScalarValue::IntervalMonthDayNano(None))) {
                    Ok(e) => e,
                    Err(_) => return lit(false),
                }
            }
        };
        let start = || column("period_start");
        let end = || binary_expr(column("period_start"), Operator::Plus, length.clone());
        self.within(level, "node", |_, s| {
            all(
                s.from.map(|d| start().gt_eq(local_midnight(d, start_type))),
                s.to.map(|d| end().lt_eq(local_midnight(d, start_type))),
            )
        })
    }
}

/// Both conditions, either, or TRUE when there is none.
fn all(a: Option<Expr>, b: Option<Expr>) -> Expr {
    match (a, b) {
        (Some(a), Some(b)) => a.and(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => lit(true),
    }
}

/// Days since the epoch of `d` (Arrow's Date32).
fn days(d: NaiveDate) -> i32 {
    (d - NaiveDate::default()).num_days() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    fn index() -> OrgIndex {
        let p = |id: &str, la: &str, sa: &str, r: &str, from: &str, to: Option<&str>| Placement {
            pharmacy_id: id.into(),
            areas: [la.into(), sa.into(), r.into()],
            from: date(from),
            to: to.map(date),
        };
        OrgIndex {
            placements: vec![
                p(
                    "1",
                    "Los Angeles",
                    "Pacific Coast",
                    "West",
                    "2024-01-01",
                    None,
                ),
                p(
                    "2",
                    "Phoenix",
                    "Desert",
                    "West",
                    "2024-01-01",
                    Some("2024-03-01"),
                ),
                p("2", "Phoenix", "Rockies", "Central", "2024-03-01", None),
                p("4", "Chicago", "Great Lakes", "Central", "2024-01-01", None),
                p(
                    "8",
                    "Milwaukee",
                    "Great Lakes",
                    "Central",
                    "2024-01-01",
                    Some("2024-02-15"),
                ),
                p("8", "Chicago", "Great Lakes", "Central", "2024-02-15", None),
                p(
                    "RX08",
                    "Milwaukee",
                    "Great Lakes",
                    "Central",
                    "2024-01-01",
                    None,
                ),
            ],
            zones: BTreeMap::new(),
        }
    }

    #[test]
    fn spans_merge_when_they_overlap_or_touch() {
        let span = |from: &str, to: Option<&str>| Span {
            from: Some(date(from)),
            to: to.map(date),
        };
        assert_eq!(
            merged(vec![
                span("2024-03-01", Some("2024-04-01")),
                span("2024-01-01", Some("2024-02-01")),
                span("2024-02-01", Some("2024-02-10")),
            ]),
            vec![
                span("2024-01-01", Some("2024-02-10")),
                span("2024-03-01", Some("2024-04-01"))
            ]
        );
        assert_eq!(
            merged(vec![
                span("2024-01-01", None),
                span("2024-02-01", Some("2024-03-01"))
            ]),
            vec![span("2024-01-01", None)]
        );
    }

    #[test]
    fn scopes_parse_and_print_and_bad_ones_say_why() {
        let s: Scope = "local_area:Los Angeles".parse().expect("scope");
        assert_eq!(s.level, Level::LocalArea);
        assert_eq!(s.to_string(), "local_area:Los Angeles");
        for (bad, why) in [
            ("planet:Mars", "unknown org level 'planet'"),
            ("region", "expected level:node"),
            ("region:", "the node is empty"),
            ("division:West", "the division's node is ALL"),
        ] {
            let err = bad.parse::<Scope>().unwrap_err().to_string();
            assert!(
                err.contains(&format!("bad scope '{bad}'")) && err.contains(why),
                "{err}"
            );
        }
    }

    #[test]
    fn a_scope_reaches_each_pharmacy_for_the_dates_it_was_placed_under_it() {
        let idx = index();
        let west = idx.reach(&"region:West".parse().expect("scope"));
        assert_eq!(west.pharmacies, BTreeSet::from(["1".into(), "2".into()]));
        // 1 was always in the West; 2 until 2024-03-01; only 1 is still there.
        assert_eq!(west.spans[0]["1"], vec![Span::ALWAYS]);
        assert_eq!(
            west.spans[0]["2"],
            vec![Span {
                from: Some(date("2024-01-01")),
                to: Some(date("2024-03-01"))
            }]
        );
        assert_eq!(west.current, BTreeSet::from(["1".to_string()]));
        assert_eq!(
            west.nodes(Level::ServiceArea),
            &BTreeSet::from(["Desert".to_string(), "Pacific Coast".to_string()])
        );
        assert_eq!(
            west.nodes(Level::Region),
            &BTreeSet::from(["West".to_string()])
        );
        assert!(west.nodes(Level::Division).is_empty());

        let chicago = idx.reach(&"local_area:Chicago".parse().expect("scope"));
        assert_eq!(chicago.pharmacies, BTreeSet::from(["4".into(), "8".into()]));
        assert_eq!(
            chicago.spans[0]["8"],
            vec![Span {
                from: Some(date("2024-02-15")),
                to: None
            }]
        );
        assert_eq!(
            chicago.current,
            BTreeSet::from(["4".to_string(), "8".to_string()])
        );
        assert!(chicago.nodes(Level::ServiceArea).is_empty());
        assert!(chicago.sees_employee_data());
        // Milwaukee keeps 8's weeks before the move, not its employees.
        let milwaukee = idx.reach(&"local_area:Milwaukee".parse().expect("scope"));
        assert_eq!(
            milwaukee.pharmacies,
            BTreeSet::from(["8".into(), "RX08".into()])
        );
        assert_eq!(milwaukee.current, BTreeSet::from(["RX08".to_string()]));

        let four = idx.reach(&"pharmacy:4".parse().expect("scope"));
        assert_eq!(four.pharmacies, BTreeSet::from(["4".to_string()]));
        assert_eq!(four.spans[0]["4"], vec![Span::ALWAYS]);
        assert!(four.nodes(Level::LocalArea).is_empty());
        assert!(!four.sees_employee_data());

        let all = idx.reach(&Scope::division());
        assert_eq!(all.pharmacies.len(), 5);
        assert_eq!(
            all.nodes(Level::Division),
            &BTreeSet::from(["ALL".to_string()])
        );
        assert!(idx.check(&"region:Mars".parse().expect("scope")).is_err());
        assert!(idx.check(&"pharmacy:8".parse().expect("scope")).is_ok());
        // Ids are labels: "RX08" is a pharmacy, "08" and "rx08" are not.
        assert!(idx.check(&"pharmacy:RX08".parse().expect("scope")).is_ok());
        assert!(idx.check(&"pharmacy:08".parse().expect("scope")).is_err());
        assert!(idx.check(&"pharmacy:rx08".parse().expect("scope")).is_err());
    }

    #[test]
    fn local_midnight_is_the_instant_in_the_zone() {
        let la: Tz = "America/Los_Angeles".parse().expect("tz");
        // 2024-03-06 00:00 PST is 08:00 UTC; 2024-07-01 00:00 PDT is 07:00 UTC.
        assert_eq!(
            local_midnight_us(date("2024-03-06"), la),
            date("2024-03-06")
                .and_hms_opt(8, 0, 0)
                .expect("t")
                .and_utc()
                .timestamp_micros()
        );
        assert_eq!(
            local_midnight_us(date("2024-07-01"), la),
            date("2024-07-01")
                .and_hms_opt(7, 0, 0)
                .expect("t")
                .and_utc()
                .timestamp_micros()
        );
    }
}
