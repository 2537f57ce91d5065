//! The shared traits in use: a checked estimator through `ParamGuard`/`Fit`/`Predict`, a toy
//! backbone and a toy output encoding, as the leaf crates will implement them.

use candle_core::{DType, Device, ModuleT, Tensor};
use sconce_core::{Backbone, Error, Fit, HeadSpec, OutputEncoding, ParamGuard, Predict, Result, Validate, check};

/// Unchecked parameters of a nearest-centroid classifier.
#[derive(Debug, Clone)]
struct CentroidParams(CentroidValidParams);

#[derive(Debug, Clone)]
struct CentroidValidParams {
    num_classes: usize,
}

impl Validate for CentroidValidParams {
    fn validate(&self) -> Result<()> {
        if self.num_classes < 2 {
            return Err(Error::config("num_classes", format!("must be >= 2, got {}", self.num_classes)));
        }
        Ok(())
    }
}

impl ParamGuard for CentroidParams {
    type Checked = CentroidValidParams;
    fn check_ref(&self) -> Result<&CentroidValidParams> {
        self.0.validate()?;
        Ok(&self.0)
    }
    fn check(self) -> Result<CentroidValidParams> {
        self.0.validate()?;
        Ok(self.0)
    }
}

struct Centroids(Tensor);

impl Fit for CentroidValidParams {
    type Model = Centroids;
    fn fit(&self, x: &Tensor, y: &Tensor) -> Result<Centroids> {
        let [n, f] = check::dims::<2>(x, "x", "[N, F]")?;
        check::finite(x, "x")?;
        let labels = check::labels(y, self.num_classes, "y")?;
        if labels.len() != n {
            return Err(Error::shape("y", format!("[{n}] (one label per row of x)"), y.dims()));
        }
        let xs = x.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        let mut sums = vec![vec![0.0; f]; self.num_classes];
        let mut counts = vec![0usize; self.num_classes];
        for (row, &l) in xs.iter().zip(&labels) {
            counts[l as usize] += 1;
            for (s, v) in sums[l as usize].iter_mut().zip(row) {
                *s += v;
            }
        }
        let flat: Vec<f64> =
            sums.iter().zip(&counts).flat_map(|(s, &c)| s.iter().map(move |v| v / c.max(1) as f64)).collect();
        Ok(Centroids(Tensor::from_vec(flat, (self.num_classes, f), x.device())?))
    }
}

impl Predict for Centroids {
    fn decision_function(&self, x: &Tensor) -> Result<Tensor> {
        let [_, f] = check::dims::<2>(x, "x", "[N, F]")?;
        let [_, want] = check::dims::<2>(&self.0, "centroids", "[K, F]")?;
        if f != want {
            return Err(Error::shape("x", format!("[N, {want}] (the feature count seen in fit)"), x.dims()));
        }
        let x = x.to_dtype(DType::F64)?;
        // Negative squared distance to each centroid: [N, K].
        let d = x.unsqueeze(1)?.broadcast_sub(&self.0.unsqueeze(0)?)?.sqr()?.sum(2)?;
        Ok(d.neg()?)
    }
    fn predict(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.decision_function(x)?.argmax(1)?)
    }
}

#[test]
fn fit_goes_through_the_param_guard() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::new(&[[0.0f32, 0.0], [0.2, 0.1], [5.0, 5.0], [5.1, 4.9]], &dev)?;
    let y = Tensor::new(&[0u32, 0, 1, 1], &dev)?;
    let model = CentroidParams(CentroidValidParams { num_classes: 2 }).fit(&x, &y)?;
    let pred = model.predict(&Tensor::new(&[[4.0f32, 4.0], [1.0, 0.0]], &dev)?)?;
    assert_eq!(pred.to_vec1::<u32>()?, vec![1, 0]);

    // Invalid parameters never reach the estimator.
    let bad = CentroidParams(CentroidValidParams { num_classes: 1 }).fit(&x, &y);
    assert!(matches!(bad, Err(Error::Config { ref param, .. }) if param == "num_classes"));
    assert!(CentroidParams(CentroidValidParams { num_classes: 0 }).check().is_err());

    // Bad input is an error, never a panic.
    assert!(matches!(model.predict(&Tensor::zeros((2, 3), DType::F32, &dev)?), Err(Error::Shape { .. })));
    let y_bad = Tensor::new(&[0u32, 0, 2, 1], &dev)?;
    let params = CentroidParams(CentroidValidParams { num_classes: 2 });
    assert!(matches!(params.fit(&x, &y_bad), Err(Error::Data { .. })));
    let x_nan = Tensor::new(&[[0.0f32, f32::NAN], [0.2, 0.1], [5.0, 5.0], [5.1, 4.9]], &dev)?;
    assert!(matches!(params.fit(&x_nan, &y), Err(Error::Data { .. })));
    Ok(())
}

