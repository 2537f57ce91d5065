//! ECOC with SVMs as the bit learners (through `Fit`/`Predict`, the encodings crate naming no
//! SVM crate): exhaustive and Hadamard codes on five Gaussian clusters, with the training
//! samples in an order where many columns meet a 0 bit first (LIBSVM's raw sign would invert
//! those bits), classify almost every point.

use anyhow::{Result, ensure};
use candle_core::{Device, Tensor};
use sconce::encodings::{Decoding, Ecoc};
use sconce::svm::{KernelType, SvmParams};
use sconce::{Predict, SeededRng};

#[test]
fn svms_learn_the_bits_of_exhaustive_and_hadamard_codes() -> Result<()> {
    let dev = Device::Cpu;
    let centres = [(0.0, 0.0), (6.0, 0.0), (0.0, 6.0), (6.0, 6.0), (3.0, 10.0)];
    let mut rng = SeededRng::new(11);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        // Descending class order: the last class comes first in every column's data.
        for (c, &(cx, cy)) in centres.iter().enumerate().rev() {
            xs.extend([cx + rng.normal() as f32, cy + rng.normal() as f32]);
            ys.push(c as u32);
        }
    }
    let n = ys.len();
    let x = Tensor::from_vec(xs, (n, 2), &dev)?;
    let y = Tensor::from_vec(ys.clone(), n, &dev)?;
    let svm = SvmParams::c_svc().kernel(KernelType::Linear).c(1.0);
    for (name, code) in [
        ("exhaustive", Ecoc::exhaustive(5)?),
        ("hadamard", Ecoc::hadamard(5)?),
        ("hadamard, logistic decoding", Ecoc::hadamard(5)?.decoding(Decoding::Logistic)),
    ] {
        let model = code.fit_bits(&svm, &x, &y)?;
        let pred = model.predict(&x)?.to_vec1::<u32>()?;
        let acc = pred.iter().zip(&ys).filter(|(a, b)| a == b).count() as f64 / n as f64;
        ensure!(acc > 0.95, "{name}: accuracy {acc}");
    }
    Ok(())
}
