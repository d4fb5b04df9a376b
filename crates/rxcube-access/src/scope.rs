//! Org scopes: `level:node`, and what a scope reaches in the org.
//!
//! A pharmacy belongs to a scope when any of its `pharmacies` rows (any validity period)
//! places it under the scope's node, so a manager keeps seeing a pharmacy's history after it
//! moved away, and the new manager sees it too. An org node (local area, service area,
//! region) is within a scope when it is the scope's node or lies under it in any such row.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use arrow::array::{Array, AsArray};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
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

/// One placement of a pharmacy in the org (a distinct `pharmacies` row, dates dropped).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Placement {
    pharmacy_id: String,
    /// local area, service area, region
    areas: [String; 3],
}

impl Placement {
    /// The node of this placement at `level` (the pharmacy id as text at the pharmacy level).
    fn node(&self, level: Level) -> String {
        match level {
            Level::Pharmacy => self.pharmacy_id.clone(),
            Level::LocalArea => self.areas[0].clone(),
            Level::ServiceArea => self.areas[1].clone(),
            Level::Region => self.areas[2].clone(),
            Level::Division => "ALL".into(),
        }
    }
}

/// Every placement of every pharmacy, read once per snapshot of the warehouse.
#[derive(Debug, Clone, Default)]
pub struct OrgIndex {
    placements: Vec<Placement>,
}

impl OrgIndex {
    /// Reads the placements from the `pharmacies` table of `ctx`.
    pub async fn load(ctx: &SessionContext) -> Result<Self> {
        let batches = ctx
            .sql(
                "SELECT DISTINCT CAST(pharmacy_id AS VARCHAR), CAST(local_area AS VARCHAR), \
                 CAST(service_area AS VARCHAR), CAST(region AS VARCHAR) FROM pharmacies",
            )
            .await?
            .collect()
            .await?;
        let mut placements = Vec::new();
        for b in batches {
            let areas = (0..4)
                .map(|i| arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| AccessError::from(DataFusionError::from(e)))?;
            let text = |i: usize, row: usize| areas[i].as_string::<i32>().value(row).to_string();
            for row in 0..b.num_rows() {
                if areas[0].is_null(row) {
                    continue;
                }
                placements.push(Placement {
                    pharmacy_id: text(0, row),
                    areas: [text(1, row), text(2, row), text(3, row)],
                });
            }
        }
        placements.sort();
        Ok(Self { placements })
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

    /// What `scope` reaches.
    pub fn reach(&self, scope: &Scope) -> Reach {
        let mut nodes: [BTreeSet<String>; 5] = Default::default();
        let mut pharmacies = BTreeSet::new();
        for p in self
            .placements
            .iter()
            .filter(|p| p.node(scope.level) == scope.node)
        {
            pharmacies.insert(p.pharmacy_id.clone());
            for level in Level::ALL.into_iter().filter(|l| *l <= scope.level) {
                nodes[level.index()].insert(p.node(level));
            }
        }
        if scope.level == Level::Division {
            nodes[Level::Division.index()].insert("ALL".into());
        }
        Reach {
            scope: scope.clone(),
            pharmacies,
            nodes,
        }
    }
}

/// The pharmacies and org nodes a scope reaches.
#[derive(Debug, Clone, PartialEq)]
pub struct Reach {
    pub scope: Scope,
    pub pharmacies: BTreeSet<String>,
    nodes: [BTreeSet<String>; 5],
}

impl Reach {
    /// The nodes of `level` within the scope (none above the scope's own level).
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> OrgIndex {
        let p = |id: &str, la: &str, sa: &str, r: &str| Placement {
            pharmacy_id: id.into(),
            areas: [la.into(), sa.into(), r.into()],
        };
        OrgIndex {
            placements: vec![
                p("1", "Los Angeles", "Pacific Coast", "West"),
                p("2", "Phoenix", "Rockies", "Central"),
                p("2", "Phoenix", "Desert", "West"),
                p("4", "Chicago", "Great Lakes", "Central"),
                p("8", "Chicago", "Great Lakes", "Central"),
                p("RX08", "Milwaukee", "Great Lakes", "Central"),
            ],
        }
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
    fn a_scope_reaches_every_pharmacy_ever_placed_under_it_and_the_nodes_below_it() {
        let idx = index();
        let west = idx.reach(&"region:West".parse().expect("scope"));
        assert_eq!(west.pharmacies, BTreeSet::from(["1".into(), "2".into()]));
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
            chicago.nodes(Level::Pharmacy),
            &BTreeSet::from(["4".to_string(), "8".to_string()])
        );
        assert!(chicago.nodes(Level::ServiceArea).is_empty());
        assert!(chicago.sees_employee_data());

        let four = idx.reach(&"pharmacy:4".parse().expect("scope"));
        assert_eq!(four.pharmacies, BTreeSet::from(["4".to_string()]));
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
}
