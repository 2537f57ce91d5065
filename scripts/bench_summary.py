"""Summarises scripts/bench_backbones.sh output: per case, the median samples/s and peak RSS
of each side and the ratio of the medians (sconce / PyTorch; >= 1.0 meets the target).

Usage: .venv-ref/bin/python scripts/bench_summary.py bench.jsonl
"""
import json
import statistics
import sys


def main(path: str) -> None:
    runs: dict[tuple, dict[str, list]] = {}
    for line in open(path):
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        side = "pytorch" if "impl" in r else "sconce"
        key = (r["model"], r["bench"], r["batch_size"], r["img_size"])
        runs.setdefault(key, {}).setdefault(side, []).append(r)
    print("| model | bench | batch × size | sconce | PyTorch | ratio | sconce peak MiB | PyTorch peak MiB | runs |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for (model, bench, batch, img), sides in runs.items():
        s, t = sides.get("sconce", []), sides.get("pytorch", [])
        if not s or not t:
            continue
        med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
        ss, ts = med(s, "samples_per_sec"), med(t, "samples_per_sec")
        print(
            f"| {model} | {bench} | {batch} × {img}² | {ss:.2f} | {ts:.2f} | {ss / ts:.2f} | "
            f"{med(s, 'peak_rss_mib'):.0f} | {med(t, 'peak_rss_mib'):.0f} | {len(s)}+{len(t)} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
