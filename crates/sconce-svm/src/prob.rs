//! Probability outputs as LIBSVM computes them: Platt scaling with Lin, Lin & Weng's Newton
//! method, Wu, Lin & Weng's pairwise coupling, and Que & Lin's one-class density marks.

/// Fits `P(y=1|f) = 1/(1+exp(A·f+B))` to decision values `dec` with labels `> 0` / `≤ 0`
/// (LIBSVM's `sigmoid_train`). Returns `(A, B)`.
pub fn sigmoid_train(dec: &[f64], labels: &[f64]) -> (f64, f64) {
    let l = dec.len();
    let prior1 = labels.iter().filter(|&&y| y > 0.0).count() as f64;
    let prior0 = l as f64 - prior1;
    let (max_iter, min_step, sigma, eps) = (100, 1e-10, 1e-12, 1e-5);
    let hi = (prior1 + 1.0) / (prior1 + 2.0);
    let lo = 1.0 / (prior0 + 2.0);
    let t: Vec<f64> = labels.iter().map(|&y| if y > 0.0 { hi } else { lo }).collect();
    let (mut a, mut b) = (0.0, ((prior0 + 1.0) / (prior1 + 1.0)).ln());
    let fval_at = |a: f64, b: f64| {
        let mut f = 0.0;
        for i in 0..l {
            let fapb = dec[i] * a + b;
            f += if fapb >= 0.0 {
                t[i] * fapb + (1.0 + (-fapb).exp()).ln()
            } else {
                (t[i] - 1.0) * fapb + (1.0 + fapb.exp()).ln()
            };
        }
        f
    };
    let mut fval = fval_at(a, b);
    let mut iter = 0;
    while iter < max_iter {
        let (mut h11, mut h22, mut h21, mut g1, mut g2) = (sigma, sigma, 0.0, 0.0, 0.0);
        for i in 0..l {
            let fapb = dec[i] * a + b;
            let (p, q) = if fapb >= 0.0 {
                let e = (-fapb).exp();
                (e / (1.0 + e), 1.0 / (1.0 + e))
            } else {
                let e = fapb.exp();
                (1.0 / (1.0 + e), e / (1.0 + e))
            };
            let d2 = p * q;
            h11 += dec[i] * dec[i] * d2;
            h22 += d2;
            h21 += dec[i] * d2;
            let d1 = t[i] - p;
            g1 += dec[i] * d1;
            g2 += d1;
        }
        if g1.abs() < eps && g2.abs() < eps {
            break;
        }
        let det = h11 * h22 - h21 * h21;
        let da = -(h22 * g1 - h21 * g2) / det;
        let db = -(-h21 * g1 + h11 * g2) / det;
        let gd = g1 * da + g2 * db;
        let mut step = 1.0;
        while step >= min_step {
            let (na, nb) = (a + step * da, b + step * db);
            let nf = fval_at(na, nb);
            if nf < fval + 0.0001 * step * gd {
                a = na;
                b = nb;
                fval = nf;
                break;
            }
            step /= 2.0;
        }
        if step < min_step {
            tracing::debug!("Platt scaling: line search failed");
            break;
        }
        iter += 1;
    }
    if iter >= max_iter {
        tracing::debug!("Platt scaling reached its iteration limit");
    }
    (a, b)
}

/// `P(y=1|f)` under `(A, B)` (LIBSVM's `sigmoid_predict`).
pub fn sigmoid_predict(dec: f64, a: f64, b: f64) -> f64 {
    let fapb = dec * a + b;
    if fapb >= 0.0 { (-fapb).exp() / (1.0 + (-fapb).exp()) } else { 1.0 / (1.0 + fapb.exp()) }
}

/// Class probabilities from pairwise probabilities `r[i][j] = P(i | i or j)` (Wu, Lin & Weng
/// 2004, method 2; LIBSVM's `multiclass_probability`).
pub fn multiclass_probability(r: &[Vec<f64>]) -> Vec<f64> {
    let k = r.len();
    let max_iter = 100.max(k);
    let eps = 0.005 / k as f64;
    let mut p = vec![1.0 / k as f64; k];
    let mut q = vec![vec![0.0; k]; k];
    for t in 0..k {
        q[t][t] = 0.0;
        for j in 0..t {
            q[t][t] += r[j][t] * r[j][t];
            q[t][j] = q[j][t];
        }
        for j in t + 1..k {
            q[t][t] += r[j][t] * r[j][t];
            q[t][j] = -r[j][t] * r[t][j];
        }
    }
    let mut qp = vec![0.0; k];
    let mut iter = 0;
    while iter < max_iter {
        let mut pqp = 0.0;
        for t in 0..k {
            qp[t] = (0..k).map(|j| q[t][j] * p[j]).sum();
            pqp += p[t] * qp[t];
        }
        let max_error = (0..k).map(|t| (qp[t] - pqp).abs()).fold(0.0, f64::max);
        if max_error < eps {
            break;
        }
        for t in 0..k {
            let diff = (-qp[t] + pqp) / q[t][t];
            p[t] += diff;
            pqp = (pqp + diff * (diff * q[t][t] + 2.0 * qp[t])) / (1.0 + diff) / (1.0 + diff);
            for j in 0..k {
                qp[j] = (qp[j] + diff * q[t][j]) / (1.0 + diff);
                p[j] /= 1.0 + diff;
            }
        }
        iter += 1;
    }
    if iter >= max_iter {
        tracing::debug!("pairwise coupling reached its iteration limit");
    }
    p
}

