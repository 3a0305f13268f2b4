"""What an exported generator is: export options, tolerances, input/output names, metadata.

Imports neither torch nor onnx, so the CLI and the runtime can read it anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastgan.errors import FastganError

FORMAT = "fastgan.generator"  # metadata 'format' of every model `fastgan export` writes
FORMAT_VERSION = 1
# The dynamo exporter implements opset 18 and newer natively; torch 2.13 knows up to 23.
OPSETS = range(18, 24)
ATOL_FP32 = 1e-4  # max |onnxruntime - G.eval()| over [-1, 1] pixels accepted at export (fp32)
ATOL_FP16 = 1e-2  # the same for --fp16 (fp16 weights and math): about 1.3 uint8 levels
VERIFY_BATCHES = (1, 16)  # batch sizes checked against torch after a dynamic-batch export

Z, LABEL = "z", "label"  # inputs: float32 (N, latent_size); int64 (N,) for conditional models
IMAGES, IMAGES_UINT8 = "images", "images_uint8"  # float32 (N, C, H, W) in [-1, 1]; uint8 (N, H, W, C)
IMAGES_NCHW3 = "images_uint8_nchw"  # layout torch-fidelity: uint8 (N, 3, H, W), grey repeated to 3 channels
# fastgan: outputs images (+ images_uint8). torch-fidelity: images_uint8_nchw first, then images; its ONNX
# generator loader feeds the inputs by position (z, then labels) and reads output 0 as uint8 (N, 3, H, W).
LAYOUTS = ("fastgan", "torch-fidelity")


class OnnxError(FastganError):
    """An ONNX file that cannot be exported, loaded or fed as asked."""


@dataclass(frozen=True)
class ExportOptions:
    use_ema: bool = True  # export the EMA generator when the checkpoint has one (smoother samples)
    opset: int = 18  # ONNX opset: 18 is read by onnxruntime >= 1.14 and TensorRT >= 8.6
    fp16: bool = False  # fp16 weights and math, fp32 inputs and outputs; checked against ATOL_FP16
    batch: int = 0  # static batch size baked into the graph; 0 = dynamic batch axis
    uint8: bool = True  # also output uint8 NHWC images, ready to save without any post-processing
    layout: str = "fastgan"  # the outputs' order and form: fastgan | torch-fidelity (see LAYOUTS)

    def check(self) -> None:
        if self.opset not in OPSETS:
            raise OnnxError(f"--opset {self.opset} is not supported: choose one of {OPSETS[0]}..{OPSETS[-1]}")
        if self.batch < 0:
            raise OnnxError(f"--batch must be 'dynamic' or a positive size, got {self.batch}")
        if self.layout not in LAYOUTS:
            raise OnnxError(f"--layout {self.layout} is not supported: choose one of {', '.join(LAYOUTS)}")

    @property
    def outputs(self) -> list[str]:
        """The graph's output names, in order."""
        if self.layout == "torch-fidelity":
            return [IMAGES_NCHW3, IMAGES]
        return [IMAGES, IMAGES_UINT8] if self.uint8 else [IMAGES]
