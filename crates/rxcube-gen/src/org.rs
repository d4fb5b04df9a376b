//! The chain itself: regions, service areas and local areas; the pharmacies with their time
//! zone, peer group, opening hours, staffing and the store-specific parameters of how they
//! work; the re-organization and the peer-group change; and the reference tables that describe
//! all of it (pharmacies, peer_groups, targets).

use chrono::{Datelike, NaiveDate};
use rxcube_model::domain::KEY_METRICS;

use crate::clock::{self, PAY_PERIOD_DAYS, SECS_PER_DAY, Zone, ZoneClock, pay_period_day};
use crate::demand::{OpeningHours, Volume};
use crate::ids::{self, Label, Systems};
use crate::payroll::Roster;
use crate::records::{PeerGroupRow, PharmacyRow, TargetRow};
use crate::seed::{self, Purpose};
use crate::writer::TableWriter;
use crate::{GenConfig, GenError};

/// Day of a pay period on which changes land: the Wednesday of its second week.
const CHANGE_DAY_OF_PERIOD: i64 = 10;

/// Peer groups, by size and hours of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerGroup {
    Large24h,
    Large,
    Medium,
    Small,
}

impl PeerGroup {
    pub(crate) const ALL: [PeerGroup; 4] = [
        PeerGroup::Large24h,
        PeerGroup::Large,
        PeerGroup::Medium,
        PeerGroup::Small,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            PeerGroup::Large24h => "large-24h",
            PeerGroup::Large => "large",
            PeerGroup::Medium => "medium",
            PeerGroup::Small => "small",
        }
    }

    /// Target minutes of on-time processing; `None` leaves the contract default (15).
    fn target_minutes(self) -> Option<i32> {
        match self {
            PeerGroup::Large24h => Some(20),
            PeerGroup::Large | PeerGroup::Small => Some(15),
            PeerGroup::Medium => None,
        }
    }

    /// New prescriptions on an average weekday for a typical store of the group.
    fn base_new_fills(self) -> f64 {
        match self {
            PeerGroup::Large24h => 240.0,
            PeerGroup::Large => 200.0,
            PeerGroup::Medium => 130.0,
            PeerGroup::Small => 70.0,
        }
    }

    /// Opening hours; every other small store is closed on Sundays.
    fn hours(self, index: usize) -> OpeningHours {
        match self {
            PeerGroup::Large24h => OpeningHours::around_the_clock(),
            PeerGroup::Large => OpeningHours::weekly((8, 22), (9, 20), Some((10, 18))),
            PeerGroup::Medium => OpeningHours::weekly((9, 21), (9, 18), Some((10, 17))),
            PeerGroup::Small if index.is_multiple_of(2) => {
                OpeningHours::weekly((9, 19), (9, 17), None)
            }
            PeerGroup::Small => OpeningHours::weekly((9, 19), (9, 17), Some((10, 16))),
        }
    }

    fn staffing(self) -> Staffing {
        let (pharmacists, technicians, clerks, night) = match self {
            PeerGroup::Large24h => (2, 3, 2, true),
            PeerGroup::Large => (2, 3, 2, false),
            PeerGroup::Medium => (1, 2, 1, false),
            PeerGroup::Small => (1, 1, 1, false),
        };
        Staffing {
            pharmacists,
            technicians,
            clerks,
            night,
        }
    }

    /// Target value of a tier (1 = threshold, 2 = target, 3 = stretch).
    fn target(self, metric: &str, tier: usize) -> f64 {
        let tier = tier.clamp(1, 3) - 1;
        let value: f64 = match metric {
            "labor_cost_per_rx" => {
                let base = match self {
                    PeerGroup::Large24h => 7.0,
                    PeerGroup::Large => 8.0,
                    PeerGroup::Medium => 6.5,
                    PeerGroup::Small => 8.5,
                };
                base * [1.10, 1.0, 0.92][tier]
            }
            "csat_pct" => [80.0, 85.0, 90.0][tier],
            "on_time_pct" => [75.0, 85.0, 92.0][tier],
            "otc_sales_per_rx" => [18.0, 21.0, 24.0][tier],
            "crp_usage_pct" => [25.0, 35.0, 45.0][tier],
            _ => 0.0,
        };
        (value * 100.0).round() / 100.0
    }

    /// Bonus for attaining a tier, in cents: rising with the tier, larger for larger stores.
    fn bonus_cents(self, tier: usize) -> i64 {
        let per_tier = [25_000, 50_000, 100_000][tier.clamp(1, 3) - 1];
        let scale = match self {
            PeerGroup::Large24h => 150,
            PeerGroup::Large => 125,
            PeerGroup::Medium => 100,
            PeerGroup::Small => 75,
        };
        per_tier * scale / 100
    }
}

