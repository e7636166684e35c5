#!/usr/bin/env python3
"""Writes the loader tests' reference files with the official Python libraries
(safetensors, gguf), and expected.json with the values each tensor must load
as, computed here independently of kiln (gguf.quants dequantizes Q8_0/Q4_0).

    pip install safetensors numpy gguf
    python3 scripts/make_loader_test_files.py   # writes tests/frontend/loaders/data/
"""
import json
import pathlib

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors import TensorSpec, serialize

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "frontend" / "loaders" / "data"
rng = np.random.default_rng(7)


def bf16_bits(x):
    """f32 -> bf16 bits, round to nearest even."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return bits.astype(np.uint16)


def bf16_values(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def values(a):
    return [float(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)]


def make_safetensors():
    arrays = {
        "f32": rng.standard_normal((2, 3)).astype(np.float32),
        "f16": rng.standard_normal((4,)).astype(np.float16),
        "i32": np.array([[1, -2], [2**31 - 1, -(2**31)]], dtype=np.int32),
        "i8": np.array([-128, -1, 0, 127], dtype=np.int8),
        "u8": np.array([0, 1, 200, 255], dtype=np.uint8),
        "bool": np.array([[True, False, True]], dtype=np.bool_),
        "f64": np.array([0.1, -2.5, 1e30], dtype=np.float64),
        "i64": np.array([5, -7, 2**31 - 1], dtype=np.int64),
        "i16": np.array([-32768, 3, 32767], dtype=np.int16),
        "u16": np.array([0, 65535], dtype=np.uint16),
        "u32": np.array([7, 2**31 - 1], dtype=np.uint32),
        "scalar": np.array(4.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    bf16 = bf16_bits(rng.standard_normal((3, 2)))
    kiln_dtype = {"float32": "f32", "float16": "f16", "int32": "i32", "int8": "i8", "uint8": "u8", "bool": "bool",
                  "float64": "f32", "int64": "i32", "int16": "i32", "uint16": "i32", "uint32": "i32"}
    file_dtype = {"float32": "F32", "float16": "F16", "int32": "I32", "int8": "I8", "uint8": "U8", "bool": "BOOL",
                  "float64": "F64", "int64": "I64", "int16": "I16", "uint16": "U16", "uint32": "U32"}
    specs = {k: TensorSpec(dtype=a.dtype.name, shape=list(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes)
             for k, a in arrays.items()}
    specs["bf16"] = TensorSpec(dtype="bfloat16", shape=list(bf16.shape), data_ptr=bf16.ctypes.data,
                               data_len=bf16.nbytes)
    metadata = {"format": "pt", "note": "kiln loader test"}
    (OUT / "all_dtypes.safetensors").write_bytes(bytes(serialize(specs, metadata=metadata)))

    expected = {}
    for k, a in arrays.items():
        v = a.astype(np.float32) if a.dtype == np.float64 else a  # F64 loads as f32
        expected[k] = {"dtype": file_dtype[a.dtype.name], "kiln_dtype": kiln_dtype[a.dtype.name],
                       "shape": list(a.shape), "values": values(v)}
    expected["bf16"] = {"dtype": "BF16", "kiln_dtype": "bf16", "shape": list(bf16.shape),
                        "values": values(bf16_values(bf16))}
    return {"file": "all_dtypes.safetensors", "metadata": metadata, "tensors": expected}


def make_gguf(name, alignment=None):
    w = gguf.GGUFWriter(str(OUT / name), arch="kilntest")
    if alignment:
        w.add_custom_alignment(alignment)
    meta = {}

    def kv(key, value, kind, add):
        add(key, value)
        meta[key] = {"type": kind, "value": value}

    kv("test.u8", 200, "u8", w.add_uint8)
    kv("test.i8", -100, "i8", w.add_int8)
    kv("test.u16", 60000, "u16", w.add_uint16)
    kv("test.i16", -30000, "i16", w.add_int16)
    kv("test.u32", 4000000000, "u32", w.add_uint32)
    kv("test.i32", -2000000000, "i32", w.add_int32)
    kv("test.u64", 2**63 + 5, "u64", w.add_uint64)
    kv("test.i64", -(2**62), "i64", w.add_int64)
    kv("test.f32", 1.5, "f32", w.add_float32)
    kv("test.f64", 3.141592653589793, "f64", w.add_float64)
    kv("test.bool", True, "bool", w.add_bool)
    kv("test.string", "h\u00e9llo", "string", w.add_string)
    kv("test.strings", ["a", "bc", ""], "array", w.add_array)
    kv("test.ints", [1, -2, 3], "array", w.add_array)
    kv("test.floats", [0.5, -2.0], "array", w.add_array)
    kv("test.nested", [[1, 2], [3]], "array", w.add_array)

    tensors = {}

    def plain(tname, a):
        w.add_tensor(tname, a)
        tensors[tname] = {"type": a.dtype.name, "sizes": list(a.shape), "values": values(a)}

    def quant(tname, a, qtype):
        q = gguf.quants.quantize(a, qtype)
        w.add_tensor(tname, q, raw_dtype=qtype)
        deq = gguf.quants.dequantize(q, qtype)
        tensors[tname] = {"type": qtype.name, "sizes": list(a.shape), "values": values(deq)}

    plain("f32", rng.standard_normal((2, 3)).astype(np.float32))
    plain("f16", rng.standard_normal((4,)).astype(np.float16))
    plain("f64", np.array([0.25, -1e-3, 7.0], dtype=np.float64))
    plain("i8", np.array([-128, 0, 127], dtype=np.int8))
    plain("i16", np.array([-300, 300], dtype=np.int16))
    plain("i32", np.array([[1, -5], [70000, 3]], dtype=np.int32))
    bf = rng.standard_normal((2, 2)).astype(np.float32)
    bits = bf16_bits(bf)
    w.add_tensor("bf16", bits, raw_dtype=Q.BF16)
    tensors["bf16"] = {"type": "BF16", "sizes": list(bf.shape), "values": values(bf16_values(bits))}
    quant("q8_0", rng.standard_normal((3, 64)).astype(np.float32), Q.Q8_0)
    quant("q4_0", rng.standard_normal((2, 64)).astype(np.float32), Q.Q4_0)
    quant("blk.0.attn_q.weight", rng.standard_normal((2, 2, 32)).astype(np.float32), Q.Q8_0)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"file": name, "alignment": alignment or 32, "metadata": meta, "tensors": tensors}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    expected = {
        "safetensors": make_safetensors(),
        "gguf": [make_gguf("small.gguf"), make_gguf("aligned64.gguf", alignment=64)],
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
