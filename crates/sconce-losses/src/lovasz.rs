//! Lovász losses (Berman et al. 2018), the convex surrogates of the Jaccard index, with
//! segmentation_models_pytorch's semantics: Lovász hinge on logits for binary and multilabel
//! masks, Lovász-softmax over the classes present in the target for multiclass.

use candle_core::{DType, Tensor};
use sconce_core::{Activation, Error, Loss, Result, TargetKind};

use crate::region::Mode;

/// The Lovász loss (smp's `LovaszLoss`).
///
/// Binary/multilabel: errors `1 − x·(2y − 1)` sorted in decreasing order, dotted with the
/// gradient of the Lovász extension of the Jaccard loss. Multiclass: per class present in the
/// target, errors `|[y = c] − softmax(x)_c|`, the same construction, averaged over those
/// classes. `per_image` computes the loss per image and averages; ignored pixels are dropped.
/// An input with no valid pixel has loss 0 (and zero gradient).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LovaszLoss {
    mode: Mode,
    per_image: bool,
    ignore_index: Option<i64>,
}

impl LovaszLoss {
    /// Over the whole batch, nothing ignored.
    pub fn new(mode: Mode) -> Self {
        Self { mode, per_image: false, ignore_index: None }
    }

    /// Compute per image, then average.
    pub fn per_image(mut self, on: bool) -> Self {
        self.per_image = on;
        self
    }

    /// Target value whose pixels are dropped.
    pub fn ignore_index(mut self, i: i64) -> Self {
        self.ignore_index = Some(i);
        self
    }
}

/// Gradient of the Lovász extension with respect to sorted errors (Alg. 1 of the paper).
fn lovasz_grad(gt_sorted: &[f64]) -> Vec<f64> {
    let gts: f64 = gt_sorted.iter().sum();
    let (mut cum_gt, mut cum_bg) = (0.0, 0.0);
    let mut jaccard: Vec<f64> = gt_sorted
        .iter()
        .map(|&g| {
            cum_gt += g;
            cum_bg += 1.0 - g;
            1.0 - (gts - cum_gt) / (gts + cum_bg)
        })
        .collect();
    for i in (1..jaccard.len()).rev() {
        jaccard[i] -= jaccard[i - 1];
    }
    jaccard
}

/// `Σ_i f(e_(i))·g_i` with errors sorted decreasingly, `g = lovasz_grad(gt sorted alike)`.
fn sorted_dot(errors: &Tensor, gt: &[f64], hinge: bool) -> Result<Tensor> {
    if gt.is_empty() {
        return Ok((errors.sum_all()? * 0.0)?);
    }
    let values = errors.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let mut perm: Vec<u32> = (0..values.len() as u32).collect();
    perm.sort_by(|&a, &b| values[b as usize].total_cmp(&values[a as usize]));
    let gt_sorted: Vec<f64> = perm.iter().map(|&i| gt[i as usize]).collect();
    let grad = Tensor::from_vec(lovasz_grad(&gt_sorted), gt.len(), errors.device())?.to_dtype(errors.dtype())?;
    let idx = Tensor::from_vec(perm, gt.len(), errors.device())?;
    let sorted = errors.index_select(&idx, 0)?;
    let sorted = if hinge { sorted.relu()? } else { sorted };
    Ok((sorted * grad)?.sum_all()?)
}

/// Keeps the positions whose label is not `ignore`: `(values [P'], labels)`.
fn keep_valid(values: &Tensor, labels: &[f64], ignore: Option<f64>) -> Result<(Tensor, Vec<f64>)> {
    match ignore {
        None => Ok((values.clone(), labels.to_vec())),
        Some(iv) => {
            let idx: Vec<u32> = (0..labels.len() as u32).filter(|&i| labels[i as usize] != iv).collect();
            let kept: Vec<f64> = idx.iter().map(|&i| labels[i as usize]).collect();
            if idx.is_empty() {
                return Ok((values.narrow(0, 0, 0)?, kept));
            }
            let n = idx.len();
            Ok((values.index_select(&Tensor::from_vec(idx, n, values.device())?, 0)?, kept))
        }
    }
}