/// How many people work a store's day shifts side by side, and whether it has a night crew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Staffing {
    pub pharmacists: u8,
    pub technicians: u8,
    pub clerks: u8,
    pub night: bool,
}

/// Store-specific parameters of how a pharmacy works, drawn once per store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Profile {
    /// New prescriptions on an average weekday.
    pub base_new_fills: f64,
    /// Share of prescriptions refilled again after each refill interval.
    pub refill_persistence: f64,
    /// Share of refills sent to Central Refill Processing.
    pub crp_share: f64,
    /// Median local processing minutes in a quiet hour.
    pub processing_median: f64,
    /// Spread (log-normal sigma) of local processing minutes.
    pub processing_sigma: f64,
    /// Share of local fills whose customer waits for them.
    pub waiter_share: f64,
    /// OTC-only baskets per new prescription.
    pub otc_basket_ratio: f64,
    /// Weights of the survey ratings, best first.
    pub ratings: [f64; 4],
}

impl Profile {
    fn draw(seed: u64, pharmacy: u32, group: PeerGroup) -> Self {
        let mut rng = seed::stream(seed, Purpose::StoreProfile, pharmacy, 0);
        let quality = seed::uniform(&mut rng, 0.0, 1.0);
        Profile {
            base_new_fills: group.base_new_fills() * seed::uniform(&mut rng, 0.85, 1.15),
            refill_persistence: seed::uniform(&mut rng, 0.55, 0.65),
            crp_share: seed::uniform(&mut rng, 0.15, 0.60),
            processing_median: seed::uniform(&mut rng, 6.0, 13.0),
            processing_sigma: seed::uniform(&mut rng, 0.35, 0.55),
            waiter_share: seed::uniform(&mut rng, 0.5, 0.75),
            otc_basket_ratio: seed::uniform(&mut rng, 0.6, 1.4),
            ratings: [
                0.30 + 0.35 * quality,
                0.45 - 0.15 * quality,
                0.17 - 0.13 * quality,
                0.08 - 0.07 * quality,
            ],
        }
    }
}

/// A service area: its region, the time zone of its stores and its local areas (cities).
struct ServiceAreaSpec {
    name: &'static str,
    region: &'static str,
    zone: Zone,
    local_areas: [&'static str; 3],
}

/// Service areas in order of use, two per region: two regions cover all four time zones.
const SERVICE_AREAS: [ServiceAreaSpec; 8] = [
    ServiceAreaSpec {
        name: "Pacific Coast",
        region: "West",
        zone: Zone::LosAngeles,
        local_areas: ["Los Angeles", "San Diego", "Santa Barbara"],
    },
    ServiceAreaSpec {
        name: "Desert",
        region: "West",
        zone: Zone::Phoenix,
        local_areas: ["Phoenix", "Tucson", "Mesa"],
    },
    ServiceAreaSpec {
        name: "Rockies",
        region: "Central",
        zone: Zone::Denver,
        local_areas: ["Denver", "Boulder", "Colorado Springs"],
    },
    ServiceAreaSpec {
        name: "Great Lakes",
        region: "Central",
        zone: Zone::Chicago,
        local_areas: ["Chicago", "Milwaukee", "Madison"],
    },
    ServiceAreaSpec {
        name: "Puget Sound",
        region: "Northwest",
        zone: Zone::LosAngeles,
        local_areas: ["Seattle", "Tacoma", "Olympia"],
    },
    ServiceAreaSpec {
        name: "Cascades",
        region: "Northwest",
        zone: Zone::LosAngeles,
        local_areas: ["Portland", "Eugene", "Salem"],
    },
    ServiceAreaSpec {
        name: "Texas",
        region: "South",
        zone: Zone::Chicago,
        local_areas: ["Dallas", "Houston", "Austin"],
    },
    ServiceAreaSpec {
        name: "Gulf Coast",
        region: "South",
        zone: Zone::Chicago,
        local_areas: ["New Orleans", "Baton Rouge", "Mobile"],
    },
];

/// The shape of the org tree for a chain of a given size.
#[derive(Debug, Clone, Copy)]
struct OrgShape {
    service_areas: usize,
    local_areas_per_service_area: usize,
}

impl OrgShape {
    fn for_pharmacies(n: usize) -> Self {
        let regions = match n {
            0..=16 => 2,
            17..=64 => 3,
            _ => 4,
        };
        OrgShape {
            service_areas: regions * 2,
            local_areas_per_service_area: if n <= 24 { 2 } else { 3 },
        }
    }

