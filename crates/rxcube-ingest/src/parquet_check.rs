//! Checks a Parquet file's structure before the parquet reader trusts it.
//!
//! A damaged file (flipped bytes, a cut-off copy) must be rejected with a message, never
//! abort the import: a failed allocation cannot be caught, and the reader sizes buffers from
//! the lengths the file declares. So before anything is decoded, the footer is walked as Thrift
//! (every list, map and byte-string length must fit in the bytes that are left), and once the
//! metadata is decoded every column chunk must lie inside the file and every page header in it
//! must parse, fit in its chunk and declare a sane size ([`MAX_PAGE_BYTES`]). What decoding
//! still finds wrong is an error of the reader, and a panic of the decoder is caught
//! ([`catch_panic`]).

use std::cell::Cell;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Once;

use parquet::file::metadata::ParquetMetaData;

/// The largest page, uncompressed, that an import decodes (writers default to 1 MiB).
pub(crate) const MAX_PAGE_BYTES: i64 = 1 << 30;

/// Nesting deeper than this is not a Parquet footer or page header.
const MAX_DEPTH: u32 = 32;

/// The footer: its length as the file declares it, checked against the file's size, and its
/// Thrift structure, checked against its length. Returns the offset where the footer starts
/// (the data pages end there).
pub(crate) fn check_footer(file: &File, len: u64) -> Result<u64, String> {
    let mut f = file;
    if len < 12 {
        return Err(format!(
            "{len} bytes is too short for a Parquet file (at least 12)"
        ));
    }
    let mut head = [0u8; 4];
    let mut tail = [0u8; 8];
    read_at(&mut f, 0, &mut head)?;
    read_at(&mut f, len - 8, &mut tail)?;
    match &tail[4..] {
        b"PAR1" => {}
        b"PARE" => return Err("encrypted Parquet files are not supported".into()),
        _ => return Err("the file does not end with the Parquet magic bytes (PAR1)".into()),
    }
    if &head != b"PAR1" {
        return Err("the file does not start with the Parquet magic bytes (PAR1)".into());
    }
    let footer_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if footer_len + 12 > len {
        return Err(format!(
            "the footer declares {footer_len} bytes of metadata; the file has {len} bytes"
        ));
    }
    let start = len - 8 - footer_len;
    let mut footer = vec![0u8; footer_len as usize];
    read_at(&mut f, start, &mut footer)?;
    let mut c = Compact::new(&footer);
    c.structure(0, &mut Vec::new(), &mut |_, _| {})
        .map_err(|p| format!("the footer (file metadata) is damaged: {}", p.describe()))?;
    Ok(start)
}

/// Every column chunk of the decoded `metadata`: inside the file's data (before `data_end`),
/// and each of its pages' headers readable, inside the chunk and of a sane size. The error
/// names the row group and column.
pub(crate) fn check_chunks(
    file: &File,
    metadata: &ParquetMetaData,
    data_end: u64,
) -> Result<(), (Option<String>, String)> {
    let mut f = file;
    for (g, rg) in metadata.row_groups().iter().enumerate() {
        if rg.num_rows() < 0 {
            return Err((
                None,
                format!("row group {g} declares {} rows", rg.num_rows()),
            ));
        }
        for c in rg.columns() {
            let column = c.column_path().string();
            let fail = |what: String| (Some(column.clone()), format!("row group {g}: {what}"));
            let data = c.data_page_offset();
            let start = c.dictionary_page_offset().unwrap_or(data);
            let size = c.compressed_size();
            if start < 4 || data < start || size < 0 || c.num_values() < 0 {
                return Err(fail(format!(
                    "the column chunk's metadata is damaged (offset {start}, data offset {data}, \
                     {size} bytes, {} values)",
                    c.num_values()
                )));
            }
            let (start, size) = (start as u64, size as u64);
            if start.saturating_add(size) > data_end {
                return Err(fail(format!(
                    "the column chunk at byte {start} of {size} bytes runs past the data, which ends at byte {data_end}"
                )));
            }
            check_pages(&mut f, start, start + size, c.num_values()).map_err(fail)?;
        }
    }
    Ok(())
}

