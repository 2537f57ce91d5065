//! ECOC: the designed minimum row distances, decoding against brute force and round trips,
//! bits trained by a binary estimator through `Fit`/`Predict`, and bad input.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use sconce_core::{Error, Fit, OutputEncoding, Predict, SeededRng};
use sconce_encodings::{Decoding, Ecoc};

fn brute_min_distance(rows: &[Vec<i8>]) -> f64 {
    let mut d = f64::INFINITY;
    for i in 0..rows.len() {
        for j in i + 1..rows.len() {
            let dij: f64 = rows[i]
                .iter()
                .zip(&rows[j])
                // Allwein, Schapire & Singer: any entry pair with a 0 counts ½ (0 vs 0 included).
                .map(|(a, b)| {
                    if *a == 0 || *b == 0 {
                        0.5
                    } else if a == b {
                        0.0
                    } else {
                        1.0
                    }
                })
                .sum();
            d = d.min(dij);
        }
    }
    d
}

#[test]
fn codes_have_their_designed_row_distances() -> Result<()> {
    for n in 3..=7usize {
        let e = Ecoc::exhaustive(n)?;
        assert_eq!(e.code_len(), (1 << (n - 1)) - 1);
        assert_eq!(e.min_row_distance(), (1u64 << (n - 2)) as f64, "exhaustive n = {n}");
        assert_eq!(brute_min_distance(e.rows()), e.min_row_distance());
        // Columns are distinct, not complementary and not constant.
        let cols: Vec<Vec<i8>> = (0..e.code_len()).map(|b| e.rows().iter().map(|r| r[b]).collect()).collect();
        for (i, c) in cols.iter().enumerate() {
            assert!(c.contains(&1) && c.contains(&-1), "constant column {i}");
            for d in &cols[i + 1..] {
                let neg: Vec<i8> = d.iter().map(|v| -v).collect();
                assert!(c != d && *c != neg);
            }
        }
    }
    for n in 2usize..=70 {
        let e = Ecoc::hadamard(n)?;
        let m = (n + 1).next_power_of_two();
        // Column 0 (all +1) dropped; for n = 2 also the constant and the complementary column.
        assert_eq!(e.code_len(), if n == 2 { 1 } else { m - 1 }, "n = {n}");
        let d = if n == 2 { 1.0 } else { m as f64 / 2.0 };
        assert_eq!(e.min_row_distance(), d, "every pair differs in m/2 places (n = {n})");
        for b in 0..e.code_len() {
            let col: Vec<i8> = e.rows().iter().map(|r| r[b]).collect();
            assert!(col.contains(&1) && col.contains(&-1), "n = {n}: column {b} is constant");
        }
    }
    for (n, sparse) in [(10usize, false), (26, false), (10, true)] {
        let a = Ecoc::random(n, sparse, 50, 7)?;
        let b = Ecoc::random(n, sparse, 50, 7)?;
        assert_eq!(a, b, "seeded");
        assert!(a.min_row_distance() >= Ecoc::random(n, sparse, 1, 7)?.min_row_distance());
        assert!(a.min_row_distance() >= 1.0);
        assert_eq!(brute_min_distance(a.rows()), a.min_row_distance());
    }
    Ok(())
}

#[test]
fn decoding_round_trips_and_equals_brute_force() -> Result<()> {
    let dev = Device::Cpu;
    for e in [Ecoc::exhaustive(6)?, Ecoc::hadamard(20)?, Ecoc::random(13, true, 20, 3)?] {
        let n = e.num_classes();
        let y = Tensor::from_vec((0..n as u32).collect::<Vec<_>>(), n, &dev)?;
        let perfect = e.encode(&y)?.affine(2.0, -1.0)?.affine(5.0, 0.0)?; // ±5 margins, 0 stays 0
        for d in [Decoding::Hamming, Decoding::Logistic] {
            let got = e.clone().decoding(d).decode(&perfect)?.to_vec1::<u32>()?;
            assert_eq!(got, (0..n as u32).collect::<Vec<_>>(), "{d:?}");
        }
        // Hamming scores are log-probabilities: each row's exp sums to 1, and two classes
        // differ by their difference in disagreeing bits.
        let hs = e
            .clone()
            .decoding(Decoding::Hamming)
            .scores(&perfect)?
            .to_dtype(candle_core::DType::F64)?
            .to_vec2::<f64>()?;
        for (row, sr) in hs.iter().enumerate() {
            assert!((sr.iter().map(|v| v.exp()).sum::<f64>() - 1.0).abs() < 1e-5, "row {row}");
            // The input's sign per bit: + for the row's +1 and for its 0 (a zero margin), − for −1.
            let sign: Vec<i8> = e.rows()[row].iter().map(|&v| if v < 0 { -1 } else { 1 }).collect();
            let disagree =
                |k: usize| e.rows()[k].iter().zip(&sign).filter(|(m, s)| **m != 0 && *m != *s).count() as f64;
            let other = (row + 1) % n;
            assert!((sr[row] - sr[other] - (disagree(other) - disagree(row))).abs() < 1e-4, "row {row}");
        }
        // Logistic loss-based scores against a direct sum of log σ(M·z).
        let mut rng = SeededRng::new(1);
        let l = e.code_len();
        let z: Vec<f64> = (0..3 * l).map(|_| rng.normal() * 2.0).collect();
        let s = e.scores(&Tensor::from_vec(z.clone(), (3, l), &dev)?)?.to_vec2::<f64>()?;
        for (row, sr) in s.iter().enumerate() {
            let ll: Vec<f64> = e
                .rows()
                .iter()
                .map(|code| {
                    code.iter()
                        .enumerate()
                        .filter(|(_, m)| **m != 0)
                        .map(|(b, &m)| -(1.0 + (-f64::from(m) * z[row * l + b]).exp()).ln())
                        .sum()
                })
                .collect();
            let mx = ll.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + ll.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            for k in 0..n {
                assert!((sr[k] - (ll[k] - lse)).abs() < 1e-9);
            }
        }
    }
    Ok(())
}