    fn service_area_of(self, local_area: usize) -> usize {
        local_area / self.local_areas_per_service_area
    }

    fn local_area_name(self, local_area: usize) -> &'static str {
        let sa = &SERVICE_AREAS[self.service_area_of(local_area) % SERVICE_AREAS.len()];
        sa.local_areas[local_area % self.local_areas_per_service_area]
    }
}

/// Where a pharmacy sits in the org.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OrgPath {
    local_area: &'static str,
    service_area: &'static str,
    region: &'static str,
}

/// A pharmacy and everything the generator needs to run it.
pub(crate) struct Store {
    /// Its number in the chain, `1..=pharmacies`: keys its random streams and id ranges.
    pub id: u32,
    /// Its id in the files (`RX101`, `00423`, ...).
    pub label: Label,
    /// The systems its records come from, which set the style of its event ids.
    pub systems: Systems,
    pub name: String,
    pub zone: Zone,
    /// False for stores whose row leaves the time zone empty (meaning Los Angeles).
    pub zone_listed: bool,
    pub group: PeerGroup,
    pub hours: OpeningHours,
    pub staffing: Staffing,
    pub profile: Profile,
    local_area: usize,
    pub roster: Roster,
}

/// The re-organization: one pharmacy moves to another local area, and one local area moves to
/// another service area (and region).
#[derive(Debug, Clone, Copy)]
struct Reorg {
    epoch_day: i64,
    moving_store: usize,
    to_local_area: usize,
    moving_local_area: usize,
    to_service_area: usize,
}

/// One pharmacy moves to another peer group.
#[derive(Debug, Clone, Copy)]
struct PeerChange {
    epoch_day: i64,
    store: usize,
    to: PeerGroup,
}

/// The whole chain: stores, clocks and the dated changes.
pub(crate) struct Chain {
    pub seed: u64,
    pub pharmacies: u32,
    /// Epoch day of day index 0.
    pub start_day: i64,
    pub stores: Vec<Store>,
    clocks: Vec<ZoneClock>,
    shape: OrgShape,
    /// First day of every reference row (January 1 of the year before the start).
    reference_from: i64,
    reorg: Option<Reorg>,
    peer_change: Option<PeerChange>,
    target_change: i64,
}

