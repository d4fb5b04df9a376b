//! The text ids of the chain, written as the source systems of a real chain write them: every
//! id of the contract is a label (domain.md), kept exactly, leading zeros and case included, so
//! the chain mixes styles that only survive as text.
//!
//! - **Pharmacies**: the chain's own stores (even indices) are `RX101`, `RX102`, ...; the stores
//!   of an acquired chain (odd indices) keep its zero-padded five-digit store numbers, `00423`,
//!   `00845`, `01056`, ... (`423 + 211·(index / 2)`), except the fourth store (index 3), which
//!   came from a system without padding and is plain `423`: a different store from `00423`.
//! - **Employees**: `E1001`, `E1002`, ... (one HR system for the whole chain).
//! - **Prescriptions**: `RX` and digits at the chain's own stores, twelve zero-padded digits
//!   (`000288100001`) at the acquired ones.
//! - **Transactions**: `T900001`-style numbers at the chain's own stores; at the acquired ones
//!   register-sequence composites `R03-000123` (three registers per store, numbered across the
//!   acquired stores, each with its own sequence).
//! - **Survey responses**: `S000042`-style numbers from the phone survey, and UUID-shaped ids
//!   from the web survey (version 8, "vendor-specific": drawn from the seeded streams, so the
//!   same seed gives the same ids).
//!
//! Every id is unique by construction (a store-day owns a range of numbers, as the numeric ids
//! did before), at most 36 bytes of ASCII letters, digits and dashes.

use std::fmt;

/// Bytes an id can hold; the longest the chain writes is a UUID (36).
const CAPACITY: usize = 40;

/// A short id held inline, so rows stay `Copy` and writing an id allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Label {
    len: u8,
    bytes: [u8; CAPACITY],
}

impl Default for Label {
    fn default() -> Self {
        Label {
            len: 0,
            bytes: [0; CAPACITY],
        }
    }
}

impl Label {
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII is ever pushed.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }

    fn push(mut self, b: u8) -> Self {
        // Ids are far shorter than the capacity by construction (see each constructor).
        if let Some(slot) = self.bytes.get_mut(usize::from(self.len)) {
            *slot = b;
            self.len += 1;
        }
        self
    }

    fn text(self, s: &str) -> Self {
        s.bytes().fold(self, Label::push)
    }

    /// `n` in decimal, zero-padded to at least `width` digits.
    fn number(self, mut n: u64, width: usize) -> Self {
        let mut digits = [b'0'; 20];
        let mut len = 0;
        while n > 0 || len == 0 {
            digits[len] = b'0' + (n % 10) as u8;
            n /= 10;
            len += 1;
        }
        let padded = (0..width.saturating_sub(len)).fold(self, |l, _| l.push(b'0'));
        digits[..len].iter().rev().fold(padded, |l, &d| l.push(d))
    }

    /// The low `digits` hex digits of `n`, lowercase.
    fn hex(self, n: u64, digits: u32) -> Self {
        (0..digits).rev().fold(self, |l, i| {
            l.push(b"0123456789abcdef"[((n >> (4 * i)) & 0xF) as usize])
        })
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The systems a store's records come from: the chain's own pharmacy and point-of-sale
/// systems, or those of the acquired chain, still in use at its stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Systems {
    Own,
    /// `first_register` is the number of the store's first register (it has [`REGISTERS`]).
    Acquired {
        first_register: u64,
    },
}

/// Registers per acquired store.
const REGISTERS: u64 = 3;
/// Store number of the first acquired store.
const FIRST_ACQUIRED_NUMBER: u64 = 423;
/// Store numbers of the acquired stores step by this.
const ACQUIRED_NUMBER_STEP: u64 = 211;
/// The acquired store numbered without zero padding.
const UNPADDED_INDEX: usize = 3;

/// Numbers a store-day (or a register-day) may hand out: more than any store-day produces
/// (at most [`MAX_NEW_FILLS_PER_DAY`](crate::demand::MAX_NEW_FILLS_PER_DAY) new fills, their
/// refills and baskets), so ranges never overlap.
const PER_STORE_DAY: u64 = 1_000_000;
/// New prescriptions a store-day may number.
pub(crate) const RX_PER_STORE_DAY: u64 = 100_000;

/// The id and systems of the pharmacy at `index` (0-based).
pub(crate) fn pharmacy(index: usize) -> (Label, Systems) {
    let half = index as u64 / 2;
    if index.is_multiple_of(2) {
        return (
            Label::default().text("RX").number(101 + half, 0),
            Systems::Own,
        );
    }
    let systems = Systems::Acquired {
        first_register: REGISTERS * half + 1,
    };
    let label = if index == UNPADDED_INDEX {
        Label::default().number(FIRST_ACQUIRED_NUMBER, 0)
    } else {
        Label::default().number(FIRST_ACQUIRED_NUMBER + ACQUIRED_NUMBER_STEP * half, 5)
    };
    (label, systems)
}

/// The id of employee number `n` (1-based).
pub(crate) fn employee(n: i32) -> Label {
    Label::default()
        .text("E")
        .number(1000 + u64::from(n.unsigned_abs()), 0)
}

/// The id of the prescription numbered `n` (unique in the chain) at a store with `systems`.
pub(crate) fn rx(systems: Systems, n: u64) -> Label {
    match systems {
        Systems::Own => Label::default().text("RX").number(n, 0),
        Systems::Acquired { .. } => Label::default().number(n, 12),
    }
}