/// The page headers of the column chunk in `start..end`.
fn check_pages(f: &mut &File, start: u64, end: u64, num_values: i64) -> Result<(), String> {
    const WINDOW: u64 = 64 << 10;
    const MAX_HEADER: u64 = 16 << 20;
    let mut pos = start;
    let mut values = 0i64;
    let mut buf = Vec::new();
    while pos < end {
        let mut window = WINDOW.min(end - pos);
        let (header_len, h) = loop {
            buf.resize(window as usize, 0);
            read_at(f, pos, &mut buf)?;
            let mut c = Compact::new(&buf);
            let mut h = PageHeader::default();
            match c.structure(0, &mut Vec::new(), &mut |path, v| h.set(path, v)) {
                Ok(()) => break (c.pos as u64, h),
                Err(Problem::Truncated) if window < (end - pos).min(MAX_HEADER) => {
                    window = (window * 4).min(end - pos).min(MAX_HEADER);
                }
                Err(p) => {
                    return Err(format!(
                        "the page header at byte {pos} is damaged: {}",
                        p.describe()
                    ));
                }
            }
        };
        let at = |what: String| format!("the page at byte {pos}: {what}");
        let (Some(kind), Some(uncompressed), Some(compressed)) =
            (h.kind, h.uncompressed, h.compressed)
        else {
            return Err(at("its header lacks the page type or sizes".into()));
        };
        let body = pos + header_len;
        if compressed < 0 || body.saturating_add(compressed as u64) > end {
            return Err(at(format!(
                "its {compressed} bytes run past the column chunk, which ends at byte {end}"
            )));
        }
        if !(0..=MAX_PAGE_BYTES).contains(&uncompressed) {
            return Err(at(format!(
                "it declares {uncompressed} bytes uncompressed (at most {MAX_PAGE_BYTES})"
            )));
        }
        match kind {
            // DATA_PAGE, DATA_PAGE_V2
            0 | 3 => {
                let n = h.num_values.unwrap_or(-1);
                if n < 0 {
                    return Err(at(format!("it declares {n} values")));
                }
                values = values.saturating_add(n);
                if values > num_values {
                    return Err(at(format!(
                        "its pages hold more values than the column chunk's {num_values}"
                    )));
                }
                if kind == 3 {
                    let levels = h.levels_bytes.unwrap_or(0);
                    let rows = h.num_rows.unwrap_or(0);
                    let nulls = h.num_nulls.unwrap_or(0);
                    if levels < 0
                        || levels > compressed.min(uncompressed)
                        || rows < 0
                        || !(0..=n).contains(&nulls)
                    {
                        return Err(at("its header (data page v2) is damaged".into()));
                    }
                }
            }
            // INDEX_PAGE
            1 => {}
            // DICTIONARY_PAGE: every entry takes at least a bit.
            2 => {
                let n = h.dict_values.unwrap_or(-1);
                if n < 0 || n > uncompressed.saturating_mul(8).max(8) {
                    return Err(at(format!(
                        "the dictionary declares {n} entries in {uncompressed} bytes"
                    )));
                }
            }
            k => return Err(at(format!("unknown page type {k}"))),
        }
        pos = body + compressed as u64;
    }
    Ok(())
}

fn read_at(f: &mut &File, at: u64, buf: &mut [u8]) -> Result<(), String> {
    f.seek(SeekFrom::Start(at))
        .and_then(|_| f.read_exact(buf))
        .map_err(|e| format!("cannot read {} bytes at byte {at}: {e}", buf.len()))
}

/// The fields of a page header that the checks need.
#[derive(Default)]
struct PageHeader {
    kind: Option<i64>,
    uncompressed: Option<i64>,
    compressed: Option<i64>,
    num_values: Option<i64>,
    dict_values: Option<i64>,
    num_nulls: Option<i64>,
    num_rows: Option<i64>,
    levels_bytes: Option<i64>,
}

impl PageHeader {
    /// Takes an integer field of the header by its field-id path (parquet.thrift's PageHeader).
    fn set(&mut self, path: &[i16], v: i64) {
        match path {
            [1] => self.kind = Some(v),
            [2] => self.uncompressed = Some(v),
            [3] => self.compressed = Some(v),
            [5, 1] | [8, 1] => self.num_values = Some(v),
            [7, 1] => self.dict_values = Some(v),
            [8, 2] => self.num_nulls = Some(v),
            [8, 3] => self.num_rows = Some(v),
            [8, 5] | [8, 6] => {
                let sum = self.levels_bytes.unwrap_or(0).saturating_add(v.max(-1));
                self.levels_bytes = Some(if v < 0 { -1 } else { sum });
            }
            _ => {}
        }
    }
}

#[derive(Debug)]
enum Problem {
    /// The bytes ended inside the structure.
    Truncated,
    Bad(String),
}

impl Problem {
    fn describe(&self) -> String {
        match self {
            Problem::Truncated => "it ends before its structure does".into(),
            Problem::Bad(s) => s.clone(),
        }
    }
}

/// A reader of the Thrift compact protocol that validates what it skips.
struct Compact<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Compact<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, Problem> {
        let b = *self.buf.get(self.pos).ok_or(Problem::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> Result<(), Problem> {
        if n > self.remaining() as u64 {
            return Err(Problem::Truncated);
        }
        self.pos += n as usize;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, Problem> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Problem::Bad("a varint longer than 10 bytes".into()))
    }

    fn zigzag(&mut self) -> Result<i64, Problem> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A length that must fit in what is left, `per` bytes at least per unit.
    fn length(&mut self, n: u64, per: u64, what: &str) -> Result<u64, Problem> {
        if n > i32::MAX as u64 || n.saturating_mul(per) > self.remaining() as u64 {
            return Err(Problem::Bad(format!(
                "{what} of {n} declared with {} bytes left",
                self.remaining()
            )));
        }
        Ok(n)
    }