/// The ten density marks of a one-class model from its sorted training decision values
/// (LIBSVM's `svm_one_class_probability`); `None` when fewer than 5 values lie on either side
/// of 0.
pub fn one_class_marks(mut dec: Vec<f64>) -> Option<Vec<f64>> {
    let l = dec.len();
    dec.sort_by(f64::total_cmp);
    let nr_marks = 10;
    let neg = dec.iter().position(|&v| v >= 0.0).unwrap_or(0);
    let pos = l - neg;
    if neg < nr_marks / 2 || pos < nr_marks / 2 {
        return None;
    }
    let mid = nr_marks / 2;
    let mut tmp = vec![0.0; nr_marks + 1];
    for i in 0..mid {
        tmp[i] = dec[i * neg / mid];
    }
    tmp[mid] = 0.0;
    for i in mid + 1..=nr_marks {
        tmp[i] = dec[neg - 1 + (i - mid) * pos / mid];
    }
    Some((0..nr_marks).map(|i| (tmp[i] + tmp[i + 1]) / 2.0).collect())
}

/// The probability that a point with decision value `dec` is normal (LIBSVM's
/// `predict_one_class_probability`).
pub fn one_class_probability(marks: &[f64], dec: f64) -> f64 {
    let n = marks.len();
    if n == 0 {
        return if dec > 0.0 { 1.0 } else { 0.0 };
    }
    if dec < marks[0] {
        0.001
    } else if dec > marks[n - 1] {
        0.999
    } else {
        (1..n).find(|&i| dec < marks[i]).map_or(0.0, |i| i as f64 / n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platt_fits_a_separable_sigmoid() {
        // Decision values that separate the classes: A must be negative (P rises with f).
        let dec: Vec<f64> = (0..40).map(|i| f64::from(i) / 10.0 - 2.0).collect();
        let labels: Vec<f64> = dec.iter().map(|&f| if f > 0.0 { 1.0 } else { -1.0 }).collect();
        let (a, b) = sigmoid_train(&dec, &labels);
        assert!(a < -1.0, "{a}");
        assert!(sigmoid_predict(2.0, a, b) > 0.9 && sigmoid_predict(-2.0, a, b) < 0.1);
        // The gradient conditions LIBSVM stops on hold at the returned point.
        // 19 positives, 21 negatives: Platt's smoothed targets.
        let (hi, lo) = (20.0 / 21.0, 1.0 / 23.0);
        let (mut g1, mut g2) = (0.0, 0.0);
        for (&f, &y) in dec.iter().zip(&labels) {
            let t = if y > 0.0 { hi } else { lo };
            let p = 1.0 / (1.0 + (a * f + b).exp());
            g1 += f * (t - p);
            g2 += t - p;
        }
        assert!(g1.abs() < 1e-5 && g2.abs() < 1e-5, "{g1} {g2}");
    }

    #[test]
    fn coupling_recovers_consistent_pairwise_probabilities() {
        // r_ij = p_i/(p_i+p_j) for p = (0.5, 0.3, 0.2) is exactly consistent.
        let p = [0.5, 0.3, 0.2];
        let r: Vec<Vec<f64>> =
            (0..3).map(|i| (0..3).map(|j| if i == j { 0.0 } else { p[i] / (p[i] + p[j]) }).collect()).collect();
        let out = multiclass_probability(&r);
        for (a, b) in out.iter().zip(p) {
            assert!((a - b).abs() < 1e-3, "{out:?}");
        }
        assert!((out.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn one_class_marks_bin_by_density() {
        let dec: Vec<f64> = (-10..10).map(|i| f64::from(i) + 0.5).collect();
        let marks = one_class_marks(dec).unwrap();
        assert_eq!(marks.len(), 10);
        assert!(marks.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(one_class_probability(&marks, -100.0), 0.001);
        assert_eq!(one_class_probability(&marks, 100.0), 0.999);
        assert!(one_class_marks(vec![1.0, 2.0, -1.0]).is_none());
    }
}