impl Chain {
    /// Builds the chain of a validated configuration.
    pub(crate) fn new(config: &GenConfig) -> Self {
        let n = config.pharmacies as usize;
        let start_day = clock::epoch_day(config.start);
        let days = i64::from(config.days);
        let shape = OrgShape::for_pharmacies(n);
        let reference_from = NaiveDate::from_ymd_opt(config.start.year() - 1, 1, 1)
            .map_or(start_day - 366, clock::epoch_day);

        let mut next_employee_id = 1;
        let stores = (0..n)
            .map(|i| {
                let id = i as u32 + 1;
                let (label, systems) = ids::pharmacy(i);
                let sa = i % shape.service_areas;
                let spec = &SERVICE_AREAS[sa];
                let round = i / shape.service_areas;
                let local_area = sa * shape.local_areas_per_service_area
                    + round % shape.local_areas_per_service_area;
                let group = PeerGroup::ALL[(i + i / 4) % 4];
                let hours = group.hours(i);
                let staffing = group.staffing();
                let roster = Roster::build(
                    config.seed,
                    id,
                    staffing,
                    &hours,
                    start_day,
                    &mut next_employee_id,
                );
                Store {
                    id,
                    label,
                    systems,
                    name: format!("{} #{label}", shape.local_area_name(local_area)),
                    zone: spec.zone,
                    zone_listed: !(spec.zone == Zone::LosAngeles && round % 2 == 1),
                    group,
                    hours,
                    staffing,
                    profile: Profile::draw(config.seed, id, group),
                    local_area,
                    roster,
                }
            })
            .collect::<Vec<_>>();

        // Room for events that spill past the range (pickups, returns, surveys).
        let from = (start_day - 2) * SECS_PER_DAY;
        let to = (start_day + days + 45) * SECS_PER_DAY;
        let clocks = Zone::ALL
            .iter()
            .map(|&z| ZoneClock::new(z, from, to))
            .collect();

        let reorg = change_day(start_day, days, 4).and_then(|epoch_day| {
            let moving_store = stores.len().checked_sub(1)?;
            let from_area = stores.get(moving_store)?.local_area;
            let per = shape.local_areas_per_service_area;
            let to_local_area = from_area - from_area % per + (from_area % per + 1) % per;
            let moving_local_area = stores.get(1.min(moving_store))?.local_area;
            let to_service_area =
                (shape.service_area_of(moving_local_area) + 1) % shape.service_areas;
            Some(Reorg {
                epoch_day,
                moving_store,
                to_local_area,
                moving_local_area,
                to_service_area,
            })
        });
        let peer_change = change_day(start_day, days, 7).and_then(|epoch_day| {
            let store = 2.min(stores.len().checked_sub(1)?);
            let from = stores.get(store)?.group;
            Some(PeerChange {
                epoch_day,
                store,
                to: if from == PeerGroup::Medium {
                    PeerGroup::Large
                } else {
                    PeerGroup::Medium
                },
            })
        });
        let middle = start_day + days / 2;
        let target_change =
            middle + 1 + (PAY_PERIOD_DAYS - pay_period_day(middle + 1)) % PAY_PERIOD_DAYS;

        Chain {
            seed: config.seed,
            pharmacies: config.pharmacies,
            start_day,
            stores,
            clocks,
            shape,
            reference_from,
            reorg,
            peer_change,
            target_change,
        }
    }

    pub(crate) fn clock(&self, zone: Zone) -> &ZoneClock {
        // Built for every zone in `Zone::ALL` order, so the index is in range.
        &self.clocks[zone as usize]
    }

    pub(crate) fn volume(&self, store: &Store) -> Volume {
        Volume {
            seed: self.seed,
            pharmacy: store.id,
            base: store.profile.base_new_fills,
            hours: store.hours,
            start_day: self.start_day,
        }
    }

    /// The org path of store `index`, before (`after == false`) or after the re-organization.
    fn path(&self, index: usize, store: &Store, after: bool) -> OrgPath {
        let reorg = self.reorg.filter(|_| after);
        let local_area = match reorg {
            Some(r) if r.moving_store == index => r.to_local_area,
            _ => store.local_area,
        };
        let service_area = match reorg {
            Some(r) if r.moving_local_area == local_area => r.to_service_area,
            _ => self.shape.service_area_of(local_area),
        };
        let spec = &SERVICE_AREAS[service_area % SERVICE_AREAS.len()];
        OrgPath {
            local_area: self.shape.local_area_name(local_area),
            service_area: spec.name,
            region: spec.region,
        }
    }

    pub(crate) fn write_pharmacies(&self, out: &mut TableWriter) -> Result<(), GenError> {
        for (i, store) in self.stores.iter().enumerate() {
            let before = self.path(i, store, false);
            let after = self.path(i, store, true);
            let split = self.reorg.map(|r| r.epoch_day).filter(|_| before != after);
            let mut row = PharmacyRow {
                pharmacy_id: store.label,
                valid_from: self.reference_from,
                valid_to: split,
                name: &store.name,
                local_area: before.local_area,
                service_area: before.service_area,
                region: before.region,
                timezone: store.zone_listed.then(|| store.zone.name()),
                employees: store.roster.head_count(),
                hours_per_week: store.hours.hours_per_week(),
            };
            out.write(&row)?;
            if let Some(day) = split {
                row.valid_from = day;
                row.valid_to = None;
                row.local_area = after.local_area;
                row.service_area = after.service_area;
                row.region = after.region;
                out.write(&row)?;
            }
        }
        Ok(())
    }

