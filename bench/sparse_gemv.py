#!/usr/bin/env python3
"""Does a 2:4-compressed GEMV beat the dense one on this CPU? Both as kiln
graph IR, timed by `kiln run FILE --profile --no-check` (one kernel each),
alternating, medians.

Dense: y = W x, W f32[out, in]. Compressed 2:4: each group of 4 inputs keeps 2
weights, `vals` f32[out, in/2], and `sel` u8[out, in/2] says which of the 4
(0..3) each kept weight multiplies. The kernel never gathers: `xe` f32[4, in/2]
holds x[4 * (j / 2) + c] for c = 0..3 at column j (a copy of x, 8 floats per
group of 4 inputs, made once per product), and each kept weight picks its x
from those four rows by three compares and selects, all loads contiguous.
`xe` is an input here: building it (8 floats per 4 inputs, 32 KB at in =
4096) is not timed, so the ratio is the GEMV's alone.
Bytes: 4 * in per row dense, 2.5 * in compressed (f32 values and a byte of
selector each). The matrix should be larger than the last-level cache.

    python3 bench/sparse_gemv.py --kiln build/bin/kiln [--out 8192] [--in 4096] [--rounds 5]
"""
import argparse
import os
import re
import statistics
import subprocess
import tempfile


def dense_graph(o, k):
    return (f'graph dense() {{\n  %0 = input "w" : f32[{o}, {k}]\n  %1 = input "x" : f32[{k}, 1]\n'
            f'  %2 = contract %0, %1 : f32[{o}, 1]\n  return %2\n}}\n')


def sparse_graph(o, k):
    h = k // 2
    lines = [f'graph sparse24() {{', f'  %0 = input "vals" : f32[{o}, {h}]', f'  %1 = input "sel" : u8[{o}, {h}]',
             f'  %2 = input "xe" : f32[4, {h}]']
    n, xs, cs = 3, [], []
    for c in range(4):
        lines.append(f'  %{n} = slice %2 {{starts=[{c}, 0], stops=[{c + 1}, {h}], steps=[1, 1]}} : f32[1, {h}]')
        lines.append(f'  %{n + 1} = expand %{n} : f32[{o}, {h}]')
        xs.append(n + 1)
        n += 2
    for c in range(3):
        lines.append(f'  %{n} = const {c} : u8[]')
        lines.append(f'  %{n + 1} = reshape %{n} : u8[1, 1]')
        lines.append(f'  %{n + 2} = expand %{n + 1} : u8[{o}, {h}]')
        lines.append(f'  %{n + 3} = cmpeq %1, %{n + 2} : bool[{o}, {h}]')
        cs.append(n + 3)
        n += 4
    lines.append(f'  %{n} = where %{cs[2]}, %{xs[2]}, %{xs[3]} : f32[{o}, {h}]')
    lines.append(f'  %{n + 1} = where %{cs[1]}, %{xs[1]}, %{n} : f32[{o}, {h}]')
    lines.append(f'  %{n + 2} = where %{cs[0]}, %{xs[0]}, %{n + 1} : f32[{o}, {h}]')
    lines.append(f'  %{n + 3} = mul %0, %{n + 2} : f32[{o}, {h}]')
    lines.append(f'  %{n + 4} = reduce_sum %{n + 3} {{axes=[1]}} : f32[{o}, 1]')
    lines.append(f'  return %{n + 4}')
    return '\n'.join(lines) + '\n}\n'


def kernel_us(kiln, path, device):
    out = subprocess.run([kiln, 'run', path, '--device', device, '--profile', '--no-check'], capture_output=True,
                         text=True, check=True).stdout
    m = re.search(r'^\s+([0-9.]+) us\s', out, re.M)
    if not m:
        raise SystemExit(f'no kernel time in the output of kiln run {path}:\n{out}')
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--kiln', default='build/bin/kiln')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--out', type=int, default=8192)
    ap.add_argument('--in', dest='inputs', type=int, default=4096)
    ap.add_argument('--rounds', type=int, default=5)
    a = ap.parse_args()
    if a.inputs % 4 or a.inputs < 4 or a.out < 1 or a.rounds < 1:
        raise SystemExit('--in must be a positive multiple of 4, --out and --rounds positive')
    with tempfile.TemporaryDirectory() as d:
        paths = {'dense': os.path.join(d, 'dense.kg'), 'sparse24': os.path.join(d, 'sparse24.kg')}
        with open(paths['dense'], 'w') as f:
            f.write(dense_graph(a.out, a.inputs))
        with open(paths['sparse24'], 'w') as f:
            f.write(sparse_graph(a.out, a.inputs))
        times = {'dense': [], 'sparse24': []}
        for _ in range(a.rounds):
            for name, path in paths.items():
                times[name].append(kernel_us(a.kiln, path, a.device))
    med = {name: statistics.median(t) for name, t in times.items()}
    mb = {'dense': 4 * a.out * a.inputs / 1e6, 'sparse24': 2.5 * a.out * a.inputs / 1e6}
    for name in times:
        print(f'{name:9s} {mb[name]:8.1f} MB  us: {", ".join(f"{t:.1f}" for t in times[name])}  '
              f'median {med[name]:.1f} ({mb[name] / med[name] * 1e3:.1f} GB/s)')
    print(f'dense / sparse24 = {med["dense"] / med["sparse24"]:.2f}x')


if __name__ == '__main__':
    main()
