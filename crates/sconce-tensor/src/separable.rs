//! A separable linear map over the last two axes, `out[oh, ow] = s · Σ wh·ww·x[ih, iw]`, with
//! its exact transpose as the backward pass. Average pooling (plain, padded, adaptive, global)
//! and nearest/bilinear resizing are all instances of it.
#![allow(unsafe_code)]

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::kernel::{Real, contiguous_slice};

/// For each output index along one axis, the input indices it reads and their weights (CSR).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Taps {
    /// `offsets[o]..offsets[o + 1]` are output `o`'s taps.
    offsets: Vec<usize>,
    pub(crate) index: Vec<usize>,
    pub(crate) weight: Vec<f64>,
    in_len: usize,
}

impl Taps {
    /// Builds taps from one list of `(input index, weight)` per output index.
    pub(crate) fn from_lists(in_len: usize, lists: impl IntoIterator<Item = Vec<(usize, f64)>>) -> Self {
        let mut t = Taps { offsets: vec![0], index: Vec::new(), weight: Vec::new(), in_len };
        for list in lists {
            for (i, w) in list {
                t.index.push(i);
                t.weight.push(w);
            }
            t.offsets.push(t.index.len());
        }
        t
    }

    pub(crate) fn out_len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// True when every output reads exactly one input (nearest resizing): then the map is a
    /// gather (and its transpose a scatter-add) with no temporary row.
    fn single_tap(&self) -> bool {
        self.offsets.windows(2).all(|w| w[1] - w[0] == 1)
    }

    /// True for exact ×2 nearest duplication along this axis (output `o` reads input `o/2`
    /// with weight 1): the loops then copy or add pairs, which vectorise.
    fn doubles(&self) -> bool {
        self.single_tap()
            && self.out_len() == 2 * self.in_len
            && self.index.iter().enumerate().all(|(o, &i)| i == o / 2)
            && self.weight.iter().all(|&w| w == 1.0)
    }

    #[cfg(test)]
    pub(crate) fn offsets_for(&self, o: usize) -> std::ops::Range<usize> {
        self.offsets[o]..self.offsets[o + 1]
    }
}

/// The map (or, with `transposed`, its adjoint) as a candle custom op on `[N, C, H, W]`.
#[derive(Debug, Clone)]
pub(crate) struct SeparableMap {
    pub(crate) name: &'static str,
    pub(crate) h: Arc<Taps>,
    pub(crate) w: Arc<Taps>,
    pub(crate) scale: f64,
    pub(crate) transposed: bool,
}

