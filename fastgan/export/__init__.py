"""Deploy generators: ONNX export (``fastgan.export.onnx_export``, needs torch and onnx) and
onnxruntime inference (``OnnxGenerator``, needs numpy and onnxruntime only, never torch).

``from fastgan.export import OnnxGenerator`` loads onnxruntime on first use, so the CLI can
import this package for its options even where the onnx extra is not installed.
"""

from fastgan.export.spec import ExportOptions, OnnxError

__all__ = ["ExportOptions", "OnnxError", "OnnxGenerator"]


def __getattr__(name: str):
    if name == "OnnxGenerator":
        from fastgan.export.runtime import OnnxGenerator

        return OnnxGenerator
    raise AttributeError(f"module 'fastgan.export' has no attribute '{name}'")
