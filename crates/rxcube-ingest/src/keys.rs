//! Which records may share a natural key, from 64-bit hashes of their keys.
//!
//! Each kept record contributes its key hash, tagged with its file, to one of 256 shards (by the
//! hash's top byte): appends only, so pass 1 stays cache-friendly however many records there
//! are. At the end the shards are sorted on every core and equal hashes sit side by side. A
//! shared hash within one file *may* be a duplicate key and a shared hash across files *may* be
//! a record replaced by a later file; both are then settled exactly, by key, in SQL. With no
//! shared hash (the common case) neither check costs anything.
//!
//! Memory is bounded: past a limit, every shard's hashes are appended to a spill file (one
//! segment per shard per spill), and the final check reads one shard at a time, so it holds
//! only a 256th of the hashes per core.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const SHARDS: usize = 256;
/// Files are told apart by 8 bits; from this index on they are not told apart.
const LAST_FILE_TAG: u64 = 255;
const ENTRY_BYTES: usize = std::mem::size_of::<u64>();

/// Key hashes of the records kept so far.
pub(crate) struct KeyHashes {
    shards: Vec<Vec<u64>>,
    /// Entries held in `shards`.
    held: usize,
    /// Entries `shards` may hold before they are spilled.
    limit: usize,
    spill: Option<Spill>,
}

/// Hashes moved to disk: per shard, the segments (offset, entries) of the spill file.
struct Spill {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    offset: u64,
    segments: Vec<Vec<(u64, usize)>>,
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
        Self::new(usize::MAX, None)
    }
}

impl KeyHashes {
    /// Hashes held in at most `limit_bytes` of memory; beyond it they are spilled to a file in
    /// `spill_dir` (`None`: never spilled).
    pub(crate) fn new(limit_bytes: usize, spill_dir: Option<&Path>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Vec::new()).collect(),
            held: 0,
            limit: (limit_bytes / ENTRY_BYTES).max(SHARDS),
            spill: spill_dir.map(|dir| Spill {
                path: dir.join("key-hashes.bin"),
                file: None,
                offset: 0,
                segments: vec![Vec::new(); SHARDS],
            }),
        }
    }

    /// Where the hashes spill, for naming it in an error.
    pub(crate) fn spill_path(&self) -> String {
        self.spill.as_ref().map_or_else(
            || "the key hashes".to_string(),
            |s| s.path.display().to_string(),
        )
    }

    /// Makes room for about `records` more hashes (no more than the memory limit allows).
    pub(crate) fn reserve(&mut self, records: usize) {
        let records = records.min(self.limit);
        let per_shard = records / SHARDS + records / SHARDS / 8 + 16;
        for s in &mut self.shards {
            s.reserve(per_shard);
        }
    }

    pub(crate) fn push(&mut self, hash: u64, file: usize) -> std::io::Result<()> {
        if self.held >= self.limit && self.spill.is_some() {
            self.spill()?;
        }
        let tag = (file as u64).min(LAST_FILE_TAG);
        // The shard holds the top byte, so the entry keeps the other 56 bits and the file tag.
        self.shards[(hash >> 56) as usize].push((hash << 8) | tag);
        self.held += 1;
        Ok(())
    }

    /// Appends every shard's hashes to the spill file and empties the shards.
    fn spill(&mut self) -> std::io::Result<()> {
        let Some(spill) = self.spill.as_mut() else {
            return Ok(());
        };
        let file = match &mut spill.file {
            Some(f) => f,
            None => spill.file.insert(BufWriter::with_capacity(
                1 << 20,
                File::create(&spill.path)?,
            )),
        };
        let mut bytes = Vec::new();
        for (shard, segments) in self.shards.iter_mut().zip(&mut spill.segments) {
            if shard.is_empty() {
                continue;
            }
            bytes.clear();
            bytes.extend(shard.iter().flat_map(|e| e.to_le_bytes()));
            file.write_all(&bytes)?;
            segments.push((spill.offset, shard.len()));
            spill.offset += bytes.len() as u64;
            shard.clear();
        }
        self.held = 0;
        Ok(())
    }

    /// Sorts the shards on `threads` threads and looks for equal hashes.
    pub(crate) fn overlaps(self, threads: usize) -> std::io::Result<Overlaps> {
        let threads = threads.clamp(1, SHARDS);
        let per_thread = SHARDS.div_ceil(threads);
        let mut shards = self.shards;
        let spill = match self.spill {
            Some(mut s) => match s.file.take() {
                Some(mut f) => {
                    f.flush()?;
                    Some(s)
                }
                None => None,
            },
            None => None,
        };
        let spill = spill.as_ref();
        std::thread::scope(|scope| {
            let handles: Vec<_> = shards
                .chunks_mut(per_thread)
                .enumerate()
                .map(|(g, group)| {
                    scope.spawn(move || -> std::io::Result<Overlaps> {
                        let mut file = spill.map(|s| File::open(&s.path)).transpose()?;
                        let mut found = Overlaps::default();
                        for (i, shard) in group.iter_mut().enumerate() {
                            if let (Some(s), Some(f)) = (spill, file.as_mut()) {
                                read_segments(f, &s.segments[g * per_thread + i], shard)?;
                            }
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
                        Ok(found)
                    })
                })
                .collect();
            let mut all = Overlaps::default();
            for h in handles {
                let f = h
                    .join()
                    .map_err(|_| std::io::Error::other("a key-hash thread panicked"))??;
                all.within_file |= f.within_file;
                all.across_files |= f.across_files;
            }
            Ok(all)
        })
    }
}