impl SeparableMap {
    fn run<T: Real>(&self, x: &[T], dims: &[usize]) -> candle_core::Result<(Vec<T>, Shape)> {
        let (n, c, ih, iw) = (dims[0], dims[1], dims[2], dims[3]);
        let (oh_len, ow_len, in_h, in_w) = if self.transposed {
            (self.h.in_len, self.w.in_len, self.h.out_len(), self.w.out_len())
        } else {
            (self.h.out_len(), self.w.out_len(), self.h.in_len, self.w.in_len)
        };
        if (ih, iw) != (in_h, in_w) {
            candle_core::bail!("{}: input plane {ih}x{iw} does not match the map's {in_h}x{in_w}", self.name);
        }
        let planes = n * c;
        let len = planes * oh_len * ow_len;
        if planes == 0 || len == 0 {
            return Ok((vec![T::zero(); len], Shape::from((n, c, oh_len, ow_len))));
        }
        let h_w: Vec<T> = self.h.weight.iter().map(|&v| T::from_f64(v)).collect();
        let w_w: Vec<T> = self.w.weight.iter().map(|&v| T::from_f64(v)).collect();
        let scale = T::from_f64(self.scale);
        let (h, w) = (&*self.h, &*self.w);
        let gather = h.single_tap() && w.single_tap();
        // Nearest ×2 along W with unit row weights: pair copies (forward) and pair sums (backward).
        let pairs = gather && w.doubles() && self.scale == 1.0 && self.h.weight.iter().all(|&v| v == 1.0);
        if !self.transposed {
            // The forward map writes every output element once: no zeroing pass over the
            // (upsampled, often 64 MiB) output.
            let mut out: Vec<T> = Vec::with_capacity(len);
            let spare = &mut out.spare_capacity_mut()[..len];
            spare.par_chunks_mut(oh_len * ow_len).zip(x.par_chunks(ih * iw)).for_each(|(o, x)| {
                if pairs {
                    for oh in 0..oh_len {
                        let src = &x[h.index[oh] * iw..(h.index[oh] + 1) * iw];
                        let dst = &mut o[oh * ow_len..(oh + 1) * ow_len];
                        for (pair, &v) in dst.chunks_exact_mut(2).zip(src) {
                            pair[0].write(v);
                            pair[1].write(v);
                        }
                    }
                } else if gather {
                    for oh in 0..oh_len {
                        let wh = h_w[oh] * scale;
                        let src = &x[h.index[oh] * iw..(h.index[oh] + 1) * iw];
                        let dst = &mut o[oh * ow_len..(oh + 1) * ow_len];
                        for ((d, &j), &ww) in dst.iter_mut().zip(&w.index).zip(&w_w) {
                            d.write(wh * ww * src[j]);
                        }
                    }
                } else {
                    let mut col = vec![T::zero(); iw];
                    for oh in 0..oh_len {
                        // Vertical pass into one row, then the horizontal taps.
                        col.iter_mut().for_each(|v| *v = T::zero());
                        for k in h.offsets[oh]..h.offsets[oh + 1] {
                            let wh = h_w[k];
                            let src = &x[h.index[k] * iw..(h.index[k] + 1) * iw];
                            for (cv, &s) in col.iter_mut().zip(src) {
                                *cv += wh * s;
                            }
                        }
                        let dst = &mut o[oh * ow_len..(oh + 1) * ow_len];
                        for (ow, d) in dst.iter_mut().enumerate() {
                            let mut acc = T::zero();
                            for k in w.offsets[ow]..w.offsets[ow + 1] {
                                acc += w_w[k] * col[w.index[k]];
                            }
                            d.write(acc * scale);
                        }
                    }
                }
            });
            // SAFETY: every branch above writes all `oh_len·ow_len` elements of each plane
            // (`doubles()` makes `ow_len = 2·iw` for the pair copies), and the planes tile `len`.
            unsafe { out.set_len(len) };
            return Ok((out, Shape::from((n, c, oh_len, ow_len))));
        }
        let mut out = vec![T::zero(); len];
        out.par_chunks_mut(oh_len * ow_len).zip(x.par_chunks(ih * iw)).for_each(|(o, x)| {
            if pairs {
                for gh in 0..ih {
                    let g = &x[gh * iw..(gh + 1) * iw];
                    let dst = &mut o[h.index[gh] * ow_len..(h.index[gh] + 1) * ow_len];
                    for (d, pair) in dst.iter_mut().zip(g.chunks_exact(2)) {
                        *d += pair[0] + pair[1];
                    }
                }
            } else if gather {
                // Scatter-add each gradient row onto its source row.
                for gh in 0..ih {
                    let wh = h_w[gh] * scale;
                    let g = &x[gh * iw..(gh + 1) * iw];
                    let dst = &mut o[h.index[gh] * ow_len..(h.index[gh] + 1) * ow_len];
                    for ((&gv, &j), &ww) in g.iter().zip(&w.index).zip(&w_w) {
                        dst[j] += wh * ww * gv;
                    }
                }
            } else {
                // out[ih', iw'] += s · wh · ww · g[oh, ow] over every tap (ih', wh) of oh, (iw', ww) of ow.
                let mut row = vec![T::zero(); ow_len];
                for gh in 0..ih {
                    row.iter_mut().for_each(|v| *v = T::zero());
                    let g = &x[gh * iw..(gh + 1) * iw];
                    for (gw, &gv) in g.iter().enumerate() {
                        for k in w.offsets[gw]..w.offsets[gw + 1] {
                            row[w.index[k]] += w_w[k] * gv;
                        }
                    }
                    for k in h.offsets[gh]..h.offsets[gh + 1] {
                        let wh = h_w[k] * scale;
                        let dst = &mut o[h.index[k] * ow_len..(h.index[k] + 1) * ow_len];
                        for (d, &r) in dst.iter_mut().zip(&row) {
                            *d += wh * r;
                        }
                    }
                }
            }
        });
        Ok((out, Shape::from((n, c, oh_len, ow_len))))
    }

    /// Applies the map to `x` `[N, C, H, W]`, recording the backward pass.
    pub(crate) fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op1(self)
    }
}

impl CustomOp1 for SeparableMap {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims();
        if dims.len() != 4 {
            candle_core::bail!("{}: expected [N, C, H, W], got {dims:?}", self.name);
        }
        match storage {
            CpuStorage::F32(_) => {
                let (v, s) = self.run(contiguous_slice::<f32>(storage, layout, self.name)?, dims)?;
                Ok((CpuStorage::F32(v), s))
            }
            CpuStorage::F64(_) => {
                let (v, s) = self.run(contiguous_slice::<f64>(storage, layout, self.name)?, dims)?;
                Ok((CpuStorage::F64(v), s))
            }
            other => candle_core::bail!("{}: expected f32 or f64, got {:?}", self.name, other.dtype()),
        }
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let adjoint = SeparableMap { transposed: !self.transposed, ..self.clone() };
        Ok(Some(grad_res.contiguous()?.apply_op1(adjoint)?))
    }
}