/// A backbone that average-pools by 2 five times, keeping channels.
struct Pyramid;

impl ModuleT for Pyramid {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let feats = self.forward_features(xs, train).map_err(Error::into_candle)?;
        match feats.last() {
            Some(f) => f.mean_keepdim(3)?.mean_keepdim(2)?.flatten_from(1),
            None => candle_core::bail!("no features"),
        }
    }
}

impl Backbone for Pyramid {
    fn in_channels(&self) -> usize {
        3
    }
    fn feature_channels(&self) -> &[usize] {
        &[3, 3, 3, 3, 3]
    }
    fn feature_strides(&self) -> &[usize] {
        &[2, 4, 8, 16, 32]
    }
    fn forward_features(&self, x: &Tensor, _train: bool) -> Result<Vec<Tensor>> {
        let [_, c, _, _] = check::dims::<4>(x, "pyramid input", "[N, C, H, W]")?;
        if c != 3 {
            return Err(Error::shape("pyramid input", "3 channels", x.dims()));
        }
        let mut out = Vec::new();
        let mut cur = x.clone();
        for _ in 0..5 {
            cur = cur.avg_pool2d(2)?;
            out.push(cur.clone());
        }
        Ok(out)
    }
}

#[test]
fn a_backbone_is_usable_as_a_trait_object() -> anyhow::Result<()> {
    let b: Box<dyn Backbone> = Box::new(Pyramid);
    let x = Tensor::ones((2, 3, 64, 64), DType::F32, &Device::Cpu)?;
    let feats = b.forward_features(&x, false)?;
    for (f, s) in feats.iter().zip(b.feature_strides()) {
        assert_eq!(f.dims(), &[2, 3, 64 / s, 64 / s]);
    }
    assert_eq!(b.num_features(), 3);
    assert_eq!(b.forward_t(&x, true)?.dims(), &[2, 3]);
    let err = b.forward_t(&Tensor::ones((2, 3, 64), DType::F32, &Device::Cpu)?, false);
    assert!(err.is_err_and(|e| e.to_string().contains("rank 4")));
    Ok(())
}

/// One-hot with a learned head: scores are the logits themselves.
struct Plain(usize);

impl OutputEncoding for Plain {
    fn num_classes(&self) -> usize {
        self.0
    }
    fn code_len(&self) -> usize {
        self.0
    }
    fn encode(&self, labels: &Tensor) -> Result<Tensor> {
        let l = check::labels(labels, self.0, "labels")?;
        let mut v = vec![0f32; l.len() * self.0];
        for (i, &c) in l.iter().enumerate() {
            v[i * self.0 + c as usize] = 1.0;
        }
        Ok(Tensor::from_vec(v, (l.len(), self.0), labels.device())?)
    }
    fn head(&self, _in_features: usize) -> Result<HeadSpec> {
        Ok(HeadSpec::Learned { out_features: self.0, bias: true })
    }
    fn loss(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let t = self.encode(labels)?;
        Ok(logits.sub(&t)?.sqr()?.mean_all()?)
    }
    fn scores(&self, logits: &Tensor) -> Result<Tensor> {
        Ok(logits.clone())
    }
}

#[test]
fn decode_defaults_to_argmax_of_scores() -> anyhow::Result<()> {
    let e: &dyn OutputEncoding = &Plain(3);
    let logits = Tensor::new(&[[0.1f32, 2.0, -1.0], [3.0, 0.0, 0.0]], &Device::Cpu)?;
    assert_eq!(e.decode(&logits)?.to_vec1::<u32>()?, vec![1, 0]);
    let labels = Tensor::new(&[1u32, 0], &Device::Cpu)?;
    assert_eq!(e.encode(&labels)?.to_vec2::<f32>()?, vec![vec![0.0, 1.0, 0.0], vec![1.0, 0.0, 0.0]]);
    assert!(e.encode(&Tensor::new(&[3u32], &Device::Cpu)?).is_err());
    assert!(matches!(e.head(16)?, HeadSpec::Learned { out_features: 3, bias: true }));
    Ok(())
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn shared_types_are_send_and_sync() {
    assert_send_sync::<Error>();
    assert_send_sync::<sconce_core::LoadReport>();
    assert_send_sync::<sconce_core::SeededRng>();
    assert_send_sync::<sconce_core::Init>();
    assert_send_sync::<HeadSpec>();
}
