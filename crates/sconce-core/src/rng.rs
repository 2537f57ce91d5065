//! A small seeded random generator (xoshiro256++ seeded by SplitMix64) whose stream never
//! changes between releases, so weight initialisation and data shuffling are reproducible.
//!
//! candle's CPU random generator cannot be seeded; every random draw in sconce goes
//! through [`SeededRng`] instead.

use rand_core::{RngCore, SeedableRng};

/// SplitMix64 (Steele, Lea & Flood 2014), used to expand a `u64` seed into a full state.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// xoshiro256++ (Blackman & Vigna 2019): fast, 256-bit state, passes BigCrush.
///
/// The stream is fixed by this file, not by a dependency's version: the same seed gives the
/// same numbers in every sconce release.
///
/// ```
/// use sconce_core::SeededRng;
/// let mut a = SeededRng::new(42);
/// let mut b = SeededRng::new(42);
/// assert_eq!(a.next_f64(), b.next_f64());
/// let mut idx: Vec<usize> = (0..10).collect();
/// a.shuffle(&mut idx);
/// b.shuffle(&mut vec![0usize; 10]); // keep the streams in step
/// assert_eq!(a.below(1000), b.below(1000));
/// ```
#[derive(Debug, Clone)]
pub struct SeededRng {
    s: [u64; 4],
    /// The second normal deviate of the last Box–Muller pair, if not yet used.
    spare_normal: Option<f64>,
}

impl SeededRng {
    /// A generator whose state is four SplitMix64 outputs of `seed` (the seeding Vigna recommends).
    pub fn new(seed: u64) -> Self {
        let mut sm = SplitMix64::new(seed);
        let s = [sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()];
        Self { s, spare_normal: None }
    }

    /// A generator with an explicit state. An all-zero state (which would only ever produce
    /// zeros) is replaced by the state of `SeededRng::new(0)`.
    pub fn from_state(s: [u64; 4]) -> Self {
        if s == [0; 4] { Self::new(0) } else { Self { s, spare_normal: None } }
    }