/// A linear binary classifier: `w = mean(x | 1) − mean(x | 0)`, threshold halfway.
struct MeanDifference;
struct Linear {
    w: Tensor,
    b: f64,
}

impl Fit for MeanDifference {
    type Model = Linear;
    fn fit(&self, x: &Tensor, y: &Tensor) -> sconce_core::Result<Linear> {
        let x = x.to_dtype(DType::F64)?;
        let y = y.to_dtype(DType::F64)?.unsqueeze(1)?;
        let m1 = (x.broadcast_mul(&y)?.sum(0)? / y.sum_all()?.to_scalar::<f64>()?)?;
        let y0 = y.affine(-1.0, 1.0)?;
        let m0 = (x.broadcast_mul(&y0)?.sum(0)? / y0.sum_all()?.to_scalar::<f64>()?)?;
        let w = (&m1 - &m0)?;
        let b = -((&m1 + &m0)? * 0.5)?.mul(&w)?.sum_all()?.to_scalar::<f64>()?;
        Ok(Linear { w, b })
    }
}

impl Predict for Linear {
    fn decision_function(&self, x: &Tensor) -> sconce_core::Result<Tensor> {
        Ok((x.to_dtype(DType::F64)?.matmul(&self.w.unsqueeze(1)?)?.squeeze(1)? + self.b)?)
    }
    fn predict(&self, x: &Tensor) -> sconce_core::Result<Tensor> {
        Ok(self.decision_function(x)?.ge(0.0)?.to_dtype(DType::U32)?)
    }
}

#[test]
fn bits_trained_by_a_binary_estimator() -> Result<()> {
    // Four well-separated blobs in 2-D; ECOC bits learned by a mean-difference classifier.
    let dev = Device::Cpu;
    let centres = [(0.0, 0.0), (8.0, 0.0), (0.0, 8.0), (8.0, 8.0)];
    let mut rng = SeededRng::new(5);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        for (c, &(cx, cy)) in centres.iter().enumerate() {
            xs.extend([cx + rng.normal(), cy + rng.normal()]);
            ys.push(c as u32);
        }
    }
    let n = ys.len();
    let x = Tensor::from_vec(xs, (n, 2), &dev)?;
    let y = Tensor::from_vec(ys.clone(), n, &dev)?;
    let code = Ecoc::exhaustive(4)?;
    let model = code.fit_bits(&MeanDifference, &x, &y)?;
    let pred = model.predict(&x)?.to_vec1::<u32>()?;
    let acc = pred.iter().zip(&ys).filter(|(a, b)| a == b).count() as f64 / n as f64;
    assert!(acc > 0.95, "accuracy {acc}");
    // A column that sees only one side of the labels is an error, not a silent model.
    let one_class = Tensor::from_vec(vec![0u32; n], n, &dev)?;
    assert!(matches!(code.fit_bits(&MeanDifference, &x, &one_class), Err(Error::Data { .. })));
    Ok(())
}

#[test]
fn bad_codes_are_errors() -> Result<()> {
    assert!(Ecoc::exhaustive(2).is_err());
    assert!(Ecoc::exhaustive(12).is_err());
    assert!(Ecoc::from_matrix(vec![vec![1, -1], vec![1, -1]]).is_err());
    assert!(Ecoc::from_matrix(vec![vec![1, -1], vec![1]]).is_err());
    assert!(Ecoc::from_matrix(vec![vec![1, 2], vec![1, -1]]).is_err());
    assert!(Ecoc::random(5, false, 0, 1).is_err());
    let e = Ecoc::hadamard(5)?;
    assert!(matches!(e.encode(&Tensor::new(&[5u32], &Device::Cpu)?), Err(Error::Data { .. })));
    Ok(())
}
