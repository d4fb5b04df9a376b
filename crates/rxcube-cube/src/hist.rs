//! Exact, mergeable medians: sparse histograms of values.
//!
//! A rollup cannot keep every fact, but a median needs them all. It keeps, per cell, the
//! distinct values with their counts (`LIST<STRUCT<v DOUBLE, n BIGINT>>`, sorted by value).
//! Processing times are whole seconds, so a cell holds a few hundred distinct values however
//! many fills it pools, and two histograms merge exactly by adding counts: the median of merged
//! histograms is the median of the pooled facts, bit for bit the same as `median()` over them.
//!
//! | function | returns |
//! |---|---|
//! | `rx_hist(value)` | the histogram of the non-NULL values (aggregate) |
//! | `rx_hist_merge(hist)` | the histograms merged (aggregate; NULLs skipped) |
//! | `rx_hist_median(hist)` | the median of the merged histograms: the middle value, or the mean of the two middle values (aggregate; NULL when empty) |

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, ListArray, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;

/// The type of a histogram column.
pub fn hist_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", entry_type(), true)))
}

fn entry_type() -> DataType {
    DataType::Struct(entry_fields())
}

fn entry_fields() -> Fields {
    Fields::from(vec![
        Field::new("v", DataType::Float64, false),
        Field::new("n", DataType::Int64, false),
    ])
}

/// Registers `rx_hist`, `rx_hist_merge` and `rx_hist_median` in `ctx`.
pub fn register(ctx: &SessionContext) {
    for op in [Op::Build, Op::Merge, Op::Median] {
        ctx.register_udaf(AggregateUDF::from(HistFn::new(op)));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Build,
    Merge,
    Median,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct HistFn {
    op: Op,
    signature: Signature,
}

impl HistFn {
    fn new(op: Op) -> Self {
        // A histogram read back from storage may name its list items differently (Parquet's
        // `element`) or relax nullability: any list of (v, n) structs is taken.
        let signature = match op {
            Op::Build => Signature::new(
                TypeSignature::Exact(vec![DataType::Float64]),
                Volatility::Immutable,
            ),
            Op::Merge | Op::Median => Signature::any(1, Volatility::Immutable),
        };
        Self { op, signature }
    }
}

impl AggregateUDFImpl for HistFn {
    fn name(&self) -> &str {
        match self.op {
            Op::Build => "rx_hist",
            Op::Merge => "rx_hist_merge",
            Op::Median => "rx_hist_median",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.op {
            Op::Median => DataType::Float64,
            Op::Build | Op::Merge => hist_type(),
        })
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Hist {
            op: self.op,
            counts: BTreeMap::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[hist]", args.name),
            hist_type(),
            true,
        ))])
    }
}

/// Counts by value. Keys are the values' bits in an order-preserving encoding, so the map
/// iterates in `f64::total_cmp` order.
#[derive(Debug)]
struct Hist {
    op: Op,
    counts: BTreeMap<i64, i64>,
}

fn key(v: f64) -> i64 {
    // Normalise -0.0 to 0.0: they are one value to `median()`.
    let v = if v == 0.0 { 0.0 } else { v };
    let bits = v.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

fn value(k: i64) -> f64 {
    f64::from_bits((k ^ (((k >> 63) as u64) >> 1) as i64) as u64)
}

impl Hist {
    fn add_hists(&mut self, lists: &ArrayRef) -> Result<()> {
        let Some(lists) = lists.as_list_opt::<i32>() else {
            return exec_err!(
                "a histogram must be a list of (v, n), not {}",
                lists.data_type()
            );
        };
        for i in 0..lists.len() {
            if lists.is_null(i) {
                continue;
            }
            let entries = lists.value(i);
            let Some(entries) = entries.as_struct_opt() else {
                return exec_err!("a histogram holds {} entries", entries.data_type());
            };
            let (Some(vs), Some(ns)) = (
                entries.column(0).as_primitive_opt::<Float64Type>(),
                entries.column(1).as_primitive_opt::<Int64Type>(),
            ) else {
                return exec_err!("a histogram entry must be (v DOUBLE, n BIGINT)");
            };
            for j in 0..entries.len() {
                *self.counts.entry(key(vs.value(j))).or_insert(0) += ns.value(j);
            }
        }
        Ok(())
    }

    fn to_scalar(&self) -> ScalarValue {
        let vs = Float64Array::from_iter_values(self.counts.keys().map(|k| value(*k)));
        let ns = Int64Array::from_iter_values(self.counts.values().copied());
        let entries = StructArray::new(
            entry_fields(),
            vec![Arc::new(vs) as ArrayRef, Arc::new(ns)],
            None,
        );
        let list = ListArray::new(
            Arc::new(Field::new("item", entry_type(), true)),
            OffsetBuffer::from_lengths([entries.len()]),
            Arc::new(entries),
            None,
        );
        ScalarValue::List(Arc::new(list))
    }

    /// The `k`-th value (0-based) in order.
    fn nth(&self, k: i64) -> Option<f64> {
        let mut seen = 0;
        for (v, n) in &self.counts {
            seen += n;
            if seen > k {
                return Some(value(*v));
            }
        }
        None
    }

    fn median(&self) -> Option<f64> {
        let total: i64 = self.counts.values().sum();
        if total == 0 {
            return None;
        }
        if total % 2 == 1 {
            self.nth(total / 2)
        } else {
            // As `median()` does: the mean of the two middle values.
            Some((self.nth(total / 2 - 1)? + self.nth(total / 2)?) / 2.0)
        }
    }
}

impl Accumulator for Hist {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match self.op {
            Op::Build => {
                let vs = values[0].as_primitive::<Float64Type>();
                for v in vs.iter().flatten() {
                    *self.counts.entry(key(v)).or_insert(0) += 1;
                }
                Ok(())
            }
            Op::Merge | Op::Median => self.add_hists(&values[0]),
        }
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.add_hists(&states[0])
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.to_scalar()])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(match self.op {
            Op::Median => ScalarValue::Float64(self.median()),
            Op::Build | Op::Merge => self.to_scalar(),
        })
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.counts.len() * 40
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_as_values() {
        let mut vs = [3.5, -2.0, 0.0, -0.0, 1e-9, -1e9, 7.25, f64::MAX];
        let mut keys: Vec<i64> = vs.iter().map(|v| key(*v)).collect();
        keys.sort_unstable();
        vs.sort_by(f64::total_cmp);
        let back: Vec<f64> = keys.iter().map(|k| value(*k)).collect();
        // -0.0 is stored as 0.0.
        let want: Vec<f64> = vs
            .iter()
            .map(|v| if *v == 0.0 { 0.0 } else { *v })
            .collect();
        assert_eq!(back, want);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let mut h = Hist {
            op: Op::Median,
            counts: BTreeMap::new(),
        };
        assert_eq!(h.median(), None);
        for (v, n) in [(4.0, 2), (1.0, 1), (9.0, 1)] {
            h.counts.insert(key(v), n);
        }
        // 1, 4, 4, 9
        assert_eq!(h.median(), Some(4.0));
        h.counts.insert(key(9.0), 2);
        // 1, 4, 4, 9, 9
        assert_eq!(h.median(), Some(4.0));
        h.counts.insert(key(1.0), 2);
        // 1, 1, 4, 4, 9, 9
        assert_eq!(h.median(), Some(4.0));
        h.counts.insert(key(10.0), 2);
        // 1, 1, 4, 4, 9, 9, 10, 10
        assert_eq!(h.median(), Some(6.5));
    }
}
