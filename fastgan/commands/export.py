from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastgan.errors import ConfigError
from fastgan.export.spec import ATOL_FP16, LAYOUTS, OPSETS, ExportOptions, OnnxError
from fastgan.outputs import check_output_file

_D = ExportOptions()


def _batch(text: str) -> int:
    if text == "dynamic":
        return 0
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 'dynamic' or a positive integer, got '{text}'")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a generator to ONNX for onnxruntime / TensorRT",
        description="Export a checkpoint's generator to ONNX: eval mode, BatchNorm folded, fastgan metadata inside;\n"
        "checked with onnx.checker and against PyTorch on random latents before the file is written.\n"
        "Inputs: z float32 (N, latent) [+ label int64 (N,)].\n"
        "Outputs: images float32 (N, C, H, W) in [-1, 1] [+ images_uint8 (N, H, W, C)].",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  fastgan export runs/digits-cdcgan/checkpoints/step-0001500.pt --onnx digits.onnx\n"
        "  fastgan export CKPT --onnx g.onnx --no-ema --opset 20 --batch 64\n"
        "  fastgan export CKPT --onnx g16.onnx --fp16\n  fastgan sample --onnx digits.onnx --out grid.png",
    )
    p.add_argument("checkpoint", help="a checkpoint written by fastgan train")
    p.add_argument("--onnx", metavar="OUT.onnx", help="output file (default: the checkpoint path with .onnx)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=_D.use_ema,
                   help="export the EMA generator when the checkpoint has one (default), or the raw G")
    p.add_argument("--opset", type=int, default=_D.opset,
                   help=f"ONNX opset, {OPSETS[0]}..{OPSETS[-1]} (default {_D.opset})")
    p.add_argument("--fp16", action="store_true", default=_D.fp16,
                   help=f"fp16 weights and math, fp32 inputs/outputs (checked to {ATOL_FP16:g} of the fp32 generator)")
    p.add_argument("--batch", type=_batch, default=_D.batch, metavar="dynamic|N",
                   help="dynamic batch axis (default) or a static batch size N")
    p.add_argument("--uint8", action=argparse.BooleanOptionalAction, default=_D.uint8,
                   help="also output uint8 NHWC images (default on)")
    p.add_argument("--layout", choices=LAYOUTS, default=_D.layout,
                   help="torch-fidelity: first output uint8 (N, 3, H, W), grey repeated, for `fidelity --input1 "
                   "gen.onnx` (default fastgan)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    opts = ExportOptions(use_ema=args.ema, opset=args.opset, fp16=args.fp16, batch=args.batch, uint8=args.uint8,
                         layout=args.layout)
    opts.check()  # before the slow imports: a bad option fails at once
    out = Path(args.onnx) if args.onnx else Path(args.checkpoint).with_suffix(".onnx")
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--onnx must end in .onnx, got '{out}'")
    if Path(args.checkpoint).suffix.lower() == ".onnx":
        raise OnnxError(f"{args.checkpoint} is an ONNX model already: export reads a checkpoint (.pt) of `fastgan train`")
    check_output_file(out, "--onnx")
    try:
        from fastgan.export.onnx_export import export_checkpoint
    except ImportError as e:
        raise OnnxError(f"export needs the '{e.name}' package: pip install 'fastgan[onnx]'") from None
    rep = export_checkpoint(args.checkpoint, out, opts)
    m = rep.meta
    classes = f"{m['num_classes']} classes" if m["num_classes"] != "0" else "unconditional"
    print(f"wrote {rep.path} ({m['arch']} {m['resolution']}px x{m['channels']}, {classes}, {m['weights']} weights, "
          f"opset {opts.opset}, {m['precision']}, batch {m['batch']}) in {rep.seconds:.1f}s; "
          f"max |onnxruntime - torch| = {rep.max_abs_diff:.2g} on {rep.checked} random latents "
          f"(tolerance {rep.tolerance:g})", file=sys.stderr)
    if opts.layout == "torch-fidelity":
        print(fidelity_command(rep.path, m), file=sys.stderr)
    return 0


def fidelity_command(path: Path, meta: dict[str, str]) -> str:
    """How torch-fidelity reads a torch-fidelity-layout export (its flags name the latent and the classes)."""
    k = int(meta["num_classes"])
    classes = f" --input1-model-num-classes {k}" if k else ""
    return (f"torch-fidelity: fidelity --gpu 0 --fid --input1 {path} --input1-model-z-type normal "
            f"--input1-model-z-size {meta['latent_size']}{classes} --input1-model-num-samples 50000 "
            "--input2 cifar10-train  (or --input2 a folder of real images)")
