//! The one place sconce calls a matrix product: a bounds-checked, row-major
//! `dst (+)= op(lhs) · op(rhs)`, on our AVX-512 kernel for `f32` when the CPU has it, else the
//! `gemm` crate. The `unsafe` call is justified by the length checks before it.
#![allow(unsafe_code)]

use crate::kernel::Real;
use crate::sgemm::{Strided, sgemm};

/// How a row-major operand is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// As is: an `r×c` operand stored `[r][c]`.
    N,
    /// Transposed: an `r×c` operand stored `[c][r]`.
    T,
}

/// `dst[m×n] = (dst if accumulate) + op(lhs)[m×k] · op(rhs)[k×n]`, all row-major.
///
/// `threads > 1` lets gemm split the product over rayon's pool.
///
/// # Errors
/// When a slice is shorter than its declared shape (an internal bug; never UB).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    accumulate: bool,
    lhs: &[T],
    lhs_op: Op,
    rhs: &[T],
    rhs_op: Op,
    threads: usize,
) -> candle_core::Result<()> {
    if dst.len() < m * n || lhs.len() < m * k || rhs.len() < k * n {
        candle_core::bail!(
            "gemm: operand too short for {m}x{k} · {k}x{n} (dst {}, lhs {}, rhs {})",
            dst.len(),
            lhs.len(),
            rhs.len()
        );
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].iter_mut().for_each(|v| *v = T::zero());
        }
        return Ok(());
    }
    if crate::sgemm::available()
        && let (Some(l), Some(r)) = (T::as_f32(lhs), T::as_f32(rhs))
    {
        let a = match lhs_op {
            Op::N => Strided { data: l, rs: k, cs: 1 },
            Op::T => Strided { data: l, rs: 1, cs: m },
        };
        let b = match rhs_op {
            Op::N => Strided { data: r, rs: n, cs: 1 },
            Op::T => Strided { data: r, rs: 1, cs: k },
        };
        if let Some(c) = T::as_f32_mut(dst) {
            return sgemm(m, n, k, c, n, accumulate, &a, &b, threads);
        }
    }
    // Strides in elements: (column stride, row stride) of each operand as seen by the product.
    let (lhs_cs, lhs_rs) = match lhs_op {
        Op::N => (1, k as isize),
        Op::T => (m as isize, 1),
    };
    let (rhs_cs, rhs_rs) = match rhs_op {
        Op::N => (1, n as isize),
        Op::T => (k as isize, 1),
    };
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the length checks above guarantee that every element the product reads
    // (lhs: m·k, rhs: k·n) and writes (dst: m·n) with these strides lies inside its slice; T is
    // f32 or f64, both supported by gemm; dst does not alias lhs or rhs (&mut vs &).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f64], ta: Op, b: &[f64], tb: Op) -> Vec<f64> {
        let at = |i: usize, p: usize| if ta == Op::N { a[i * k + p] } else { a[p * m + i] };
        let bt = |p: usize, j: usize| if tb == Op::N { b[p * n + j] } else { b[j * k + p] };
        (0..m * n).map(|ij| (0..k).map(|p| at(ij / n, p) * bt(p, ij % n)).sum()).collect()
    }

    #[test]
    fn all_transpose_combinations_match_a_naive_product() -> candle_core::Result<()> {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.71).cos()).collect();
        for ta in [Op::N, Op::T] {
            for tb in [Op::N, Op::T] {
                let want = naive(m, n, k, &a, ta, &b, tb);
                let mut got = vec![1.0; m * n];
                gemm(m, n, k, &mut got, false, &a, ta, &b, tb, 1)?;
                assert!(got.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-12), "{ta:?} {tb:?}");
                gemm(m, n, k, &mut got, true, &a, ta, &b, tb, 2)?;
                assert!(got.iter().zip(&want).all(|(x, y)| (x - 2.0 * y).abs() < 1e-12), "{ta:?} {tb:?} acc");
            }
        }
        let mut short = vec![0.0; 3];
        assert!(gemm(m, n, k, &mut short, false, &a, Op::N, &b, Op::N, 1).is_err());
        Ok(())
    }
}
