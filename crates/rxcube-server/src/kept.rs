//! Answers of the pages' statements, kept per snapshot and user ([`crate::Service::collect_kept`]).
//!
//! A score card is seven small statements over the cube relations; each is planned in the
//! user's scoped session before the result cache of the cube relations ([`rxcube_cube::cache`])
//! can answer, and planning is most of a page's time. The pages' statements are pure functions
//! of the snapshot (every table's and rollup's version, and the cube definition) and of the
//! user's session (name, scope and privileges), so their whole answers are kept under exactly
//! that: a page asked again on the same snapshot is read back without planning.
//!
//! Kept answers are never shared between users, so how fast an answer comes tells a user only
//! what they ran themselves. A new snapshot makes every kept answer unreachable (they are
//! dropped on the first insert for it). The store is bounded in bytes, oldest out first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use arrow::array::RecordBatch;

/// Bytes all kept answers may take.
const MAX_BYTES: usize = 64 << 20;
/// The largest answer kept.
const MAX_ENTRY_BYTES: usize = 4 << 20;

/// The kept answers of one snapshot.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    /// The snapshot every entry was computed on.
    snapshot: String,
    entries: HashMap<String, Arc<[RecordBatch]>>,
    order: VecDeque<(String, usize)>,
    bytes: usize,
}

impl Kept {
    /// The answer kept under `key` on `snapshot`.
    pub(crate) fn get(&self, snapshot: &str, key: &str) -> Option<Arc<[RecordBatch]>> {
        if self.snapshot != snapshot {
            return None;
        }
        self.entries.get(key).cloned()
    }

    /// Keeps `batches`, computed on `snapshot`, under `key` (a compact copy,
    /// [`rxcube_cube::cache::compacted`]); answers of any other snapshot go.
    pub(crate) fn insert(&mut self, snapshot: &str, key: String, batches: &[RecordBatch]) {
        let batches: Arc<[RecordBatch]> = rxcube_cube::cache::compacted(batches.to_vec()).into();
        let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        if bytes > MAX_ENTRY_BYTES {
            return;
        }
        if self.snapshot != snapshot {
            *self = Self {
                snapshot: snapshot.to_string(),
                ..Self::default()
            };
        }
        if self.entries.contains_key(&key) {
            return;
        }
        while self.bytes + bytes > MAX_BYTES {
            let Some((old, n)) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&old);
            self.bytes -= n;
        }
        self.entries.insert(key.clone(), batches);
        self.order.push_back((key, bytes));
        self.bytes += bytes;
    }

    /// How many answers are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};

    fn batch(rows: i64) -> Arc<[RecordBatch]> {
        let a = Int64Array::from_iter_values(0..rows);
        Arc::from(vec![
            RecordBatch::try_from_iter([("n", Arc::new(a) as _)]).expect("batch"),
        ])
    }

    #[test]
    fn answers_are_kept_per_snapshot_and_key() {
        let mut kept = Kept::default();
        kept.insert("s1", "pat\nq".into(), &batch(3));
        assert_eq!(kept.get("s1", "pat\nq").map(|b| b[0].num_rows()), Some(3));
        assert!(kept.get("s1", "sam\nq").is_none(), "another user's key");
        assert!(kept.get("s2", "pat\nq").is_none(), "another snapshot");
        kept.insert("s2", "pat\nr".into(), &batch(1));
        assert!(kept.get("s1", "pat\nq").is_none());
        assert_eq!(kept.len(), 1, "the old snapshot's answers are dropped");
    }

    /// A few rows sliced out of a large batch are kept (and counted) at their own size.
    #[test]
    fn answers_are_kept_compact() {
        let mut kept = Kept::default();
        let big = batch(1 << 16);
        let few: Arc<[RecordBatch]> = Arc::from(vec![big[0].slice(10, 3)]);
        assert!(few[0].get_array_memory_size() >= 8 << 16);
        kept.insert("s", "few".into(), &few);
        let got = kept.get("s", "few").expect("kept");
        assert_eq!(got[0], few[0], "the same rows");
        assert!(kept.bytes < 1024, "{} bytes kept for 3 rows", kept.bytes);
    }

    #[test]
    fn the_store_is_bounded() {
        let mut kept = Kept::default();
        // An answer over the entry bound is not kept at all.
        kept.insert("s", "big".into(), &batch((MAX_ENTRY_BYTES / 8 + 1) as i64));
        assert!(kept.get("s", "big").is_none());
        // Answers of half the entry bound: the store holds at most MAX_BYTES of them, the
        // oldest going first.
        let n = MAX_BYTES / (MAX_ENTRY_BYTES / 2) + 4;
        for i in 0..n {
            kept.insert("s", format!("k{i}"), &batch((MAX_ENTRY_BYTES / 16) as i64));
        }
        assert!(kept.bytes <= MAX_BYTES);
        assert!(kept.get("s", "k0").is_none(), "the oldest went first");
        assert!(kept.get("s", &format!("k{}", n - 1)).is_some());
    }
}
