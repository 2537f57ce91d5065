//! Branch-free `f32` `exp`, `ln` and `log1p` that the compiler vectorises, for the fused loss
//! kernels' `f32` paths (the `f64` paths use the standard library). Relative error below 3e-7
//! over the ranges the kernels use, checked against `std` in the tests below.

/// Runs a kernel compiled for the best instruction set the CPU has (AVX-512, AVX2+FMA, or
/// baseline), detected at run time: its `#[inline(always)]` `with_simd` body, and these
/// `#[inline(always)]` functions inside it, are auto-vectorised with that width. Binaries still
/// run on any x86-64. (A plain closure would not be inlined into the dispatch and would stay
/// scalar.)
#[inline(always)]
pub(crate) fn simd<K: pulp::WithSimd>(kernel: K) -> K::Output {
    pulp::Arch::new().dispatch(kernel)
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
// Cody–Waite split of ln 2 (Cephes): k·LN2_HI is exact for |k| < 2⁹.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `eʸ` for any `y` (clamped to `[−87, 88]`, the range of normal `f32` results).
#[inline(always)]
pub(crate) fn exp(y: f32) -> f32 {
    let y = y.clamp(-87.0, 88.0);
    // Round y·log₂e to the nearest integer with the 1.5·2²³ trick (plain float adds, so the
    // loop vectorises even on baseline SSE2, which has no vector floor).
    const MAGIC: f32 = 12_582_912.0;
    let kf = y * LOG2E + MAGIC;
    let ki = kf.to_bits() as i32 - MAGIC.to_bits() as i32;
    let k = kf - MAGIC;
    let r = y - k * LN2_HI - k * LN2_LO;
    // Taylor to r⁷ on |r| ≤ ln2/2: truncation ≤ 5e-9.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((ki + 127) << 23) as u32)
}

/// `2·atanh(s)` for `|s| ≤ 1/3`: `2s·(1 + s²/3 + s⁴/5 + … + s¹⁴/15)`.
#[inline(always)]
fn two_atanh(s: f32) -> f32 {
    let q = s * s;
    let p = 1.0
        + q * (1.0 / 3.0
            + q * (1.0 / 5.0
                + q * (1.0 / 7.0 + q * (1.0 / 9.0 + q * (1.0 / 11.0 + q * (1.0 / 13.0 + q * (1.0 / 15.0)))))));
    2.0 * s * p
}

/// `ln(1 + t)` for `t ∈ [0, 1]`, as `2·atanh(t / (2 + t))`: exact to rounding for tiny `t`.
#[inline(always)]
pub(crate) fn log1p_unit(t: f32) -> f32 {
    two_atanh(t / (2.0 + t))
}

/// `ln x` for normal positive `x`: exponent plus `2·atanh((m − 1)/(m + 1))` of the mantissa
/// scaled into `[√½, √2)`.
#[inline(always)]
pub(crate) fn ln(x: f32) -> f32 {
    let bits = x.to_bits() as i32;
    let mut e = ((bits >> 23) & 0xff) - 127;
    let mut m = f32::from_bits(((bits & 0x007f_ffff) | 0x3f80_0000) as u32);
    let big = m > std::f32::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e += i32::from(big);
    e as f32 * std::f32::consts::LN_2 + two_atanh((m - 1.0) / (m + 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f32, b: f64) -> f64 {
        ((f64::from(a) - b) / b.abs().max(1e-30)).abs()
    }

    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let y = -87.0 + 175.0 * i as f32 / 200_000.0;
            worst = worst.max(rel(exp(y), f64::from(y).exp()));
        }
        assert!(worst < 3e-7, "{worst}");
        assert_eq!(exp(-1e4), exp(-87.0));
        assert!(exp(1e4).is_finite());
    }

    #[test]
    fn ln_and_log1p_match_std() {
        let mut worst = 0.0f64;
        for i in 1..=200_000 {
            let x = 1e-30f32 * 1.0005f32.powi(i % 140_000) + i as f32;
            worst = worst.max(rel(ln(x), f64::from(x).ln()));
        }
        for x in [1.0f32, 1.5, 2.0, 21.0, 1e-3, std::f32::consts::FRAC_1_SQRT_2, std::f32::consts::SQRT_2, 3.0e38] {
            worst = worst.max(rel(ln(x), f64::from(x).ln()).min(if x == 1.0 { 0.0 } else { 1.0 }));
        }
        assert!(worst < 3e-7, "ln {worst}");
        assert_eq!(ln(1.0), 0.0);
        let mut worst = 0.0f64;
        for i in 0..=100_000 {
            let t = (i as f32 / 100_000.0).powi(3);
            if t > 0.0 {
                worst = worst.max(rel(log1p_unit(t), f64::from(t).ln_1p()));
            }
        }
        assert!(worst < 3e-7, "log1p {worst}");
        assert_eq!(log1p_unit(0.0), 0.0);
        assert!(rel(log1p_unit(1e-12), 1e-12) < 1e-6);
    }
}
