//! Randomness: one reproducible ChaCha8 stream per (seed, purpose, pharmacy, day), so any
//! store-day can be generated, or looked back at, on its own and in any order; plus the few
//! distributions the chain draws from.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a stream is used for. Separate purposes keep, say, the number of OTC lines from
/// shifting the arrival times of fills.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    StoreProfile = 1,
    Roster = 2,
    Volume = 3,
    RefillOrder = 4,
    Fills = 5,
    Sales = 6,
    Surveys = 7,
    Payroll = 8,
    Corrections = 9,
}

/// The stream for `purpose` of `pharmacy` on day index `day` (may be negative: days before the
/// range, which refills look back at).
pub(crate) fn stream(seed: u64, purpose: Purpose, pharmacy: u32, day: i64) -> ChaCha8Rng {
    let mut h = mix(seed ^ 0x7278_6375_6265_0001);
    h = mix(h ^ purpose as u64);
    h = mix(h ^ u64::from(pharmacy));
    h = mix(h ^ day as u64);
    ChaCha8Rng::seed_from_u64(h)
}

/// The splitmix64 finalizer: a bijective mixer that spreads every input bit.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A standard normal sample (Box-Muller).
pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// True with probability `p`.
pub(crate) fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.random::<f64>() < p
}

/// A uniform value in `lo..hi` (`lo` when the range is empty).
pub(crate) fn between(rng: &mut ChaCha8Rng, lo: i64, hi: i64) -> i64 {
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..hi)
    }
}

/// A uniform value in `lo..hi` as a float.
pub(crate) fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// An index drawn with the given weights (which need not sum to 1).
pub(crate) fn weighted(rng: &mut ChaCha8Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len().saturating_sub(1)
}

/// `x` rounded down or up at random so that its expectation is `x` (for counts).
pub(crate) fn round_stochastic(rng: &mut ChaCha8Rng, x: f64) -> u32 {
    if x <= 0.0 {
        return 0;
    }
    let floor = x.floor();
    let extra = u32::from(rng.random::<f64>() < x - floor);
    (floor as u32).saturating_add(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_independent() {
        let a: u64 = stream(42, Purpose::Fills, 3, 10).random();
        let b: u64 = stream(42, Purpose::Fills, 3, 10).random();
        let c: u64 = stream(42, Purpose::Fills, 3, 11).random();
        let d: u64 = stream(42, Purpose::Sales, 3, 10).random();
        let e: u64 = stream(43, Purpose::Fills, 3, 10).random();
        assert_eq!(a, b);
        assert!(a != c && a != d && a != e);
    }

    #[test]
    fn normal_has_mean_zero_and_unit_variance() {
        let mut rng = stream(1, Purpose::Fills, 1, 0);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }
}
