//! The cube's SQL functions, registered in every rxcube session:
//!
//! | function | returns |
//! |---|---|
//! | `rx_local_time(instant, tz)` | the local wall-clock TIMESTAMP of an instant in an IANA zone (NULL zone: the default) |
//! | `rx_period_start(grain, local_ts, anchor)` | the start of the `grain` period holding `local_ts`; pay periods run 14 days from the DATE `anchor` |
//! | `rx_period_end(grain, period_start)` | the start of the next period |
//! | `rx_shift_hours(start, end, tz)` | a list of `{local_hour, share}`: the local hours a shift touches and the share of its minutes in each |

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, ListBuilder, StructBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Date32Type, Field, Fields, TimeUnit, TimestampMicrosecondType};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use chrono_tz::Tz;
use datafusion::common::{DataFusionError, Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use rxcube_model::domain::DEFAULT_TIMEZONE;

use crate::time::{Grain, local, period_end, period_start, shift_hours};

/// Registers the cube's functions in `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(CubeFn::udf(
        "rx_local_time",
        vec![instant_type(), DataType::Utf8],
        local_type(),
        local_time,
    ));
    ctx.register_udf(CubeFn::udf(
        "rx_period_start",
        vec![DataType::Utf8, local_type(), DataType::Date32],
        local_type(),
        period_start_kernel,
    ));
    ctx.register_udf(CubeFn::udf(
        "rx_period_end",
        vec![DataType::Utf8, local_type()],
        local_type(),
        period_end_kernel,
    ));
    ctx.register_udf(CubeFn::udf(
        "rx_shift_hours",
        vec![instant_type(), instant_type(), DataType::Utf8],
        shift_list_type(),
        shift_hours_kernel,
    ));
}

fn instant_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}
fn local_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

/// Time zones by name, parsed once per batch.
#[derive(Default)]
struct Zones(HashMap<String, Tz>);

impl Zones {
    fn get(&mut self, name: Option<&str>) -> Result<Tz> {
        let name = name.unwrap_or(DEFAULT_TIMEZONE);
        if let Some(tz) = self.0.get(name) {
            return Ok(*tz);
        }
        let tz: Tz = name.parse().map_err(|_| {
            DataFusionError::Execution(format!(
                "'{name}' is not an IANA time zone name (e.g. America/Chicago)"
            ))
        })?;
        self.0.insert(name.to_string(), tz);
        Ok(tz)
    }
}

fn instant(micros: i64) -> Result<DateTime<chrono::Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| DataFusionError::Execution(format!("instant out of range: {micros} µs")))
}

fn naive(micros: i64) -> Result<NaiveDateTime> {
    instant(micros).map(|t| t.naive_utc())
}

fn micros(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp_micros()
}

fn grain(name: &str) -> Result<Grain> {
    Grain::parse(name).ok_or_else(|| {
        DataFusionError::Execution(format!(
            "unknown grain '{name}'; the grains are {}",
            Grain::ALL.map(Grain::as_str).join(", ")
        ))
    })
}

/// Text arguments arrive as Utf8, LargeUtf8 or Utf8View: read them all as Utf8.
fn strings(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(arrow::compute::cast(a, &DataType::Utf8)?)
}

/// One of the cube's scalar functions: a name, its parameters' types, a return type and its
/// kernel. Functions are told apart by name and parameters.
#[derive(Debug)]
struct CubeFn {
    name: &'static str,
    args: Vec<DataType>,
    signature: Signature,
    returns: DataType,
    kernel: fn(&[ArrayRef]) -> Result<ArrayRef>,
}

impl PartialEq for CubeFn {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.args == other.args
    }
}
impl Eq for CubeFn {}
impl std::hash::Hash for CubeFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.args.hash(state);
    }
}

impl CubeFn {
    fn udf(
        name: &'static str,
        args: Vec<DataType>,
        returns: DataType,
        kernel: fn(&[ArrayRef]) -> Result<ArrayRef>,
    ) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            name,
            args,
            signature: Signature::user_defined(Volatility::Immutable),
            returns,
            kernel,
        })
    }
}

