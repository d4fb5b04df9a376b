//! Closed vocabularies and defaults of the pharmacy domain (domain.md, "What lands").

/// The five key metrics, by their contract names, as targets may name them.
pub const KEY_METRICS: &[&str] = &[
    "labor_cost_per_rx",
    "csat_pct",
    "on_time_pct",
    "otc_sales_per_rx",
    "crp_usage_pct",
];

/// Further metrics a target may be set on (the csat shares and the median diagnostic).
pub const OTHER_TARGETABLE_METRICS: &[&str] = &[
    "pct_very_satisfied",
    "pct_satisfied",
    "pct_dissatisfied",
    "pct_very_dissatisfied",
    "median_processing_minutes",
];

/// Survey ratings, best first.
pub const RATINGS: &[&str] = &[
    "very_satisfied",
    "satisfied",
    "dissatisfied",
    "very_dissatisfied",
];

/// Where a fill was processed: in the pharmacy or by Central Refill Processing.
pub const CHANNELS: &[&str] = &["local", "crp"];

/// Point-of-sale line kinds.
pub const POS_KINDS: &[&str] = &["rx", "otc"];

/// Payroll pay codes: regular, overtime, holiday, training.
pub const PAY_CODES: &[&str] = &["REG", "OT", "HOL", "TRN"];

/// Employee job classes.
pub const JOB_CLASSES: &[&str] = &["pharmacist", "technician", "clerk", "manager"];

/// The time zone of a pharmacy that names none.
pub const DEFAULT_TIMEZONE: &str = "America/Los_Angeles";

/// Target minutes for on-time processing when a peer-group assignment names none.
pub const DEFAULT_RX_TARGET_MINUTES: i32 = 15;

/// True when `metric` may carry a target.
pub fn is_targetable_metric(metric: &str) -> bool {
    KEY_METRICS.contains(&metric) || OTHER_TARGETABLE_METRICS.contains(&metric)
}

/// True for metrics expressed as a percentage from 0 to 100.
pub fn is_percentage_metric(metric: &str) -> bool {
    metric.ends_with("_pct") || metric.starts_with("pct_")
}
