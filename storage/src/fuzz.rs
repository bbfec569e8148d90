//! Mutations for the decoders' fuzz tests: each decoder of bytes from
//! disk, Kafka or a client is fed valid inputs changed at random (bits
//! flipped, bytes cut, inserted, repeated or set to edge values) and must
//! return an error, never panic. `EDDY_FUZZ_ITERATIONS` sets how many
//! inputs each test tries (a short budget by default, for CI) and
//! `EDDY_FUZZ_SEED` the seed.

/// A small deterministic generator (xorshift64*), so a failing input can
/// be made again from its seed.
#[derive(Debug, Clone)]
pub struct Mutator {
    state: u64,
}

/// Iterations a fuzz test runs: `EDDY_FUZZ_ITERATIONS`, else `default`.
pub fn iterations(default: usize) -> usize {
    std::env::var("EDDY_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Mutator {
    /// A generator seeded from `EDDY_FUZZ_SEED`, else from `seed`.
    pub fn from_env(seed: u64) -> Mutator {
        let seed = std::env::var("EDDY_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(seed);
        Mutator::new(seed)
    }

    pub fn new(seed: u64) -> Mutator {
        Mutator {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `bytes` with one to four random changes.
    pub fn mutate(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(out.len() + 1);
            match self.below(7) {
                0 if !out.is_empty() => {
                    let i = self.below(out.len());
                    out[i] ^= 1 << self.below(8);
                }
                1 => out.truncate(at),
                2 => {
                    let n = 1 + self.below(8);
                    let junk: Vec<u8> = (0..n).map(|_| self.next_u64() as u8).collect();
                    out.splice(at..at, junk);
                }
                3 if !out.is_empty() => {
                    let i = self.below(out.len());
                    out[i] = *self.pick(&[0x00, 0x7f, 0x80, 0xff, b'"', b'\\', b',', b'{']);
                }
                4 if at < out.len() => {
                    let end = (at + 1 + self.below(16)).min(out.len());
                    let repeated = out[at..end].to_vec();
                    out.splice(at..at, repeated);
                }
                5 if at + 4 <= out.len() => {
                    // A length or count field set to an edge value.
                    let edge = *self.pick(&[0u32, 1, 0x7fff_ffff, 0xffff_ffff, 0x8000_0000]);
                    out[at..at + 4].copy_from_slice(&edge.to_be_bytes());
                }
                _ => {
                    if at < out.len() {
                        out.remove(at);
                    }
                }
            }
        }
        out
    }
}

/// Runs `check` on `iterations` mutations of the `seeds` (in turn), and
/// panics with the input if one panics.
pub fn fuzz(
    name: &str,
    seeds: &[Vec<u8>],
    default_iterations: usize,
    mut check: impl FnMut(&[u8]),
) {
    assert!(!seeds.is_empty(), "{name}: no seed inputs");
    let mut mutator = Mutator::from_env(name.bytes().map(u64::from).sum());
    for seed in seeds {
        check(seed);
    }
    for i in 0..iterations(default_iterations) {
        let input = mutator.mutate(&seeds[i % seeds.len()]);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        if outcome.is_err() {
            panic!("{name}: input {i} panicked the decoder: {input:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_reproducible_and_varied() {
        let seed = b"{\"a\": 1, \"b\": \"x\"}".to_vec();
        let mut one = Mutator::new(7);
        let mut two = Mutator::new(7);
        let first: Vec<Vec<u8>> = (0..100).map(|_| one.mutate(&seed)).collect();
        let second: Vec<Vec<u8>> = (0..100).map(|_| two.mutate(&seed)).collect();
        assert_eq!(first, second);
        let distinct: std::collections::HashSet<&Vec<u8>> = first.iter().collect();
        assert!(distinct.len() > 80, "{}", distinct.len());
        assert!(first.iter().any(|m| m.len() < seed.len()));
        assert!(first.iter().any(|m| m.len() > seed.len()));
    }
}