/// Whether an argument of type `got` is cast to the parameter type `want`: text of any
/// encoding to text; a local time (no zone) of any precision, or a date, to a local time; an
/// instant (with a zone) of any precision to an instant; a date of either width to a date. So
/// `TIMESTAMP '...'` literals (nanoseconds), `CAST(... AS TIMESTAMP)` and DATE columns work as
/// arguments, as SQL tools write them. A local time never becomes an instant, nor the reverse:
/// which zone it is in is the caller's to say (`rx_local_time`).
fn casts_to(got: &DataType, want: &DataType) -> bool {
    use DataType::{Date32, Date64, LargeUtf8, Null, Timestamp, Utf8, Utf8View};
    got == want
        || matches!(
            (got, want),
            (Null, _)
                | (Utf8 | LargeUtf8 | Utf8View, Utf8)
                | (Timestamp(_, None) | Date32 | Date64, Timestamp(_, None))
                | (Timestamp(_, Some(_)), Timestamp(_, Some(_)))
                | (Date32 | Date64, Date32)
        )
}

impl ScalarUDFImpl for CubeFn {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() == self.args.len()
            && arg_types
                .iter()
                .zip(&self.args)
                .all(|(g, w)| casts_to(g, w))
        {
            return Ok(self.args.clone());
        }
        let show = |types: &[DataType]| {
            types
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        plan_err!(
            "{}({}) cannot take ({}); cast the arguments",
            self.name,
            show(&self.args),
            show(arg_types)
        )
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        (self.kernel)(&arrays).map(ColumnarValue::Array)
    }
}

fn shift_item_fields() -> Fields {
    Fields::from(vec![
        Field::new("local_hour", local_type(), false),
        Field::new("share", DataType::Float64, false),
    ])
}

fn shift_list_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(shift_item_fields()),
        true,
    )))
}

/// Microseconds in an hour.
const HOUR_US: i64 = 3_600_000_000;

/// The UTC offsets of time zones, found once per zone and UTC hour: `rx_local_time` converts
/// two instants of every fact, and a zone's offset changes only at its transitions, a handful a
/// year. Rows in a batch mostly share their zone and hour with the row before, so that is
/// checked first (a string comparison), then a map.
#[derive(Default)]
struct Offsets<'a> {
    zones: Zones,
    /// The zone of the row before, by name.
    last_zone: Option<(Option<&'a str>, Tz)>,
    /// The zone and UTC hour of the row before, and their offset.
    last_hour: Option<(Tz, i64, Option<i64>)>,
    hours: HashMap<(Tz, i64), Option<i64>>,
}

impl<'a> Offsets<'a> {
    fn zone(&mut self, name: Option<&'a str>) -> Result<Tz> {
        if let Some((n, tz)) = self.last_zone
            && n == name
        {
            return Ok(tz);
        }
        let tz = self.zones.get(name)?;
        self.last_zone = Some((name, tz));
        Ok(tz)
    }

    /// The local wall-clock microseconds of the instant `at_us` in `tz`.
    fn local_us(&mut self, at_us: i64, tz: Tz) -> Result<i64> {
        let hour = at_us.div_euclid(HOUR_US);
        let offset = match self.last_hour {
            Some((z, h, off)) if z == tz && h == hour => off,
            _ => {
                let off = match self.hours.get(&(tz, hour)) {
                    Some(off) => *off,
                    None => {
                        let off = hour_offset(tz, hour)?;
                        self.hours.insert((tz, hour), off);
                        off
                    }
                };
                self.last_hour = Some((tz, hour, off));
                off
            }
        };
        match offset {
            Some(off) => Ok(at_us + off),
            // A transition within this hour (a zone whose changes fall off the hour): this
            // instant's own offset.
            None => Ok(micros(local(instant(at_us)?, tz))),
        }
    }
}

/// `tz`'s offset from UTC in microseconds throughout the UTC hour `hour`, or `None` when it
/// changes within the hour.
fn hour_offset(tz: Tz, hour: i64) -> Result<Option<i64>> {
    use chrono::{Offset, TimeZone};
    let offset_at = |us: i64| -> Result<i64> {
        let t = naive(us)?;
        Ok(i64::from(tz.offset_from_utc_datetime(&t).fix().local_minus_utc()) * 1_000_000)
    };
    let start = hour.saturating_mul(HOUR_US);
    let first = offset_at(start)?;
    Ok((offset_at(start.saturating_add(HOUR_US - 1))? == first).then_some(first))
}

