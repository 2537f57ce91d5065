"""Reference fixtures for sconce-train: torch.optim updates and lr_scheduler values.

Each optimizer case starts from the same two parameters, applies four steps with fixed
gradients, and records the parameters after every step (f64). Schedules record the learning
rate PyTorch's schedulers produce at every step.

Writes crates/sconce-train/tests/fixtures/optim.{json,safetensors}.
Run: .venv-ref/bin/python scripts/fixtures_train.py   (see scripts/setup_venv.sh)
"""
import json
import pathlib

import torch
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/sconce-train/tests/fixtures"
torch.manual_seed(7)
STEPS = 4
P0 = [torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
GRADS = [[torch.randn_like(p) for p in P0] for _ in range(STEPS)]

CASES = [
    ("sgd_plain", "sgd", dict(lr=0.1)),
    ("sgd_momentum", "sgd", dict(lr=0.1, momentum=0.9)),
    ("sgd_dampening_wd", "sgd", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("sgd_nesterov_wd", "sgd", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    ("adam", "adam", dict(lr=0.01)),
    ("adam_wd_amsgrad", "adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True)),
    ("adamw", "adamw", dict(lr=0.01, weight_decay=0.05)),
]


def main():
    tensors, cases = {}, []
    for i, p in enumerate(P0):
        tensors[f"p{i}"] = p
    for s in range(STEPS):
        for i, g in enumerate(GRADS[s]):
            tensors[f"g{s}.{i}"] = g
    for name, kind, kw in CASES:
        ps = [p.clone().requires_grad_(True) for p in P0]
        opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind](ps, **kw)
        for s in range(STEPS):
            for p, g in zip(ps, GRADS[s]):
                p.grad = g.clone()
            opt.step()
            for i, p in enumerate(ps):
                tensors[f"{name}.after{s}.{i}"] = p.detach().clone()
        cases.append(dict(name=name, kind=kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}))

    def lrs(make, n):
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=1.0)
        sched = make(opt)
        out = []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    L = torch.optim.lr_scheduler
    schedules = dict(
        one_cycle=dict(args=dict(max_lr=0.5, total_steps=20, pct_start=0.25), lrs=lrs(
            lambda o: L.OneCycleLR(o, max_lr=0.5, total_steps=20, pct_start=0.25), 20)),
        cosine=dict(args=dict(t_max=7, eta_min=0.01), lrs=lrs(lambda o: L.CosineAnnealingLR(o, T_max=7, eta_min=0.01), 10)),
        step=dict(args=dict(step_size=3, gamma=0.3), lrs=lrs(lambda o: L.StepLR(o, step_size=3, gamma=0.3), 10)),
    )
    cases.append(dict(name="schedules", schedules=schedules))
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT / "optim.safetensors"))
    (OUT / "optim.json").write_text(json.dumps(cases, indent=1) + "\n")
    print(f"{len(cases)} cases")


if __name__ == "__main__":
    main()
