#!/usr/bin/env python3
"""kiln against PyTorch on the GPU machine, in one run.

For each workload this runs `kiln bench WORKLOAD --device D --json` and then
times PyTorch's equivalent in this process (CUDA events, warm-up, median of
fresh random inputs), printing one JSON object per workload with both times
and the ratio peer_s / kiln_s (above 1: kiln is faster). Workloads with no
PyTorch peer (deps:N, which measures graph replay) print kiln's own figures:
kiln_s (replayed), launch_s (launched one by one) and replay_speedup.

    python3 bench/gpu_compare.py --kiln build-device/bin/kiln [--device cuda] [--reps 10]
"""
import argparse
import json
import statistics
import subprocess

import torch


def time_torch(fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def dims(spec):
    return [int(d) for d in spec.split(":")[1].split("x")]


def rand(shape, dtype):
    return torch.rand(shape, device="cuda", dtype=dtype) * 2 - 1


def peer(spec, dtype, reps):
    """(peer name, seconds) for what kiln's workload computes; None if it has none."""
    kind = spec.split(":")[0]
    if kind == "deps":
        return None
    t = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    if kind == "matmul":
        m, k, n = dims(spec)
        a, b = rand((m, k), t), rand((k, n), t)
        return "torch.matmul (cuBLAS)", time_torch(lambda: torch.matmul(a, b), reps)
    if kind == "gemv":
        m, k = dims(spec)
        a, x = rand((m, k), t), rand((k, 1), t)
        return "torch.matmul (cuBLAS gemv)", time_torch(lambda: torch.matmul(a, x), reps)
    if kind == "softmax":
        r, c = dims(spec)
        x = rand((r, c), t)
        return "torch.softmax", time_torch(lambda: torch.softmax(x, dim=1), reps)
    if kind in ("chain", "add"):
        (n,) = dims(spec)
        # A device copy moving the same bytes: the workload reads 2n and writes n elements.
        src = rand((3 * n // 2,), t)
        dst = torch.empty_like(src)
        return "device copy (same bytes)", time_torch(lambda: dst.copy_(src), reps)
    raise ValueError(f"no PyTorch peer for {spec}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kiln", default="build-device/bin/kiln")
    p.add_argument("--device", default="cuda")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--workloads", nargs="*", default=[
        "matmul:4096x4096x4096:f16", "matmul:4096x4096x4096:f32", "gemv:11008x4096:f16",
        "chain:268435456:f32", "softmax:8192x8192:f32", "deps:200:f32"])
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # the f32 bar is without TF32
    torch.backends.cudnn.allow_tf32 = False
    for item in args.workloads:
        spec, dtype = item.rsplit(":", 1)
        out = subprocess.run([args.kiln, "bench", spec, "--device", args.device, "--dtype", dtype, "--json",
                              "--reps", str(args.reps)], capture_output=True, text=True)
        if out.returncode != 0:
            print(json.dumps({"workload": spec, "dtype": dtype, "device": args.device,
                              "error": out.stderr.strip()[-400:]}), flush=True)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["gpu"] = torch.cuda.get_device_name()
        found = peer(spec, dtype, args.reps)
        if found:
            name, secs = found
            row.update({"peer": name, "peer_s": secs, "kiln_vs_peer": secs / row["kiln_s"]})
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
