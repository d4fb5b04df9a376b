//! Reading a CSV file on every core.
//!
//! A [`Splitter`] cuts the file into blocks of about [`BLOCK_BYTES`] that end at a record
//! boundary (a line end outside quotes), [`ordered_parallel`] parses and checks the blocks on
//! worker threads, and hands the results back in file order, so record numbers are assigned
//! exactly as a sequential reader would. At most a few blocks per thread are in flight, so
//! memory stays bounded however large the file is.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

/// Target size of a block: large enough to amortize hand-offs, small enough to keep every core
/// busy to the end of a file.
pub(crate) const BLOCK_BYTES: usize = 4 << 20;

/// Whole records of a CSV file.
#[derive(Debug)]
pub(crate) struct Block {
    pub data: Vec<u8>,
    /// Byte offset in the file just past this block.
    pub end_offset: u64,
}

/// Cuts a CSV byte stream (positioned at the first data record) into [`Block`]s.
pub(crate) struct Splitter<R> {
    reader: R,
    carry: Vec<u8>,
    offset: u64,
    block_bytes: usize,
    eof: bool,
}

impl<R: Read> Splitter<R> {
    pub(crate) fn new(reader: R, start_offset: u64) -> Self {
        Self::with_block_bytes(reader, start_offset, BLOCK_BYTES)
    }

    pub(crate) fn with_block_bytes(reader: R, start_offset: u64, block_bytes: usize) -> Self {
        Self {
            reader,
            carry: Vec::new(),
            offset: start_offset,
            block_bytes: block_bytes.max(1),
            eof: false,
        }
    }

    fn next_block(&mut self) -> io::Result<Option<Block>> {
        let mut buf = std::mem::take(&mut self.carry);
        loop {
            if !self.eof {
                let start = buf.len();
                buf.resize(start + self.block_bytes, 0);
                let n = read_full(&mut self.reader, &mut buf[start..])?;
                buf.truncate(start + n);
                self.eof = n < self.block_bytes;
            }
            if self.eof {
                if buf.is_empty() {
                    return Ok(None);
                }
                self.offset += buf.len() as u64;
                return Ok(Some(Block {
                    data: buf,
                    end_offset: self.offset,
                }));
            }
            if let Some(cut) = last_record_end(&buf) {
                self.carry = buf[cut..].to_vec();
                buf.truncate(cut);
                self.offset += cut as u64;
                return Ok(Some(Block {
                    data: buf,
                    end_offset: self.offset,
                }));
            }
            // No record ends in this block (a record longer than a block): read on.
        }
    }
}

impl<R: Read> Iterator for Splitter<R> {
    type Item = io::Result<Block>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_block().transpose()
    }
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The position just past the last complete record of `buf`, which starts at a record start.
///
/// Without quotes every line end ends a record. With quotes, the CSV state machine
/// (`csv-core`, configured as the parser is) finds the boundaries, so a line end inside a
/// quoted field or after a stray quote never splits a record.
pub(crate) fn last_record_end(buf: &[u8]) -> Option<usize> {
    if memchr::memchr(b'"', buf).is_none() {
        return memchr::memrchr(b'\n', buf).map(|i| i + 1);
    }
    let mut reader = csv_core::Reader::new();
    let mut out = vec![0u8; 64 << 10];
    let mut ends = vec![0usize; 1024];
    let mut pos = 0;
    let mut last = None;
    loop {
        let (result, consumed, _, _) = reader.read_record(&buf[pos..], &mut out, &mut ends);
        pos += consumed;
        match result {
            csv_core::ReadRecordResult::Record => {
                // Only a record followed by its terminator is complete.
                if pos > 0 && matches!(buf[pos - 1], b'\n' | b'\r') {
                    let mut end = pos;
                    if buf[end - 1] == b'\r' && buf.get(end) == Some(&b'\n') {
                        end += 1;
                    }
                    last = Some(end);
                }
            }
            csv_core::ReadRecordResult::OutputFull | csv_core::ReadRecordResult::OutputEndsFull => {
            }
            csv_core::ReadRecordResult::InputEmpty | csv_core::ReadRecordResult::End => {
                return last;
            }
        }
        if pos >= buf.len() {
            return last;
        }
    }
}