impl LovaszLoss {
    /// The loss over one group of pixels: logits `[M, C, S]` (a whole batch, or one image).
    fn group(&self, logits: &Tensor, labels: &[f64]) -> Result<Tensor> {
        let ignore = self.ignore_index.map(|v| v as f64);
        match self.mode {
            Mode::Binary | Mode::Multilabel => {
                let flat = logits.flatten_all()?;
                let (x, y) = keep_valid(&flat, labels, ignore)?;
                if y.iter().any(|v| *v != 0.0 && *v != 1.0) {
                    return Err(Error::data("target", "Lovász hinge needs binary {0, 1} targets"));
                }
                if y.is_empty() {
                    return Ok((flat.sum_all()? * 0.0)?);
                }
                let signs =
                    Tensor::from_vec(y.iter().map(|v| 2.0 * v - 1.0).collect::<Vec<f64>>(), y.len(), x.device())?
                        .to_dtype(x.dtype())?;
                let errors = (x * signs)?.affine(-1.0, 1.0)?;
                sorted_dot(&errors, &y, true)
            }
            Mode::Multiclass => {
                let dims = logits.dims();
                let c = dims[1];
                // [M, C, S] → [M·S, C]
                let probas = sconce_tensor::softmax(logits, 1)?.flatten_from(2)?.transpose(1, 2)?.reshape(((), c))?;
                let (p, y) = keep_valid(&probas, labels, ignore)?;
                if let Some(bad) = y.iter().find(|v| !(v.fract() == 0.0 && **v >= 0.0 && (**v as usize) < c)) {
                    return Err(Error::data("target", format!("class index {bad} is outside 0..{c}")));
                }
                let mut losses = Vec::new();
                for cls in 0..c {
                    let fg: Vec<f64> = y.iter().map(|v| if *v as usize == cls { 1.0 } else { 0.0 }).collect();
                    if fg.iter().sum::<f64>() == 0.0 {
                        continue;
                    }
                    let fg_t = Tensor::from_vec(fg.clone(), fg.len(), p.device())?.to_dtype(p.dtype())?;
                    let d = (fg_t - p.narrow(1, cls, 1)?.squeeze(1)?)?;
                    let errors = (&d * d.sign()?.detach())?;
                    losses.push(sorted_dot(&errors, &fg, false)?);
                }
                if losses.is_empty() {
                    return Ok((logits.sum_all()? * 0.0)?);
                }
                let n = losses.len() as f64;
                Ok((Tensor::stack(&losses, 0)?.sum_all()? / n)?)
            }
        }
    }
}

impl Loss for LovaszLoss {
    fn name(&self) -> &str {
        "lovasz"
    }

    fn loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        crate::kernel::check_float(logits, "logits")?;
        if logits.rank() < 2 {
            return Err(Error::shape("logits", "[N, C, ...]", logits.dims()));
        }
        let n = logits.dims()[0];
        let expect_len =
            if self.mode == Mode::Multiclass { logits.elem_count() / logits.dims()[1] } else { logits.elem_count() };
        if target.elem_count() != expect_len || target.dims().first() != Some(&n) {
            return Err(Error::shape(
                "target",
                format!("{expect_len} values for logits {:?}", logits.dims()),
                target.dims(),
            ));
        }
        let labels = target.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        if let Some((i, v)) = labels.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::data("target", format!("element {i} is {v}")));
        }
        let m = logits.reshape((n, logits.dims()[1], ()))?;
        if !self.per_image {
            return self.group(&m, &labels);
        }
        let per = labels.len() / n.max(1);
        let mut losses = Vec::with_capacity(n);
        for i in 0..n {
            losses.push(self.group(&m.narrow(0, i, 1)?, &labels[i * per..(i + 1) * per])?);
        }
        Ok((Tensor::stack(&losses, 0)?.sum_all()? / n.max(1) as f64)?)
    }

    fn activation(&self) -> Activation {
        match self.mode {
            Mode::Multiclass => Activation::Softmax { axis: 1 },
            _ => Activation::Sigmoid,
        }
    }

    fn target_kind(&self) -> TargetKind {
        match self.mode {
            Mode::Multiclass => TargetKind::ClassIndices,
            _ => TargetKind::BinaryProbabilities,
        }
    }
    fn ignore_index(&self) -> Option<i64> {
        self.ignore_index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lovasz_grad_of_a_perfect_ranking() {
        // gt sorted [1, 1, 0]: Jaccard losses 1 − (2 − k)/(2 + bg) = [0.5, 1, 1] → diffs [0.5, 0.5, 0].
        assert_eq!(lovasz_grad(&[1.0, 1.0, 0.0]), vec![0.5, 0.5, 0.0]);
        assert_eq!(lovasz_grad(&[0.0]), vec![1.0]);
    }
}