fn local_time(arrays: &[ArrayRef]) -> Result<ArrayRef> {
    let at = arrays[0].as_primitive::<TimestampMicrosecondType>();
    let tz = strings(&arrays[1])?;
    let tz = tz.as_string::<i32>();
    let mut offsets = Offsets::default();
    let mut out = TimestampMicrosecondBuilder::with_capacity(at.len());
    for i in 0..at.len() {
        if at.is_null(i) {
            out.append_null();
            continue;
        }
        let zone = offsets.zone(tz.is_valid(i).then(|| tz.value(i)))?;
        out.append_value(offsets.local_us(at.value(i), zone)?);
    }
    Ok(Arc::new(out.finish()))
}

fn period_start_kernel(arrays: &[ArrayRef]) -> Result<ArrayRef> {
    let grains = strings(&arrays[0])?;
    let grains = grains.as_string::<i32>();
    let t = arrays[1].as_primitive::<TimestampMicrosecondType>();
    let anchors = arrays[2].as_primitive::<Date32Type>();
    let mut out = TimestampMicrosecondBuilder::with_capacity(t.len());
    let mut last: Option<(String, Grain)> = None;
    for i in 0..t.len() {
        if t.is_null(i) || grains.is_null(i) || anchors.is_null(i) {
            out.append_null();
            continue;
        }
        let name = grains.value(i);
        let g = match &last {
            Some((n, g)) if n == name => *g,
            _ => {
                let g = grain(name)?;
                last = Some((name.to_string(), g));
                g
            }
        };
        let anchor = Date32Type::to_naive_date_opt(anchors.value(i)).unwrap_or(NaiveDate::MIN);
        out.append_value(micros(period_start(g, naive(t.value(i))?, anchor)));
    }
    Ok(Arc::new(out.finish()))
}

fn period_end_kernel(arrays: &[ArrayRef]) -> Result<ArrayRef> {
    let grains = strings(&arrays[0])?;
    let grains = grains.as_string::<i32>();
    let t = arrays[1].as_primitive::<TimestampMicrosecondType>();
    let mut out = TimestampMicrosecondBuilder::with_capacity(t.len());
    for i in 0..t.len() {
        if t.is_null(i) || grains.is_null(i) {
            out.append_null();
            continue;
        }
        let g = grain(grains.value(i))?;
        out.append_value(micros(period_end(g, naive(t.value(i))?)));
    }
    Ok(Arc::new(out.finish()))
}

fn shift_hours_kernel(arrays: &[ArrayRef]) -> Result<ArrayRef> {
    let start = arrays[0].as_primitive::<TimestampMicrosecondType>();
    let end = arrays[1].as_primitive::<TimestampMicrosecondType>();
    let tz = strings(&arrays[2])?;
    let tz = tz.as_string::<i32>();
    let mut zones = Zones::default();
    let item = StructBuilder::new(
        shift_item_fields(),
        vec![
            Box::new(TimestampMicrosecondBuilder::new()),
            Box::new(Float64Builder::new()),
        ],
    );
    let mut out = ListBuilder::new(item).with_field(Arc::new(Field::new(
        "item",
        DataType::Struct(shift_item_fields()),
        true,
    )));
    for i in 0..start.len() {
        if start.is_null(i) || end.is_null(i) {
            out.append_null();
            continue;
        }
        let zone = zones.get(tz.is_valid(i).then(|| tz.value(i)))?;
        let hours = shift_hours(instant(start.value(i))?, instant(end.value(i))?, zone);
        let items = out.values();
        for (hour, share) in hours {
            let Some(h) = items.field_builder::<TimestampMicrosecondBuilder>(0) else {
                return exec_err!("rx_shift_hours: item builder");
            };
            h.append_value(micros(hour));
            let Some(s) = items.field_builder::<Float64Builder>(1) else {
                return exec_err!("rx_shift_hours: item builder");
            };
            s.append_value(share);
            items.append(true);
        }
        out.append(true);
    }
    Ok(Arc::new(out.finish()))
}