    /// An independent generator for a sub-task (a worker thread, a fold, a layer), derived
    /// from this one's seed and `stream` without advancing this generator.
    pub fn fork(&self, stream: u64) -> Self {
        let mut sm =
            SplitMix64::new(self.s[0] ^ self.s[3].rotate_left(17) ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        Self { s: [sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()], spare_normal: None }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform `f64` in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform `f32` in `[0, 1)` with 24 random bits.
    #[inline]
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// A uniform `f64` in `[lo, hi)`.
    #[inline]
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// A standard normal deviate (Box–Muller; the pair's second value is kept for the next call).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// A uniform integer in `0..n` without modulo bias (Lemire's method). Returns 0 for `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        let mut low = m as u64;
        if low < n {
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
                low = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// Shuffles `items` in place (Fisher–Yates), uniformly over all permutations.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A uniformly random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }
}

impl RngCore for SeededRng {
    fn next_u32(&mut self) -> u32 {
        (SeededRng::next_u64(self) >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        SeededRng::next_u64(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = SeededRng::next_u64(self).to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

impl SeedableRng for SeededRng {
    type Seed = [u8; 32];

    fn from_seed(seed: [u8; 32]) -> Self {
        let mut s = [0u64; 4];
        for (word, bytes) in s.iter_mut().zip(seed.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes);
            *word = u64::from_le_bytes(b);
        }
        Self::from_state(s)
    }

    fn seed_from_u64(seed: u64) -> Self {
        Self::new(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro256pp_matches_the_reference_implementation() {
        // Published outputs of xoshiro256plusplus.c from the state {1, 2, 3, 4}.
        let mut rng = SeededRng::from_state([1, 2, 3, 4]);
        let expected: [u64; 10] = [
            41943041,
            58720359,
            3588806011781223,
            3591011842654386,
            9228616714210784205,
            9973669472204895162,
            14011001112246962877,
            12406186145184390807,
            15849039046786891736,
            10450023813501588000,
        ];
        for e in expected {
            assert_eq!(rng.next_u64(), e);
        }
    }

    #[test]
    fn splitmix64_matches_the_reference_implementation() {
        // Published outputs of splitmix64.c for the seed 1234567.
        let mut sm = SplitMix64::new(1234567);
        for e in [
            6457827717110365317u64,
            3203168211198807973,
            9817491932198370423,
            4593380528125082431,
            16408922859458223821,
        ] {
            assert_eq!(sm.next_u64(), e);
        }
    }

    #[test]
    fn seed_bytes_and_state_agree() {
        let mut bytes = [0u8; 32];
        for (i, w) in [1u64, 2, 3, 4].iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        let mut a = SeededRng::from_seed(bytes);
        assert_eq!(a.next_u64(), 41943041);
        let mut z = SeededRng::from_state([0; 4]);
        assert_ne!(z.next_u64(), 0);
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let mut a = SeededRng::new(7);
        let mut b = SeededRng::new(7);
        let mut c = SeededRng::new(8);
        let va: Vec<u64> = (0..64).map(|_| a.next_u64()).collect();
        let vb: Vec<u64> = (0..64).map(|_| b.next_u64()).collect();
        let vc: Vec<u64> = (0..64).map(|_| c.next_u64()).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
    }

    #[test]
    fn fork_is_deterministic_distinct_and_leaves_parent_alone() {
        let parent = SeededRng::new(3);
        let mut f1 = parent.fork(1);
        let mut f1b = parent.fork(1);
        let mut f2 = parent.fork(2);
        assert_eq!(f1.next_u64(), f1b.next_u64());
        assert_ne!(f1.next_u64(), f2.next_u64());
        let mut p = parent.clone();
        assert_eq!(p.next_u64(), SeededRng::new(3).next_u64());
    }

    #[test]
    fn uniform_moments() {
        let mut rng = SeededRng::new(11);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.next_f64()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors: mean 0.00065, variance ~0.0002.
        assert!((mean - 0.5).abs() < 0.004, "mean {mean}");
        assert!((var - 1.0 / 12.0).abs() < 0.002, "var {var}");
        let f: Vec<f32> = (0..1000).map(|_| rng.next_f32()).collect();
        assert!(f.iter().all(|&x| (0.0..1.0).contains(&x)));
    }

    #[test]
    fn normal_moments() {
        let mut rng = SeededRng::new(12);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        assert!(xs.iter().all(|x| x.is_finite()));
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        let kurt = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        assert!((kurt - 3.0).abs() < 0.1, "kurtosis {kurt}");
        let within_1sd = xs.iter().filter(|x| x.abs() < 1.0).count() as f64 / n as f64;
        assert!((within_1sd - 0.682_689).abs() < 0.005, "P(|z|<1) = {within_1sd}");
    }

    #[test]
    fn below_is_unbiased_and_in_range() {
        let mut rng = SeededRng::new(5);
        let mut counts = [0usize; 6];
        let n = 60_000;
        for _ in 0..n {
            let k = rng.below(6);
            counts[k as usize] += 1;
        }
        // Chi-squared with 5 degrees of freedom; 20.5 is its 0.999 quantile.
        let expected = n as f64 / 6.0;
        let chi2: f64 = counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
        assert!(chi2 < 20.5, "chi2 {chi2}, counts {counts:?}");
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.below(1), 0);
        assert!((0..1000).all(|_| rng.below(u64::MAX) < u64::MAX));
    }

    #[test]
    fn shuffle_is_a_uniform_permutation() {
        let mut rng = SeededRng::new(9);
        let p = rng.permutation(100);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        // Every element lands in every position about equally often.
        let mut first = [0usize; 4];
        for _ in 0..40_000 {
            let mut v = [0, 1, 2, 3];
            rng.shuffle(&mut v);
            first[v[0]] += 1;
        }
        assert!(first.iter().all(|&c| (9_500..10_500).contains(&c)), "{first:?}");
        let mut empty: [u8; 0] = [];
        rng.shuffle(&mut empty);
    }

    #[test]
    fn rng_core_fills_bytes_from_the_stream() {
        let mut a = SeededRng::new(1);
        let mut b = SeededRng::new(1);
        let mut buf = [0u8; 11];
        a.fill_bytes(&mut buf);
        let w0 = b.next_u64().to_le_bytes();
        let w1 = b.next_u64().to_le_bytes();
        assert_eq!(&buf[..8], &w0);
        assert_eq!(&buf[8..], &w1[..3]);
        assert_eq!(RngCore::next_u32(&mut a), (b.next_u64() >> 32) as u32);
    }
}