/// Appends the spilled hashes of one shard to `shard`.
fn read_segments(
    file: &mut File,
    segments: &[(u64, usize)],
    shard: &mut Vec<u64>,
) -> std::io::Result<()> {
    let spilled: usize = segments.iter().map(|(_, n)| n).sum();
    shard.reserve(spilled);
    let mut bytes = Vec::new();
    for (offset, n) in segments {
        bytes.resize(n * ENTRY_BYTES, 0);
        file.seek(SeekFrom::Start(*offset))?;
        file.read_exact(&mut bytes)?;
        shard.extend(
            bytes
                .chunks_exact(ENTRY_BYTES)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps_with(entries: &[(u64, usize)], limit_bytes: usize, dir: Option<&Path>) -> Overlaps {
        let mut k = KeyHashes::new(limit_bytes, dir);
        k.reserve(entries.len());
        for (h, f) in entries {
            k.push(*h, *f).expect("push");
        }
        k.overlaps(2).expect("overlaps")
    }

    fn overlaps(entries: &[(u64, usize)]) -> Overlaps {
        overlaps_with(entries, usize::MAX, None)
    }

    fn cases() -> Vec<(Vec<(u64, usize)>, Overlaps)> {
        let distinct: Vec<(u64, usize)> = (0..10_000u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15), 0))
            .collect();
        let mut same_file = distinct.clone();
        same_file.push((distinct[1234].0, 0));
        let mut other_file = distinct.clone();
        other_file.push((distinct[42].0, 3));
        vec![
            (distinct, Overlaps::default()),
            (
                same_file,
                Overlaps {
                    within_file: true,
                    across_files: false,
                },
            ),
            (
                other_file,
                Overlaps {
                    within_file: false,
                    across_files: true,
                },
            ),
        ]
    }

    #[test]
    fn equal_hashes_are_told_apart_by_file() {
        for (entries, expected) in cases() {
            assert_eq!(overlaps(&entries), expected);
        }
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

    #[test]
    fn spilled_hashes_are_checked_like_held_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (entries, expected) in cases() {
            // 4 KiB of memory: 512 entries, so 10,000 hashes spill about twenty times, and the
            // pair of equal hashes lands in different segments.
            assert_eq!(overlaps_with(&entries, 4096, Some(dir.path())), expected);
        }
    }
}