    pub(crate) fn write_peer_groups(&self, out: &mut TableWriter) -> Result<(), GenError> {
        for (i, store) in self.stores.iter().enumerate() {
            let change = self.peer_change.filter(|c| c.store == i);
            let mut row = PeerGroupRow {
                pharmacy_id: store.label,
                valid_from: self.reference_from,
                valid_to: change.map(|c| c.epoch_day),
                peer_group: store.group.name(),
                rx_target_minutes: store.group.target_minutes(),
            };
            out.write(&row)?;
            if let Some(c) = change {
                row.valid_from = c.epoch_day;
                row.valid_to = None;
                row.peer_group = c.to.name();
                row.rx_target_minutes = c.to.target_minutes();
                out.write(&row)?;
            }
        }
        Ok(())
    }

    /// Peer groups some pharmacy belongs to at some time, in canonical order.
    fn groups_in_use(&self) -> Vec<PeerGroup> {
        PeerGroup::ALL
            .into_iter()
            .filter(|g| {
                self.stores.iter().any(|s| s.group == *g)
                    || self.peer_change.is_some_and(|c| c.to == *g)
            })
            .collect()
    }

    pub(crate) fn write_targets(&self, out: &mut TableWriter) -> Result<(), GenError> {
        for group in self.groups_in_use() {
            for &metric in KEY_METRICS {
                for tier in 1..=3 {
                    let value = group.target(metric, tier);
                    let row = TargetRow {
                        peer_group: group.name(),
                        metric,
                        tier: tier as i32,
                        effective_from: self.start_day,
                        value,
                        bonus_cents: group.bonus_cents(tier),
                    };
                    out.write(&row)?;
                    // Later in the range the division raises the bar of two tiers.
                    let raised = match (metric, tier) {
                        ("on_time_pct", 2) => Some(value + 3.0),
                        ("labor_cost_per_rx", 3) => Some((value * 95.0).round() / 100.0),
                        _ => None,
                    };
                    if let Some(value) = raised {
                        out.write(&TargetRow {
                            effective_from: self.target_change,
                            value,
                            ..row
                        })?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The Wednesday of a pay period's second week strictly inside the range that is nearest to
/// `tenths`/10 of it (the earlier one on a tie), if any.
fn change_day(start_day: i64, days: i64, tenths: i64) -> Option<i64> {
    let target_x10 = start_day * 10 + days * tenths;
    (start_day + 1..start_day + days)
        .filter(|&d| pay_period_day(d) == CHANGE_DAY_OF_PERIOD)
        .min_by_key(|&d| (d * 10 - target_x10).abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> i64 {
        clock::epoch_day(NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default())
    }

    #[test]
    fn default_change_dates_are_the_documented_ones() {
        let chain = Chain::new(&GenConfig::default());
        assert_eq!(chain.reorg.map(|r| r.epoch_day), Some(day(2024, 2, 28)));
        assert_eq!(
            chain.peer_change.map(|c| c.epoch_day),
            Some(day(2024, 3, 27))
        );
        assert_eq!(chain.target_change, day(2024, 3, 17));
        assert_eq!(chain.reference_from, day(2023, 1, 1));
    }

    #[test]
    fn short_ranges_have_no_changes() {
        let start = day(2024, 1, 7);
        assert_eq!(change_day(start, 10, 4), None);
        assert_eq!(change_day(start, 11, 4), Some(start + 10));
    }

    #[test]
    fn the_chain_spans_four_zones_and_every_peer_group() {
        let chain = Chain::new(&GenConfig {
            pharmacies: 4,
            ..GenConfig::default()
        });
        for zone in Zone::ALL {
            assert!(chain.stores.iter().any(|s| s.zone == zone), "{zone:?}");
        }
        let groups: Vec<PeerGroup> = chain.stores.iter().map(|s| s.group).collect();
        assert_eq!(groups, PeerGroup::ALL.to_vec());
    }

    #[test]
    fn the_reorg_moves_a_store_and_a_local_area() {
        let chain = Chain::new(&GenConfig::default());
        let moved: Vec<(OrgPath, OrgPath)> = chain
            .stores
            .iter()
            .enumerate()
            .map(|(i, s)| (chain.path(i, s, false), chain.path(i, s, true)))
            .filter(|(a, b)| a != b)
            .collect();
        assert!(moved.iter().any(|(a, b)| a.local_area != b.local_area));
        assert!(
            moved
                .iter()
                .any(|(a, b)| a.local_area == b.local_area && a.region != b.region)
        );
    }
}