/// The id of basket `basket` (0-based) of store-day `store_day` (unique in the chain: day index
/// × pharmacies + store index) on day index `day`.
pub(crate) fn txn(systems: Systems, store_day: u64, day: u64, basket: u64) -> Label {
    match systems {
        Systems::Own => Label::default()
            .text("T")
            .number(900_000 + store_day * PER_STORE_DAY + basket + 1, 0),
        Systems::Acquired { first_register } => Label::default()
            .text("R")
            .number(first_register + basket % REGISTERS, 2)
            .text("-")
            .number(day * PER_STORE_DAY + basket / REGISTERS + 1, 6),
    }
}

/// The phone survey's id of response `seq` (0-based) of store-day `store_day`.
pub(crate) fn phone_response(store_day: u64, seq: u64) -> Label {
    Label::default()
        .text("S")
        .number(store_day * PER_STORE_DAY + seq + 1, 6)
}

/// The web survey's id of response `seq` of store-day `store_day`: a UUID (version 8) whose
/// first half is a seed-keyed bijection of the response's number, so ids never repeat, and
/// whose second half is `random`, a draw of the store-day's survey stream.
pub(crate) fn web_response(seed: u64, store_day: u64, seq: u64, random: u64) -> Label {
    const BITS_60: u64 = (1 << 60) - 1;
    // Each step is a bijection of 0..2^60: xor, multiplication by an odd number modulo 2^60,
    // and xor with a right shift of itself.
    let mut x =
        (store_day * PER_STORE_DAY + seq) ^ (seed.wrapping_mul(0xD1B5_4A32_D192_ED03) & BITS_60);
    x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) & BITS_60;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9) & BITS_60;
    x ^= x >> 29;
    let high = ((x >> 12) << 16) | (0x8 << 12) | (x & 0xFFF);
    let low = (random & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    Label::default()
        .hex(high >> 32, 8)
        .text("-")
        .hex(high >> 16, 4)
        .text("-")
        .hex(high, 4)
        .text("-")
        .hex(low >> 48, 4)
        .text("-")
        .hex(low, 12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn pharmacy_ids_mix_prefixed_padded_and_plain_store_numbers() {
        let ids: Vec<String> = (0..8).map(|i| pharmacy(i).0.to_string()).collect();
        assert_eq!(
            ids,
            [
                "RX101", "00423", "RX102", "423", "RX103", "00845", "RX104", "01056"
            ]
        );
        let all: HashSet<String> = (0..100_000).map(|i| pharmacy(i).0.to_string()).collect();
        assert_eq!(all.len(), 100_000, "pharmacy ids are unique");
        assert_eq!(pharmacy(99_999).0.as_str(), "10550212");
    }

    #[test]
    fn event_ids_take_the_style_of_the_store_system() {
        let (_, own) = pharmacy(0);
        let (_, acquired) = pharmacy(1);
        let (_, unpadded) = pharmacy(3);
        assert_eq!(employee(1).as_str(), "E1001");
        assert_eq!(rx(own, 288_000_001).as_str(), "RX288000001");
        assert_eq!(rx(acquired, 288_000_001).as_str(), "000288000001");
        assert_eq!(txn(own, 0, 0, 0).as_str(), "T900001");
        assert_eq!(txn(own, 2, 0, 4).as_str(), "T2900005");
        assert_eq!(txn(acquired, 1, 0, 0).as_str(), "R01-000001");
        assert_eq!(txn(acquired, 1, 0, 5).as_str(), "R03-000002");
        assert_eq!(txn(unpadded, 3, 0, 0).as_str(), "R04-000001");
        assert_eq!(txn(acquired, 9, 2, 368).as_str(), "R03-2000123");
        assert_eq!(phone_response(0, 41).as_str(), "S000042");
        assert_eq!(phone_response(3, 0).as_str(), "S3000001");
    }

    #[test]
    fn web_response_ids_are_version_8_uuids_and_never_repeat() {
        let mut seen = HashSet::new();
        for store_day in [0, 1, 7, 1_000_000] {
            for seq in 0..2_000 {
                let id = web_response(42, store_day, seq, 0);
                let s = id.as_str();
                assert_eq!(s.len(), 36, "{s}");
                let groups: Vec<usize> = s.split('-').map(str::len).collect();
                assert_eq!(groups, [8, 4, 4, 4, 12], "{s}");
                assert!(s.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
                assert_eq!(&s[14..15], "8", "version nibble: {s}");
                assert_eq!(&s[19..20], "8", "variant bits with a zero draw: {s}");
                assert!(seen.insert(s.to_string()), "repeated {s}");
            }
        }
        assert_ne!(web_response(42, 0, 0, 7), web_response(43, 0, 0, 7));
        assert_eq!(
            web_response(42, 5, 6, 7).as_str(),
            web_response(42, 5, 6, 7).as_str()
        );
    }

    #[test]
    fn numbers_are_padded_only_up_to_the_width() {
        assert_eq!(Label::default().number(0, 0).as_str(), "0");
        assert_eq!(Label::default().number(7, 5).as_str(), "00007");
        assert_eq!(Label::default().number(123_456, 5).as_str(), "123456");
        assert_eq!(
            Label::default().number(u64::MAX, 0).as_str(),
            "18446744073709551615"
        );
        assert_eq!(Label::default().hex(0xAB, 4).as_str(), "00ab");
    }
}