    /// A struct: its fields up to the stop byte; integers are passed to `visit` with the path
    /// of field ids that leads to them.
    fn structure(
        &mut self,
        depth: u32,
        path: &mut Vec<i16>,
        visit: &mut dyn FnMut(&[i16], i64),
    ) -> Result<(), Problem> {
        if depth > MAX_DEPTH {
            return Err(Problem::Bad("nested too deep".into()));
        }
        let mut last: i16 = 0;
        loop {
            let b = self.byte()?;
            if b == 0 {
                return Ok(());
            }
            let (delta, ty) = (b >> 4, b & 0x0f);
            let id = if delta == 0 {
                let id = self.zigzag()?;
                i16::try_from(id).map_err(|_| Problem::Bad(format!("field id {id}")))?
            } else {
                last.checked_add(i16::from(delta))
                    .ok_or_else(|| Problem::Bad("field id overflows".into()))?
            };
            last = id;
            path.push(id);
            let r = match ty {
                // booleans carry their value in the type
                1 | 2 => Ok(()),
                _ => self.value(ty, depth, path, visit),
            };
            path.pop();
            r?;
        }
    }

    fn value(
        &mut self,
        ty: u8,
        depth: u32,
        path: &mut Vec<i16>,
        visit: &mut dyn FnMut(&[i16], i64),
    ) -> Result<(), Problem> {
        match ty {
            1..=3 => self.skip(1),
            4..=6 => {
                let v = self.zigzag()?;
                visit(path, v);
                Ok(())
            }
            7 => self.skip(8),
            8 => {
                let n = self.varint()?;
                let n = self.length(n, 1, "a byte string")?;
                self.skip(n)
            }
            9 | 10 => {
                let h = self.byte()?;
                let elem = h & 0x0f;
                let n = match h >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                if n == 0 {
                    return Ok(());
                }
                if !(1..=13).contains(&elem) {
                    return Err(Problem::Bad(format!("a list of unknown type {elem}")));
                }
                let n = self.length(n, 1, "a list")?;
                path.push(-1);
                let r = (0..n).try_for_each(|_| self.value(elem, depth + 1, path, visit));
                path.pop();
                r
            }
            11 => {
                let n = self.varint()?;
                if n == 0 {
                    return Ok(());
                }
                let n = self.length(n, 2, "a map")?;
                let kv = self.byte()?;
                let (k, v) = (kv >> 4, kv & 0x0f);
                if !(1..=13).contains(&k) || !(1..=13).contains(&v) {
                    return Err(Problem::Bad("a map of unknown types".into()));
                }
                path.push(-1);
                let r = (0..n).try_for_each(|_| {
                    self.value(k, depth + 1, path, visit)?;
                    self.value(v, depth + 1, path, visit)
                });
                path.pop();
                r
            }
            12 => self.structure(depth + 1, path, visit),
            13 => self.skip(16),
            t => Err(Problem::Bad(format!("unknown field type {t}"))),
        }
    }
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into an error with the panic's message. The panic hook stays
/// quiet for panics caught here (a damaged file is reported once, as an error of the file);
/// other panics are printed as before.
pub(crate) fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the decoder failed".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_lengths_must_fit_in_the_bytes_left() {
        // struct { 1: list<i32> of 2^28 elements } with three bytes left
        let buf = [0x19, 0xf5, 0x80, 0x80, 0x80, 0x80, 0x01, 0x02, 0x04, 0x06];
        let e = Compact::new(&buf)
            .structure(0, &mut Vec::new(), &mut |_, _| {})
            .unwrap_err();
        assert!(e.describe().contains("a list of 268435456"), "{e:?}");
        // struct { 1: binary of 1000 bytes } with none
        let buf = [0x18, 0xe8, 0x07, 0x00];
        assert!(
            Compact::new(&buf)
                .structure(0, &mut Vec::new(), &mut |_, _| {})
                .is_err()
        );
        // struct { 1: i32 = 3, 2: struct { 1: i32 = -1 } }
        let buf = [0x15, 0x06, 0x1c, 0x15, 0x01, 0x00, 0x00];
        let mut seen = Vec::new();
        Compact::new(&buf)
            .structure(0, &mut Vec::new(), &mut |p, v| seen.push((p.to_vec(), v)))
            .expect("valid");
        assert_eq!(seen, vec![(vec![1], 3), (vec![2, 1], -1)]);
    }

    #[test]
    fn a_caught_panic_becomes_its_message() {
        assert_eq!(catch_panic(|| 7), Ok(7));
        let r: Result<(), String> = catch_panic(|| panic!("decoder for dict should be set"));
        assert_eq!(r, Err("decoder for dict should be set".into()));
    }
}