/// The anchor date as a SQL literal.
pub fn date_literal(d: NaiveDate) -> String {
    format!("DATE '{}'", d.format("%Y-%m-%d"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::util::pretty::pretty_format_batches;

    async fn one(sql: &str) -> Result<String> {
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(pretty_format_batches(&batches)?.to_string())
    }

    #[tokio::test]
    async fn local_times_of_any_precision_and_dates_are_arguments() {
        // A TIMESTAMP literal is in nanoseconds, CAST(... AS TIMESTAMP) too, and a DATE a day.
        for t in [
            "TIMESTAMP '2024-03-20 10:00:00'",
            "CAST('2024-03-20 10:00:00' AS TIMESTAMP)",
            "arrow_cast(TIMESTAMP '2024-03-20 10:00:00', 'Timestamp(Second, None)')",
            "DATE '2024-03-20'",
        ] {
            let got = one(&format!(
                "SELECT rx_period_start('pay_period', {t}, DATE '2024-01-07') AS s, \
                 rx_period_end('pay_period', rx_period_start('pay_period', {t}, DATE '2024-01-07')) AS e"
            ))
            .await
            .unwrap();
            assert!(
                got.contains("2024-03-17T00:00:00 | 2024-03-31T00:00:00"),
                "{t}: {got}"
            );
        }
    }

    /// The offsets found once per zone and UTC hour give every instant the local time
    /// chrono-tz gives it alone: across DST changes, in zones whose changes or offsets fall off
    /// the hour (Lord Howe's 30-minute DST, Kathmandu's +05:45, St. John's -03:30), with rows
    /// of several zones interleaved and NULL zones (the default).
    #[test]
    fn local_times_equal_chrono_tz_row_by_row() {
        use arrow::array::{StringArray, TimestampMicrosecondArray};
        let zones = [
            Some("America/Los_Angeles"),
            Some("America/New_York"),
            Some("Australia/Lord_Howe"),
            Some("Asia/Kathmandu"),
            Some("America/St_Johns"),
            None,
        ];
        // Every 7 minutes over the days around 2024's changes of the US, Lord Howe (2024-04-07,
        // 2024-10-06) and Newfoundland, plus instants long before and after.
        let days = [
            "2024-03-09",
            "2024-03-10",
            "2024-04-06",
            "2024-04-07",
            "2024-10-05",
            "2024-10-06",
            "2024-11-03",
            "1901-06-01",
            "2099-07-01",
        ];
        let mut at = vec![];
        let mut names = vec![];
        for (d, day) in days.iter().enumerate() {
            let start = NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp_micros();
            for k in 0..(2 * 24 * 60 / 7) {
                at.push(start + k * 7 * 60_000_000 + 1_234_567);
                // Runs of one zone, then interleaved rows.
                names.push(
                    zones[if d % 2 == 0 {
                        (k / 50) as usize
                    } else {
                        k as usize
                    } % zones.len()],
                );
            }
        }
        let got = local_time(&[
            Arc::new(TimestampMicrosecondArray::from(at.clone()).with_timezone("UTC")),
            Arc::new(StringArray::from(names.clone())),
        ])
        .unwrap();
        let got = got.as_primitive::<TimestampMicrosecondType>();
        let mut zones = Zones::default();
        for (i, (&t, name)) in at.iter().zip(&names).enumerate() {
            let tz = zones.get(*name).unwrap();
            let want = micros(local(instant(t).unwrap(), tz));
            assert_eq!(got.value(i), want, "{name:?} at {}", instant(t).unwrap());
        }
    }

    #[tokio::test]
    async fn a_local_time_is_not_an_instant() {
        let err = one("SELECT rx_local_time(TIMESTAMP '2024-03-20 10:00:00', 'America/Chicago')")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rx_local_time(") && err.contains("cannot take (Timestamp(ns), Utf8)"),
            "{err}"
        );
        let got = one(
            "SELECT rx_local_time(arrow_cast(TIMESTAMP '2024-03-20 15:00:00', \
             'Timestamp(Nanosecond, Some(\"UTC\"))'), 'America/Chicago') AS t",
        )
        .await
        .unwrap();
        assert!(got.contains("2024-03-20T10:00:00"), "{got}");
    }
}
