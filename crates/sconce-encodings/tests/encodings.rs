//! Encodings: round trips for every n from 2 to 1000, the valid-codeword decoder against brute
//! force, Hadamard orthogonality, losses against their formulas, and bad input as errors.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use sconce_core::{Error, HeadSpec, OutputEncoding, SeededRng};
use sconce_encodings::{BinaryCode, BitTraining, CodeAssignment, Hadamard, OneHot, sylvester};

/// Confident logits for the targets an encoding produces: ±10 for bits, 10·one-hot for classes.
fn perfect_logits(e: &dyn OutputEncoding, y: &Tensor) -> Result<Tensor> {
    Ok(e.encode(y)?.affine(20.0, -10.0)?)
}

#[test]
fn decode_inverts_encode_for_every_n_up_to_1000() -> Result<()> {
    let dev = Device::Cpu;
    for n in 2..=1000usize {
        // Every class for n ≤ 128; beyond, 64 spread-out classes and the last one (decoding is
        // an n×n product, so all classes at every n would be cubic).
        let mut ks: Vec<u32> = if n <= 128 { (0..n as u32).collect() } else { (0..n as u32).step_by(n / 64).collect() };
        if ks.last() != Some(&(n as u32 - 1)) {
            ks.push(n as u32 - 1);
        }
        let y = Tensor::from_vec(ks.clone(), ks.len(), &dev)?;
        let encodings: Vec<Box<dyn OutputEncoding>> = if n <= 64 || n % 97 == 0 {
            vec![
                Box::new(OneHot::new(n)?),
                Box::new(BinaryCode::new(n, CodeAssignment::Plain)?),
                Box::new(BinaryCode::new(n, CodeAssignment::Gray)?),
                Box::new(Hadamard::new(n)?),
            ]
        } else {
            // The n×n one-hot/Hadamard decodes are quadratic; the code book is what varies with n.
            vec![
                Box::new(BinaryCode::new(n, CodeAssignment::Plain)?),
                Box::new(BinaryCode::new(n, CodeAssignment::Gray)?),
            ]
        };
        for e in &encodings {
            let got = e.decode(&perfect_logits(e.as_ref(), &y)?)?.to_vec1::<u32>()?;
            assert_eq!(got, ks, "n = {n}, code_len {}", e.code_len());
        }
    }
    assert_eq!(OneHot::binary().decode(&Tensor::new(&[[-3.0f32], [2.0]], &dev)?)?.to_vec1::<u32>()?, vec![0, 1]);
    Ok(())
}

#[test]
fn binary_codes_are_short_distinct_and_gray_is_gray() -> Result<()> {
    for n in [2usize, 3, 4, 5, 26, 100, 1000] {
        let e = BinaryCode::new(n, CodeAssignment::Gray)?;
        let want = (n as f64).log2().ceil() as usize;
        assert_eq!(e.code_len(), want.max(1), "n = {n}");
        let mut codes = e.codes().to_vec();
        for w in e.codes().windows(2) {
            assert_eq!(w[0].iter().zip(&w[1]).filter(|(a, b)| a != b).count(), 1, "Gray neighbours differ in one bit");
        }
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), n);
    }
    Ok(())
}

#[test]
fn valid_codeword_decoder_equals_brute_force_likelihood() -> Result<()> {
    let mut rng = SeededRng::new(4);
    for n in [3usize, 5, 11, 26] {
        let e = BinaryCode::new(n, CodeAssignment::Plain)?;
        let q = e.code_len();
        let z: Vec<f64> = (0..4 * q).map(|_| rng.normal() * 3.0).collect();
        let logits = Tensor::from_vec(z.clone(), (4, q), &Device::Cpu)?;
        let scores = e.scores(&logits)?.to_vec2::<f64>()?;
        for (row, s) in scores.iter().enumerate() {
            // log P(code) = Σ_b log σ(±z_b), normalised over the n valid codes.
            let ll: Vec<f64> = e
                .codes()
                .iter()
                .map(|c| {
                    c.iter()
                        .enumerate()
                        .map(|(b, &bit)| {
                            let x = z[row * q + b];
                            let v = if bit == 1 { x } else { -x };
                            -(1.0 + (-v).exp()).ln()
                        })
                        .sum()
                })
                .collect();
            let m = ll.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + ll.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            for (k, v) in ll.iter().enumerate() {
                assert!((s[k] - (v - lse)).abs() < 1e-10, "n {n} row {row} class {k}: {} vs {}", s[k], v - lse);
            }
        }
    }
    Ok(())
}