/// Maps `work` over `input` on `threads` threads and feeds the results to `sink` in input
/// order. At most `3 * threads` items are in flight. If `sink` fails, the input stops and the
/// error is returned.
pub(crate) fn ordered_parallel<I, T, R, E>(
    input: I,
    threads: usize,
    work: impl Fn(T) -> R + Sync,
    mut sink: impl FnMut(R) -> Result<(), E>,
) -> Result<(), E>
where
    I: Iterator<Item = T> + Send,
    T: Send,
    R: Send,
{
    let threads = threads.max(1);
    let in_flight = 3 * threads;
    std::thread::scope(|scope| {
        let (token_tx, token_rx) = sync_channel::<()>(in_flight);
        for _ in 0..in_flight {
            // Cannot fail: the channel has room for every token.
            let _ = token_tx.send(());
        }
        let (item_tx, item_rx) = sync_channel::<(u64, T)>(in_flight);
        let item_rx = Arc::new(Mutex::new(item_rx));
        let (result_tx, result_rx) = sync_channel::<(u64, R)>(in_flight);

        scope.spawn(move || feed(input, token_rx, item_tx));
        for _ in 0..threads {
            let item_rx = Arc::clone(&item_rx);
            let result_tx = result_tx.clone();
            let work = &work;
            scope.spawn(move || {
                loop {
                    let next = match item_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, item)) = next else { return };
                    if result_tx.send((seq, work(item))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(result_tx);

        let mut pending = std::collections::BTreeMap::new();
        let mut next_seq = 0u64;
        for (seq, result) in result_rx.iter() {
            pending.insert(seq, result);
            while let Some(result) = pending.remove(&next_seq) {
                next_seq += 1;
                sink(result)?;
                let _ = token_tx.send(());
            }
        }
        Ok(())
    })
}

fn feed<I: Iterator<Item = T>, T>(input: I, tokens: Receiver<()>, items: SyncSender<(u64, T)>) {
    for (seq, item) in input.enumerate() {
        if tokens.recv().is_err() || items.send((seq as u64, item)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records_of(data: &[u8]) -> Vec<Vec<String>> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(data)
            .records()
            .map(|r| r.expect("record").iter().map(str::to_string).collect())
            .collect()
    }

    /// Whatever the block size, the blocks hold exactly the records of the whole file.
    #[test]
    fn blocks_hold_whole_records_whatever_their_size() {
        let data = b"1,plain\r\n2,\"quoted, comma\"\n3,\"line\nbreak\"\n4,stray\"quote\n5,\"esc \"\"q\"\"\r\nx\"\n\n6,last";
        let expected = records_of(data);
        assert_eq!(expected.len(), 6);
        for size in 1..=data.len() + 1 {
            let blocks: Vec<Block> = Splitter::with_block_bytes(&data[..], 0, size)
                .collect::<io::Result<_>>()
                .expect("blocks");
            let mut got = Vec::new();
            for b in &blocks {
                got.extend(records_of(&b.data));
            }
            assert_eq!(got, expected, "block size {size}");
            assert_eq!(blocks.last().map(|b| b.end_offset), Some(data.len() as u64));
        }
    }

    #[test]
    fn results_come_back_in_order_and_a_failing_sink_stops_the_input() {
        let mut seen = Vec::new();
        ordered_parallel(
            0..1000u64,
            4,
            |i| {
                if i % 7 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                i * 2
            },
            |r| {
                seen.push(r);
                Ok::<_, ()>(())
            },
        )
        .expect("no failure");
        assert_eq!(seen, (0..1000).map(|i| i * 2).collect::<Vec<_>>());

        let mut fed = 0;
        let err = ordered_parallel(
            0..u64::MAX,
            2,
            |i| i,
            |r| {
                fed += 1;
                if r == 10 { Err("stop") } else { Ok(()) }
            },
        );
        assert_eq!(err, Err("stop"));
        assert_eq!(fed, 11);
    }
}
