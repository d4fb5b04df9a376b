//! Builders that turn field text into Arrow columns of the contract types.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::DataType;
use rxcube_model::ColumnType;

use crate::text;

/// A column under construction.
pub(crate) enum ColumnBuilder {
    Int32(Int32Builder),
    Int64(Int64Builder),
    Text(StringBuilder),
    Date(Date32Builder),
    Instant(TimestampMicrosecondBuilder),
    Decimal(Decimal128Builder, DataType),
    Float64(Float64Builder),
}

impl ColumnBuilder {
    pub(crate) fn new(ty: ColumnType, capacity: usize) -> Self {
        match ty {
            ColumnType::Int32 => Self::Int32(Int32Builder::with_capacity(capacity)),
            ColumnType::Int64 => Self::Int64(Int64Builder::with_capacity(capacity)),
            ColumnType::Text => Self::Text(StringBuilder::with_capacity(capacity, capacity * 8)),
            ColumnType::Date => Self::Date(Date32Builder::with_capacity(capacity)),
            ColumnType::Instant => {
                Self::Instant(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
            ColumnType::Money | ColumnType::Hours => {
                Self::Decimal(Decimal128Builder::with_capacity(capacity), ty.arrow_type())
            }
            ColumnType::Float64 => Self::Float64(Float64Builder::with_capacity(capacity)),
        }
    }

    pub(crate) fn append_null(&mut self) {
        match self {
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::Text(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Instant(b) => b.append_null(),
            Self::Decimal(b, _) => b.append_null(),
            Self::Float64(b) => b.append_null(),
        }
    }

    /// Parses `s` and appends it; on failure appends NULL and returns the reason.
    pub(crate) fn append_text(&mut self, s: &str) -> Result<(), &'static str> {
        let r = match self {
            Self::Int32(b) => text::parse_i32(s).map(|v| b.append_value(v)),
            Self::Int64(b) => text::parse_i64(s).map(|v| b.append_value(v)),
            Self::Text(b) => {
                b.append_value(s);
                Ok(())
            }
            Self::Date(b) => text::parse_date(s).map(|v| b.append_value(v)),
            Self::Instant(b) => text::parse_instant(s).map(|v| b.append_value(v)),
            Self::Decimal(b, ty) => {
                let DataType::Decimal128(precision, scale) = *ty else {
                    unreachable!("decimal builders are made with a decimal type")
                };
                text::parse_decimal(s, scale as u32).and_then(|v| {
                    if v.unsigned_abs() >= 10u128.pow(u32::from(precision)) {
                        Err("number too large")
                    } else {
                        b.append_value(v);
                        Ok(())
                    }
                })
            }
            Self::Float64(b) => text::parse_f64(s).map(|v| b.append_value(v)),
        };
        if r.is_err() {
            self.append_null();
        }
        r
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::Text(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Instant(b) => Arc::new(b.finish().with_timezone("UTC")),
            Self::Decimal(b, ty) => {
                let DataType::Decimal128(p, s) = *ty else {
                    unreachable!("decimal builders are made with a decimal type")
                };
                Arc::new(
                    b.finish()
                        .with_precision_and_scale(p, s)
                        .expect("precision and scale come from the contract"),
                )
            }
            Self::Float64(b) => Arc::new(b.finish()),
        }
    }
}
