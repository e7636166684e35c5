#!/bin/bash
# Checks, without a GPU, that emitted warpgroup-tile kernels read their
# accumulators only after the last wgmma wait: each CUDA file given is compiled
# for sm_90a with nvcc and disassembled with nvdisasm (PyPI's
# nvidia-cuda-nvdisasm: `pip download --no-deps nvidia-cuda-nvdisasm -d DIR`,
# unzip, NVDISASM=DIR/nvidia/cu13/bin/nvdisasm), and the last
# `WARPGROUP.DEPBAR.LE gsb0, 0x0` must come before the first F2FP (the
# epilogue's first read of an accumulator). Session 15 found ptxas moving that
# wait below the reads when it followed the loop (emit_cuda.cpp,
# emit_warpgroup_tma). Get a kernel's CUDA with
#   KILN_CUDA_TMA=1 kiln dump matmul:4096x4096x4096 --dtype f16 --device h100 --stage target
# (the text from the line `// kiln kernel` on).
#   scripts/dev/wgmma_waits.sh FILE.cu...
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
NVDISASM=${NVDISASM:-nvdisasm}
status=0
for f in "$@"; do
  tmp=$(mktemp -d)
  if ! "$NVCC" -arch=sm_90a -cubin -o "$tmp/k.cubin" "$f" 2> "$tmp/log"; then
    echo "$f: does not compile"; cat "$tmp/log"; status=1; rm -rf "$tmp"; continue
  fi
  "$NVDISASM" -c "$tmp/k.cubin" > "$tmp/k.sass"
  wait_line=$(grep -n "WARPGROUP.DEPBAR.LE gsb0, 0x0" "$tmp/k.sass" | tail -1 | cut -d: -f1)
  read_line=$(grep -n "F2FP" "$tmp/k.sass" | head -1 | cut -d: -f1)
  if [ -z "$wait_line" ] || [ -z "$read_line" ] || [ "$read_line" -lt "$wait_line" ]; then
    echo "$f: accumulators read (SASS line ${read_line:-none}) before the last wait (line ${wait_line:-none})"; status=1
  else
    echo "$f: ok (wait at SASS line $wait_line, first read at $read_line)"
  fi
  rm -rf "$tmp"
done
exit $status
