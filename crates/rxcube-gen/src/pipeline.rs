//! A run from configuration to files: checks the configuration, builds the chain, writes the
//! reference tables, then every day of every store, reporting progress after each day, and
//! returns the files in load order.

use std::path::Path;

use chrono::{Datelike, Days, NaiveDate};
use rxcube_model::TableName;

use crate::org::Chain;
use crate::store_day::{self, Scratch};
use crate::writer::{EventFiles, Layout};
use crate::{GenConfig, GenError, GenProgress, GenSummary, payroll};

/// Most pharmacies a run may have (ids stay far from overflowing).
pub(crate) const MAX_PHARMACIES: u32 = 100_000;
/// Events may fall this many days after the range (pickups, returns, surveys, corrections).
const TRAILING_DAYS: u64 = 30;

fn validate(config: &GenConfig) -> Result<(), GenError> {
    let invalid = |msg: String| Err(GenError::Config(msg));
    if config.pharmacies == 0 {
        return invalid("pharmacies must be at least 1 (got 0)".into());
    }
    if config.pharmacies > MAX_PHARMACIES {
        return invalid(format!(
            "pharmacies must be at most {MAX_PHARMACIES} (got {})",
            config.pharmacies
        ));
    }
    if config.days == 0 {
        return invalid("days must be at least 1 (got 0)".into());
    }
    if config.start.year() < 1991 {
        return invalid(format!(
            "start must be in 1991 or later (got {}): reference data begins a year earlier and \
             the contract accepts dates from 1990",
            config.start
        ));
    }
    let last = config
        .start
        .checked_add_days(Days::new(u64::from(config.days) + TRAILING_DAYS));
    let limit = NaiveDate::from_ymd_opt(2100, 12, 31);
    if last.is_none() || last > limit {
        return invalid(format!(
            "start {} plus {} days runs past the year 2100, the last year the contract accepts",
            config.start, config.days
        ));
    }
    Ok(())
}

pub(crate) fn run(
    config: &GenConfig,
    out: &Path,
    mut progress: impl FnMut(&GenProgress),
) -> Result<GenSummary, GenError> {
    validate(config)?;
    let chain = Chain::new(config);
    let layout = Layout::create(out, config.format)?;

    let mut files = Vec::with_capacity(TableName::ALL.len() + 3);
    for table in [
        TableName::Pharmacies,
        TableName::PeerGroups,
        TableName::Targets,
        TableName::Employees,
    ] {
        let mut writer = layout.table(table)?;
        match table {
            TableName::Pharmacies => chain.write_pharmacies(&mut writer)?,
            TableName::PeerGroups => chain.write_peer_groups(&mut writer)?,
            TableName::Targets => chain.write_targets(&mut writer)?,
            _ => payroll::write_employees(&chain, &mut writer)?,
        }
        files.push(writer.finish()?);
    }
    let reference_rows: u64 = files.iter().map(|f| f.rows).sum();

    let mut events = EventFiles::create(&layout)?;
    let mut scratch = Scratch::default();
    for day in 0..config.days {
        for store in &chain.stores {
            store_day::generate(&chain, store, i64::from(day), &mut events, &mut scratch)?;
        }
        progress(&GenProgress {
            day: day + 1,
            days: config.days,
            rows_written: reference_rows + events.rows(),
        });
    }
    files.extend(events.finish()?);
    Ok(GenSummary { files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_say_what_is_wrong() {
        let message = |config: GenConfig| match validate(&config) {
            Err(e) => e.to_string(),
            Ok(()) => String::new(),
        };
        let base = GenConfig::default();
        assert!(
            message(GenConfig {
                pharmacies: 0,
                ..base.clone()
            })
            .contains("pharmacies must be at least 1")
        );
        assert!(
            message(GenConfig {
                days: 0,
                ..base.clone()
            })
            .contains("days must be at least 1")
        );
        assert!(
            message(GenConfig {
                pharmacies: MAX_PHARMACIES + 1,
                ..base.clone()
            })
            .contains("at most")
        );
        let start = NaiveDate::from_ymd_opt(2100, 10, 1).unwrap_or_default();
        assert!(
            message(GenConfig {
                start,
                ..base.clone()
            })
            .contains("2100")
        );
        let start = NaiveDate::from_ymd_opt(1985, 6, 1).unwrap_or_default();
        assert!(
            message(GenConfig {
                start,
                ..base.clone()
            })
            .contains("1991")
        );
        assert_eq!(message(base), "");
    }
}
