//! A small, fast, seedable random number generator (SplitMix64).
//!
//! Generators seed one per row from (seed, row number), so a row's values
//! depend on nothing else: not on batch boundaries, nor on a restart.

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
/// generators", OOPSLA 2014).
#[derive(Debug, Clone)]
pub struct Rng(u64);

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// The generator for row `row` of stream `seed` (and `salt`, to tell
    /// columns or purposes apart).
    pub fn for_row(seed: u64, salt: u64, row: u64) -> Rng {
        Rng(mix(seed ^ mix(row.wrapping_add(salt.wrapping_mul(GAMMA)))))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n` > 0), by Lemire's multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Appends `len` random lower-case letters to `out`.
    pub fn letters(&mut self, len: usize, out: &mut String) {
        let mut bits = 0u64;
        let mut left = 0;
        for _ in 0..len {
            if left == 0 {
                bits = self.next_u64();
                left = 12;
            }
            // 5 bits per letter, folded onto 26 letters.
            let v = (bits & 31) as u8 % 26;
            bits >>= 5;
            left -= 1;
            out.push((b'a' + v) as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_reproducible_and_distinct() {
        let a = Rng::for_row(7, 0, 42).next_u64();
        assert_eq!(a, Rng::for_row(7, 0, 42).next_u64());
        assert_ne!(a, Rng::for_row(7, 0, 43).next_u64());
        assert_ne!(a, Rng::for_row(8, 0, 42).next_u64());
        assert_ne!(a, Rng::for_row(7, 1, 42).next_u64());
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Rng::for_row(1, 0, 0);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[rng.below(10) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        let mut s = String::new();
        rng.letters(40, &mut s);
        assert_eq!(s.len(), 40);
        assert!(s.bytes().all(|b| b.is_ascii_lowercase()));
    }
}
