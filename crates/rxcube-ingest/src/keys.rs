//! Which records may share a natural key, from 64-bit hashes of their keys.
//!
//! Each kept record contributes its key hash, tagged with its file, to one of 256 shards (by the
//! hash's top byte): appends only, so pass 1 stays cache-friendly however many records there
//! are. At the end the shards are sorted on every core and equal hashes sit side by side. A
//! shared hash within one file *may* be a duplicate key and a shared hash across files *may* be
//! a record replaced by a later file; both are then settled exactly, by key, in SQL. With no
//! shared hash (the common case) neither check costs anything.

const SHARDS: usize = 256;
/// Files are told apart by 8 bits; from this index on they are not told apart.
const LAST_FILE_TAG: u64 = 255;

/// Key hashes of the records kept so far.
pub(crate) struct KeyHashes {
    shards: Vec<Vec<u64>>,
}

/// What the hashes say about the keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Overlaps {
    /// Two records of one file have the same key hash.
    pub within_file: bool,
    /// Records of different files have the same key hash.
    pub across_files: bool,
}

impl Default for KeyHashes {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Vec::new()).collect(),
        }
    }
}

impl KeyHashes {
    /// Makes room for about `records` more hashes.
    pub(crate) fn reserve(&mut self, records: usize) {
        let per_shard = records / SHARDS + records / SHARDS / 8 + 16;
        for s in &mut self.shards {
            s.reserve(per_shard);
        }
    }

    pub(crate) fn push(&mut self, hash: u64, file: usize) {
        let tag = (file as u64).min(LAST_FILE_TAG);
        // The shard holds the top byte, so the entry keeps the other 56 bits and the file tag.
        self.shards[(hash >> 56) as usize].push((hash << 8) | tag);
    }

    /// Sorts the shards on `threads` threads and looks for equal hashes.
    pub(crate) fn overlaps(self, threads: usize) -> Overlaps {
        let threads = threads.clamp(1, SHARDS);
        let per_thread = SHARDS.div_ceil(threads);
        let mut shards = self.shards;
        std::thread::scope(|scope| {
            let handles: Vec<_> = shards
                .chunks_mut(per_thread)
                .map(|group| {
                    scope.spawn(move || {
                        let mut found = Overlaps::default();
                        for shard in group {
                            shard.sort_unstable();
                            for pair in shard.windows(2) {
                                let (a, b) = (pair[0], pair[1]);
                                if a >> 8 != b >> 8 {
                                    continue;
                                }
                                let (fa, fb) = (a & 0xff, b & 0xff);
                                if fa == LAST_FILE_TAG && fb == LAST_FILE_TAG {
                                    found.within_file = true;
                                    found.across_files = true;
                                } else if fa == fb {
                                    found.within_file = true;
                                } else {
                                    found.across_files = true;
                                }
                            }
                            *shard = Vec::new();
                        }
                        found
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok())
                .fold(Overlaps::default(), |acc, f| Overlaps {
                    within_file: acc.within_file || f.within_file,
                    across_files: acc.across_files || f.across_files,
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps(entries: &[(u64, usize)]) -> Overlaps {
        let mut k = KeyHashes::default();
        k.reserve(entries.len());
        for (h, f) in entries {
            k.push(*h, *f);
        }
        k.overlaps(2)
    }

    #[test]
    fn equal_hashes_are_told_apart_by_file() {
        let distinct: Vec<(u64, usize)> = (0..10_000u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15), 0))
            .collect();
        assert_eq!(overlaps(&distinct), Overlaps::default());

        let mut same_file = distinct.clone();
        same_file.push((distinct[1234].0, 0));
        assert_eq!(
            overlaps(&same_file),
            Overlaps {
                within_file: true,
                across_files: false
            }
        );

        let mut other_file = distinct.clone();
        other_file.push((distinct[42].0, 3));
        assert_eq!(
            overlaps(&other_file),
            Overlaps {
                within_file: false,
                across_files: true
            }
        );

        // Hashes differing only in the top byte land in different shards: no overlap.
        assert_eq!(overlaps(&[(1, 0), (1 | (1 << 56), 0)]), Overlaps::default());
        // Beyond 255 files, files are not told apart: both checks run.
        assert_eq!(
            overlaps(&[(7, 300), (7, 400)]),
            Overlaps {
                within_file: true,
                across_files: true
            }
        );
    }
}