#[test]
fn hadamard_rows_are_orthogonal_and_the_head_projects_when_needed() -> Result<()> {
    for m in [1usize, 2, 4, 16, 64, 512] {
        let h = sylvester(m)?;
        for i in 0..m {
            for j in 0..m {
                let dot: i64 = h[i].iter().zip(&h[j]).map(|(a, b)| i64::from(*a) * i64::from(*b)).sum();
                assert_eq!(dot, if i == j { m as i64 } else { 0 }, "m {m} rows {i},{j}");
            }
        }
    }
    assert!(sylvester(12).is_err());
    let e = Hadamard::new(10)?;
    match e.head(64)? {
        HeadSpec::Fixed { projection, weight, normalize_input, learned_scale, bias } => {
            assert_eq!(projection, None);
            assert_eq!(weight.dims(), &[10, 64]);
            assert!(normalize_input && bias);
            assert!((learned_scale.unwrap_or(0.0) - 1.0 / 10f64.sqrt()).abs() < 1e-15);
            let w = weight.to_dtype(DType::F64)?;
            let gram = w.matmul(&w.t()?)?.to_vec2::<f64>()?;
            for (i, row) in gram.iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    assert_eq!(*v, if i == j { 64.0 } else { 0.0 });
                }
            }
        }
        other => anyhow::bail!("expected a fixed head, got {other:?}"),
    }
    // DenseNet121's 1024 features are a power of two; 1000 is not: project to 1024.
    assert!(matches!(e.head(1000)?, HeadSpec::Fixed { projection: Some(1024), .. }));
    assert!(matches!(Hadamard::new(100)?.head(32)?, HeadSpec::Fixed { projection: Some(128), .. }));
    Ok(())
}

#[test]
fn losses_match_their_formulas_and_have_gradients() -> Result<()> {
    let dev = Device::Cpu;
    // Binary one-hot: BCE of logit 1.5 with label 1 and of −0.5 with label 1: softplus(−1.5), softplus(0.5).
    let z = Var::new(&[[1.5f64], [-0.5]], &dev)?;
    let y = Tensor::new(&[1u32, 1], &dev)?;
    let l = OneHot::binary().loss(z.as_tensor(), &y)?.to_scalar::<f64>()?;
    let sp = |x: f64| (1.0 + x.exp()).ln();
    assert!((l - (sp(-1.5) + sp(0.5)) / 2.0).abs() < 1e-12);
    // Per-bit BCE vs codeword CE on a 5-class code; both differentiable.
    let mut rng = SeededRng::new(2);
    let z = Var::from_tensor(&Tensor::from_vec((0..12).map(|_| rng.normal()).collect::<Vec<f64>>(), (4, 3), &dev)?)?;
    let y = Tensor::new(&[0u32, 4, 2, 3], &dev)?;
    for training in [BitTraining::PerBitBce, BitTraining::Codeword] {
        let e = BinaryCode::new(5, CodeAssignment::Plain)?.training(training);
        let l = e.loss(z.as_tensor(), &y)?;
        assert!(l.to_scalar::<f64>()?.is_finite());
        let g = l.backward()?;
        assert!(g.get(z.as_tensor()).is_some(), "{training:?}");
    }
    // Codeword CE equals −mean log softmax(C·z)[y].
    let e = BinaryCode::new(5, CodeAssignment::Plain)?.training(BitTraining::Codeword);
    let s = e.scores(z.as_tensor())?.to_vec2::<f64>()?;
    let want = -(s[0][0] + s[1][4] + s[2][2] + s[3][3]) / 4.0;
    assert!((e.loss(z.as_tensor(), &y)?.to_scalar::<f64>()? - want).abs() < 1e-12);
    // Per pixel: [N, q, H, W] logits with [N, H, W] labels.
    let e = BinaryCode::new(6, CodeAssignment::Gray)?;
    let maps = Tensor::new(&[[[0u32, 5], [3, 1]]], &dev)?;
    let t = e.encode(&maps)?;
    assert_eq!(t.dims(), &[1, 3, 2, 2]);
    assert_eq!(e.decode(&t.affine(20.0, -10.0)?)?.to_vec3::<u32>()?, maps.to_vec3::<u32>()?);
    Ok(())
}

#[test]
fn bad_input_is_an_error() -> Result<()> {
    let dev = Device::Cpu;
    assert!(matches!(OneHot::new(1), Err(Error::Config { .. })));
    assert!(matches!(BinaryCode::new(1, CodeAssignment::Plain), Err(Error::Config { .. })));
    assert!(matches!(Hadamard::new(0), Err(Error::Config { .. })));
    let short = BinaryCode::with_code_len(9, 3, CodeAssignment::Plain).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(short.contains("3 bits") && short.contains("9 classes"), "{short}");
    let e = BinaryCode::new(5, CodeAssignment::Plain)?;
    assert!(matches!(e.encode(&Tensor::new(&[5u32], &dev)?), Err(Error::Data { .. })));
    assert!(matches!(e.scores(&Tensor::zeros((2, 4), DType::F32, &dev)?), Err(Error::Shape { .. })));
    assert!(matches!(
        OneHot::new(3)?.loss(&Tensor::zeros((2, 3), DType::F32, &dev)?, &Tensor::new(&[0u32], &dev)?),
        Err(Error::Shape { .. })
    ));
    assert!(Hadamard::new(4)?.head(0).is_err());
    Ok(())
}
