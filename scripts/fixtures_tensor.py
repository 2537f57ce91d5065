"""Reference fixtures for sconce-tensor, computed by PyTorch.

Writes crates/sconce-tensor/tests/fixtures/{NAME}.safetensors (inputs, outputs, upstream
gradients and input gradients) and {NAME}.json (the case list with each op's arguments).
Shapes are those ResNet50, DenseNet121 and a U-Net meet on 250x250 inputs, with the channel
and batch counts reduced so the files stay small.

Run: .venv-ref/bin/python scripts/fixtures_tensor.py   (see scripts/setup_venv.sh)
"""
import json
import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/sconce-tensor/tests/fixtures"
torch.manual_seed(20261128)
DT = {"f32": torch.float32, "f64": torch.float64}


class Book:
    def __init__(self, name):
        self.name, self.cases, self.tensors = name, [], {}

    def add(self, case, fn, *inputs, dtype="f64"):
        """Runs fn on inputs (requires_grad), backprops a random upstream gradient."""
        xs = [t.to(DT[dtype]).detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
        y = fn(*xs)
        gy = torch.randn_like(y)
        y.backward(gy)
        name = case["name"]
        case["dtype"] = dtype
        self.cases.append(case)
        for i, x in enumerate(xs):
            self.tensors[f"{name}.x{i}"] = x.detach().contiguous()
            if x.grad is not None:
                self.tensors[f"{name}.gx{i}"] = x.grad.contiguous()
        self.tensors[f"{name}.y"] = y.detach().contiguous()
        self.tensors[f"{name}.gy"] = gy.contiguous()

    def save(self):
        OUT.mkdir(parents=True, exist_ok=True)
        save_file(self.tensors, str(OUT / f"{self.name}.safetensors"))
        (OUT / f"{self.name}.json").write_text(json.dumps(self.cases, indent=1) + "\n")
        size = (OUT / f"{self.name}.safetensors").stat().st_size
        print(f"{self.name}: {len(self.cases)} cases, {size / 1e6:.2f} MB")


def pooling():
    b = Book("pool")

    def maxp(name, shape, k, s, p, d=(1, 1), ceil=False, dtype="f64"):
        case = dict(name=name, op="max_pool2d", kernel=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
        b.add(case, lambda x: F.max_pool2d(x, k, s, p, d, ceil_mode=ceil), torch.randn(shape), dtype=dtype)

    def avgp(name, shape, k, s, p, ceil=False, include=True, div=None, dtype="f64"):
        case = dict(name=name, op="avg_pool2d", kernel=k, stride=s, padding=p, ceil_mode=ceil,
                    count_include_pad=include, divisor_override=div)
        b.add(case, lambda x: F.avg_pool2d(x, k, s, p, ceil, include, div), torch.randn(shape), dtype=dtype)

    # ResNet50 / DenseNet121 stem on 250x250: conv s2 gives 125, max pool 3/2/1 gives 63.
    maxp("stem_maxpool_125", [1, 2, 125, 125], (3, 3), (2, 2), (1, 1), dtype="f32")
    # U-Net down path on 250x250: 250 -> 125 -> 62 -> 31 -> 15.
    maxp("unet_maxpool_250", [1, 1, 250, 250], (2, 2), (2, 2), (0, 0), dtype="f32")
    maxp("unet_maxpool_125", [1, 2, 125, 125], (2, 2), (2, 2), (0, 0), dtype="f32")
    maxp("unet_maxpool_31", [2, 3, 31, 31], (2, 2), (2, 2), (0, 0))
    maxp("maxpool_ceil_dilated", [1, 2, 13, 11], (3, 2), (2, 1), (1, 1), (2, 1), True)
    maxp("maxpool_ceil_pad", [2, 2, 9, 10], (3, 3), (2, 2), (1, 1), (1, 1), True)
    # DenseNet121 transitions on 250x250: 63 -> 31 -> 15 -> 7.
    avgp("densenet_transition_63", [1, 3, 63, 63], (2, 2), (2, 2), (0, 0))
    avgp("densenet_transition_15", [1, 3, 15, 15], (2, 2), (2, 2), (0, 0))
    avgp("avgpool_pad_exclude_ceil", [2, 2, 11, 9], (3, 3), (2, 2), (1, 1), True, False)
    avgp("avgpool_pad_include", [1, 2, 10, 7], (3, 2), (2, 2), (1, 1), False, True)
    avgp("avgpool_divisor", [1, 2, 8, 9], (2, 3), (1, 2), (0, 1), False, True, 5)
    for name, shape, out in [("adaptive_avg_global_8", [2, 6, 8, 8], (1, 1)),
                             ("adaptive_avg_7x10_to_3x4", [1, 2, 7, 10], (3, 4)),
                             ("adaptive_avg_5x5_to_7x6", [1, 2, 5, 5], (7, 6))]:
        b.add(dict(name=name, op="adaptive_avg_pool2d", output=out),
              lambda x, out=out: F.adaptive_avg_pool2d(x, out), torch.randn(shape))
    for name, shape, out in [("adaptive_max_9x9_to_4x4", [1, 3, 9, 9], (4, 4)),
                             ("adaptive_max_7x10_to_3x1", [2, 2, 7, 10], (3, 1))]:
        b.add(dict(name=name, op="adaptive_max_pool2d", output=out),
              lambda x, out=out: F.adaptive_max_pool2d(x, out), torch.randn(shape))
    b.save()


def resizing():
    b = Book("resize")

    def rs(name, shape, size, mode, align=None, dtype="f64"):
        case = dict(name=name, op="resize", size=size, mode=mode, align_corners=align)
        fn = lambda x: F.interpolate(x, size=size, mode=mode, align_corners=align)
        b.add(case, fn, torch.randn(shape), dtype=dtype)

    # U-Net up path on 250x250: 15 -> 31 -> 62 -> 125 -> 250 (arbitrary sizes, not x2).
    rs("bilinear_125_to_250", [1, 1, 125, 125], (250, 250), "bilinear", False, dtype="f32")
    rs("bilinear_62_to_125", [1, 2, 62, 62], (125, 125), "bilinear", False, dtype="f32")
    rs("bilinear_align_15_to_31", [2, 2, 15, 15], (31, 31), "bilinear", True)
    rs("bilinear_down_63_to_17x20", [1, 2, 63, 63], (17, 20), "bilinear", False)
    rs("bilinear_align_down_9x7_to_4x1", [1, 2, 9, 7], (4, 1), "bilinear", True)
    rs("nearest_x2_125_to_250", [1, 1, 125, 125], (250, 250), "nearest", dtype="f32")
    rs("nearest_31_to_62x63", [2, 2, 31, 31], (62, 63), "nearest")
    rs("nearest_down_11x13_to_5x4", [1, 2, 11, 13], (5, 4), "nearest")
    rs("nearest_exact_15_to_31", [1, 2, 15, 15], (31, 31), "nearest-exact")
    rs("nearest_exact_down_10_to_3x7", [1, 2, 10, 10], (3, 7), "nearest-exact")
    b.save()


def stable():
    """Each op runs in f64 and in f32 on the same input and upstream gradient. The f32 case is
    checked against the f64 result (the exact answer to f32 precision): PyTorch's own f32
    logsumexp gradient at 1e4 is off by 2e-4 relative (it computes exp(x - lse) with lse
    rounded to f32), and sconce does better than that."""
    b = Book("stable")
    extreme = torch.tensor([-1e4, -1e3, -100.0, -30.0, -17.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 17.0, 30.0, 100.0, 1e3, 1e4])
    x3 = torch.randn(4, 5, 3) * 3
    x3[0, :, 0] = torch.tensor([1e4, -1e4, 0.0, 5.0, 1e4])
    x3[1, 2, :] = torch.tensor([-1e4, 1e4, 30.0])
    ops = []
    for op, fn in [("sigmoid", torch.sigmoid), ("softplus", F.softplus), ("log_sigmoid", F.logsigmoid)]:
        ops.append((f"{op}_extreme", dict(op=op), fn, extreme))
        ops.append((f"{op}_random", dict(op=op), fn, torch.randn(3, 4, 5) * 5))
    for axis in [0, 1, 2]:
        ops.append((f"logsumexp_{axis}", dict(op="logsumexp", axis=axis), lambda t, a=axis: torch.logsumexp(t, a), x3))
        ops.append((f"log_softmax_{axis}", dict(op="log_softmax", axis=axis), lambda t, a=axis: F.log_softmax(t, a), x3))
        ops.append((f"softmax_{axis}", dict(op="softmax", axis=axis), lambda t, a=axis: F.softmax(t, a), x3))
    for name, case, fn, x in ops:
        x64 = x.to(torch.float64).requires_grad_(True)
        y = fn(x64)
        gy = torch.randn_like(y)
        y.backward(gy)
        for dtype in ["f64", "f32"]:
            d = DT[dtype]
            key = f"{name}_{dtype}"
            b.cases.append(dict(case, name=key, dtype=dtype, reference="f64"))
            b.tensors[f"{key}.x0"] = x64.detach().to(d).contiguous()
            b.tensors[f"{key}.y"] = y.detach().to(d).contiguous()
            b.tensors[f"{key}.gy"] = gy.to(d).contiguous()
            b.tensors[f"{key}.gx0"] = x64.grad.to(d).contiguous()
    b.save()


def convolution():
    b = Book("conv")

    def cv(name, x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1, bias=True, dtype="f64"):
        s2 = lambda v: list(v) if isinstance(v, (tuple, list)) else [v, v]
        case = dict(name=name, op="conv2d", stride=s2(stride), padding=s2(padding), dilation=s2(dilation),
                    groups=groups, bias=bias)
        fan_in = w_shape[1] * w_shape[2] * w_shape[3]
        inputs = [torch.randn(x_shape), torch.randn(w_shape) / fan_in ** 0.5]
        if bias:
            inputs.append(torch.randn(w_shape[0]))
        fn = lambda x, w, *bb: F.conv2d(x, w, bb[0] if bb else None, stride, padding, dilation, groups)
        b.add(case, fn, *inputs, dtype=dtype)

    # ResNet50 / DenseNet121 stem on a 250x250 image (output 125x125).
    cv("stem_7x7_s2_250", [1, 3, 250, 250], [4, 3, 7, 7], 2, 3, bias=False, dtype="f32")
    # ResNet50 bottleneck shapes at 250x250 input: 63x63 (layer1), 32x32 (layer2) ...
    cv("bottleneck_1x1_63", [1, 4, 63, 63], [3, 4, 1, 1], bias=False, dtype="f32")
    cv("bottleneck_3x3_s2_63", [1, 4, 63, 63], [3, 4, 3, 3], 2, 1, bias=False, dtype="f32")
    cv("downsample_1x1_s2_63", [1, 4, 63, 63], [5, 4, 1, 1], 2, 0, bias=False, dtype="f32")
    cv("bottleneck_3x3_16", [2, 6, 16, 16], [6, 6, 3, 3], 1, 1)
    # candle 0.9's wrong conv when C == H == W: [N, 64, 64, 64].
    cv("c_eq_h_eq_w_64", [1, 64, 64, 64], [4, 64, 3, 3], 1, 1, dtype="f32")
    cv("c_eq_h_eq_w_4", [2, 4, 4, 4], [3, 4, 3, 3], 1, 1)
    # Non-square input with stride 2 (candle's input-gradient shape bug): H=7, W=8 and 9x12.
    cv("nonsquare_s2_7x8", [2, 3, 7, 8], [4, 3, 3, 3], 2, 1)
    cv("nonsquare_s2_9x12_k5", [1, 2, 9, 12], [3, 2, 5, 5], 2, 2)
    cv("rect_kernel_stride", [1, 3, 10, 11], [4, 3, 3, 2], (2, 3), (1, 0))
    cv("dilated", [1, 3, 12, 10], [2, 3, 3, 3], 1, 2, 2)
    cv("groups_2", [2, 4, 9, 9], [6, 2, 3, 3], 1, 1, groups=2)
    cv("depthwise", [1, 4, 8, 8], [4, 1, 3, 3], 2, 1, groups=4)
    # U-Net 3x3 same-padding convs at 125x125 and DenseNet's growth conv at 31x31.
    cv("unet_3x3_125", [1, 2, 125, 125], [3, 2, 3, 3], 1, 1, dtype="f32")
    cv("densenet_3x3_31", [1, 8, 31, 31], [4, 8, 3, 3], 1, 1, bias=False)

    def ct(name, x_shape, w_shape, stride=1, padding=0, output_padding=0, dilation=1, groups=1, bias=True):
        s2 = lambda v: list(v) if isinstance(v, (tuple, list)) else [v, v]
        case = dict(name=name, op="conv_transpose2d", stride=s2(stride), padding=s2(padding),
                    output_padding=s2(output_padding), dilation=s2(dilation), groups=groups, bias=bias)
        inputs = [torch.randn(x_shape), torch.randn(w_shape) / (w_shape[0] * w_shape[2] * w_shape[3]) ** 0.5]
        if bias:
            inputs.append(torch.randn(w_shape[1] * groups))
        fn = lambda x, w, *bb: F.conv_transpose2d(x, w, bb[0] if bb else None, stride, padding, output_padding,
                                                   groups, dilation)
        b.add(case, fn, *inputs)

    # The classic U-Net's 2x2 stride-2 up-convolution (31 -> 62 at 250x250) and friends.
    ct("unet_upconv_2x2_s2_31", [1, 8, 31, 31], [8, 4, 2, 2], 2)
    ct("upconv_3x3_s2_p1_op1", [2, 3, 7, 6], [3, 4, 3, 3], 2, 1, 1)
    ct("upconv_3x3_s1_p1", [1, 3, 9, 8], [3, 2, 3, 3], 1, 1)
    ct("upconv_groups_dilated", [1, 4, 5, 6], [4, 3, 3, 2], (2, 1), (1, 0), (1, 0), 2, 2)
    b.save()


def batch_norm():
    """Training mode (batch statistics, running-stat update with momentum 0.1 and None) and
    eval mode, as torch.nn.functional.batch_norm computes them."""
    b = Book("batch_norm")
    for name, shape, dtype in [("bn_2x3x15x15", [2, 3, 15, 15], "f64"), ("bn_4x8x8x8", [4, 8, 8, 8], "f64"),
                               ("bn_1d_6x5", [6, 5], "f64"), ("bn_unet_1x2x125x63", [1, 2, 125, 63], "f32"),
                               ("bn_shifted_3x2x7x9", [3, 2, 7, 9], "f64")]:
        c = shape[1]
        x = torch.randn(shape) * 2 + 3
        if name.startswith("bn_shifted"):
            x = x + 1e4  # large mean: a one-pass E[x^2] - E[x]^2 variance loses every digit here
        w, bias = torch.randn(c), torch.randn(c)
        rm, rv = torch.randn(c), torch.rand(c) + 0.5
        for training in [True, False]:
            for momentum in ([0.1, None] if training else [0.1]):
                tag = f"{name}_{'train' if training else 'eval'}" + ("_cma" if momentum is None else "")
                rm_t, rv_t = rm.to(DT[dtype]).clone(), rv.to(DT[dtype]).clone()
                # momentum None in PyTorch means a cumulative average with factor 1/num_batches_tracked;
                # F.batch_norm takes the factor directly: num_batches_tracked = 3 gives 1/3.
                factor = 0.1 if momentum is not None else 1.0 / 3.0
                fn = lambda x_, w_, b_: F.batch_norm(x_, rm_t, rv_t, w_, b_, training, factor, 1e-5)
                case = dict(name=tag, op="batch_norm", training=training, momentum=momentum,
                            num_batches_tracked=3, eps=1e-5)
                b.tensors[f"{tag}.running_mean_in"] = rm.to(DT[dtype]).clone()
                b.tensors[f"{tag}.running_var_in"] = rv.to(DT[dtype]).clone()
                b.add(case, fn, x, w, bias, dtype=dtype)
                b.tensors[f"{tag}.running_mean_out"] = rm_t.contiguous()
                b.tensors[f"{tag}.running_var_out"] = rv_t.contiguous()
    b.save()


if __name__ == "__main__":
    print("torch", torch.__version__)
    torch.set_num_threads(2)
    pooling()
    resizing()
    stable()
    convolution()
    batch_norm()
