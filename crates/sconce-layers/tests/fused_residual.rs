//! `BatchNorm2d::forward_conv_add_relu_t` against the layers in a row (conv → batch norm →
//! `add_relu`), with and without a conv bias, in training (values, running statistics,
//! gradients) and eval mode.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Module, ModuleT, Tensor, Var};
use sconce_layers::{BatchNorm2d, Conv2d, ConvOptions, ParamStore};
use sconce_testutil::assert_close;

#[test]
fn fused_residual_step_equals_the_layers_in_a_row() -> Result<()> {
    let dev = Device::Cpu;
    for bias in [false, true] {
        let store = ParamStore::new();
        let vb = store.builder(7, DType::F64, &dev);
        let conv = Conv2d::new(&vb.pp("conv"), 4, 6, 3, ConvOptions::default().padding(1).bias(bias))?;
        let bn_fused = BatchNorm2d::new(&vb.pp("bn_fused"), 6)?;
        let bn_plain = BatchNorm2d::new(&vb.pp("bn_plain"), 6)?;
        let x = Var::from_tensor(&(Tensor::randn(0f64, 1.0, (2, 4, 7, 5), &dev)? + 0.3)?)?;
        let r = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 6, 7, 5), &dev)?)?;
        let gy = Tensor::randn(0f64, 1.0, (2, 6, 7, 5), &dev)?;
        for train in [true, false] {
            let fused = bn_fused.forward_conv_add_relu_t(&conv, x.as_tensor(), r.as_tensor(), train)?;
            let z = conv.forward(x.as_tensor())?;
            let plain = sconce_tensor::add_relu(&bn_plain.forward_t(&z, train)?, r.as_tensor())?;
            let what = format!("bias {bias} train {train}");
            assert_close(&format!("{what} y"), &fused, &plain, 1e-12, 1e-12)?;
            assert_close(
                &format!("{what} running mean"),
                &bn_fused.running_mean(),
                &bn_plain.running_mean(),
                1e-12,
                1e-12,
            )?;
            assert_close(
                &format!("{what} running var"),
                &bn_fused.running_var(),
                &bn_plain.running_var(),
                1e-12,
                1e-12,
            )?;
            let gf = (&fused * &gy)?.sum_all()?.backward()?;
            let gp = (&plain * &gy)?.sum_all()?.backward()?;
            for (name, t) in [("dx", x.as_tensor()), ("dresidual", r.as_tensor()), ("dw", conv.weight().as_tensor())] {
                let (a, b) = (gf.get(t).context("fused gradient")?, gp.get(t).context("plain gradient")?);
                assert_close(&format!("{what} {name}"), a, b, 1e-10, 1e-10)?;
            }
        }
        // Trained once in each mode: the statistics moved, so the comparison above was not of
        // two untouched layers.
        assert!(bn_fused.num_batches_tracked() == 1);
    }
    Ok(())
}
