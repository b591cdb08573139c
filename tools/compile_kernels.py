"""Compile the persistent WaveRNN kernel for a GPU architecture without a GPU, and report its resources.

Triton's wheel carries ptxas and cuobjdump, so the kernel can be built for sm_90 (H100) on any
machine: this catches type errors the interpreter lets through and shows whether the resident weights
fit the register file (REG per thread; STACK > 0 means spills to local memory).

    python tools/compile_kernels.py --hidden 896 --dtype fp32 bf16 --warps 8 16

Prints one JSON line per configuration. Must run without TRITON_INTERPRET.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile

os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from vocoders.engines.cuda import triton_wavernn as tw  # noqa: E402

WEIGHT_POINTERS = {"rec_ptr", "out1_ptr", "out2_ptr", "out3_ptr", "out4_ptr"}
OTHER_POINTERS = {
    "targets_ptr": "*i64",
    "samples_ptr": "*i64",
    "prev_ptr": "*i64",
    "counter_ptr": "*i32",
    "temperature_ptr": "*fp64",
}


def persistent_config(hidden: int, out_hidden: int, classes: int, sms: int, batch: int) -> dict:
    """The constexprs `TritonWaveRNN` would choose on a device with `sms` multiprocessors."""
    p2 = tw.next_power_of_2
    units = p2(-(-hidden // sms))
    programs = -(-hidden // units)
    return dict(
        FINE_BITS=8, FORCED=False, GREEDY=False, UNITS=units, HP=p2(hidden), HALF_P=p2(hidden // 2),
        ROWS_O=p2(-(-out_hidden // programs)), OP=p2(out_hidden), ROWS_K=p2(-(-classes // programs)),
        CLASSES=p2(classes), BATCH_P=p2(batch),
    )  # fmt: skip


def compile_persistent(hidden, out_hidden, classes, dtype, warps, arch, sms, batch) -> dict:
    fn = tw.persistent_kernel
    constexprs = persistent_config(hidden, out_hidden, classes, sms, batch)
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in WEIGHT_POINTERS:
            signature[name] = f"*{dtype}"
        elif name in OTHER_POINTERS:
            signature[name] = OTHER_POINTERS[name]
        elif name.endswith("_ptr"):
            signature[name] = "*fp32"
        elif name.endswith("_scale"):
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    kernel = triton.compile(
        ASTSource(fn=fn, signature=signature, constexprs=constexprs),
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": warps, "num_stages": 1},
    )
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(kernel.asm["cubin"])
        cubin.flush()
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", cubin.name], capture_output=True, text=True).stdout
    resources = {key.lower(): int(value) for key, value in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", usage)}
    return {"hidden": hidden, "dtype": dtype, "warps": warps, "arch": f"sm_{arch}", **constexprs, **resources}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[896])
    parser.add_argument("--out-hidden", type=int, default=None, help="default hidden / 2")
    parser.add_argument("--classes", type=int, default=256)
    parser.add_argument("--dtype", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--warps", type=int, nargs="+", default=[8])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for H100")
    parser.add_argument("--sms", type=int, default=132, help="multiprocessors of the target (H100 SXM: 132)")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    for hidden in args.hidden:
        for dtype in args.dtype:
            for warps in args.warps:
                out_hidden = args.out_hidden or hidden // 2
                result = compile_persistent(
                    hidden, out_hidden, args.classes, dtype, warps, args.arch, args.sms, args.batch
                )
                print(json.dumps(result))


if __name__ == "__main__":
    main()
