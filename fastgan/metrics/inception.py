"""The FID Inception v3: TensorFlow's 2015-12-05 graph as pytorch-fid ports it.

Layer names match pytorch-fid's ``fid_inception_v3()`` state dict, so its weights file
``pt_inception-2015-12-05-6726825d.pth`` (or the same tensors as ``.npz``) loads as is.
The FID variant differs from torchvision's Inception: average pools exclude padding,
and the last block max-pools its pool branch. Input: float images in [-1, 1] at any
size; they are resized to 299x299 bilinearly (align_corners=False, no antialias), as
pytorch-fid does. Grey images are repeated to 3 channels.

Two backends compute the same features (``load_inception(backend=...)``): ``torch``, the reference
module, and ``onnxruntime``, its feature trunk exported once to ONNX (cached under
``$FASTGAN_CACHE/inception``) and run by onnxruntime on the CPU, about 3x faster there with features
within 1e-5 of torch's (bench/fid_cpu.py, tests/metrics/test_inception_fast.py). ``auto`` picks
onnxruntime on a CPU where it is installed, else torch (with one FallbackWarning on a CPU).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastgan.errors import FastganError
from fastgan.fallback import warn_once
from fastgan.paths import cache_home, data_home

PTH_NAME = "pt_inception-2015-12-05-6726825d.pth"
PTH_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
PTH_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PTH_NAME
NPZ_NAME = "pt_inception-2015-12-05-nofc.npz"  # the same tensors without fc (FID only, no Inception Score)
NPZ_SHA256 = "1afe12662295ad3d7fded1882e544c9d612201ca71893499945b794f91976bb1"
KNOWN_WEIGHTS = {PTH_SHA256: PTH_NAME, NPZ_SHA256: NPZ_NAME}
INPUT_SIZE = 299
RESIZE = "bilinear 299x299, align_corners=False, no antialias (pytorch-fid)"
DIMS = (64, 192, 768, 2048)  # pytorch-fid's output blocks: maxpool1, maxpool2, pre-aux (Mixed_6e), pool3


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)  # TF excludes the padding


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg3(x)),
        ], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            dbl = layer(dbl)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            self.branch_pool(_avg3(x)),
        ], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int, pool: str) -> None:
        super().__init__()
        self.pool = pool  # "avg" in Mixed_7b; "max" in Mixed_7c (a quirk of the TF graph FID is defined on)
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _avg3(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
            self.branch_pool(pooled),
        ], 1)


class FIDInception(nn.Module):
    """Features (B, dim) of images in [-1, 1]; ``logits=True`` adds the 1008-way logits without bias
    (torch-fidelity's ``logits_unbiased``, the Inception Score input) when the weights have ``fc``."""

    backend = "torch"

    def __init__(self, dim: int = 2048) -> None:
        super().__init__()
        if dim not in DIMS:
            raise FastganError(f"Inception feature size {dim} does not exist: choose one of {', '.join(map(str, DIMS))}")
        self.dim = dim
        self.weights_sha256 = ""
        self.weights_file = ""
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, "avg")
        self.Mixed_7c = InceptionE(2048, "max")
        self.fc: nn.Linear | None = nn.Linear(2048, 1008)

    @property
    def has_fc(self) -> bool:
        return self.fc is not None

    def require_logits(self) -> None:
        """Raise the one-line user error when these weights cannot give the Inception Score."""
        if self.dim != 2048:
            raise FastganError("the Inception Score needs the 2048-d pool3 layer: drop --dims")
        if self.fc is None:
            raise FastganError(
                f"the Inception weights {self.weights_file or '(in use)'} have no fc layer, so no Inception Score: "
                f"get pytorch-fid's {PTH_NAME} (pass --weights PATH or see `fastgan fid --help`)"
            )

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        if self.dim == 64:
            return x
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        if self.dim == 192:
            return x
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e"):
            x = getattr(self, f"Mixed_{name}")(x)
        if self.dim == 768:
            return x
        return self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim) features of network input (``to_input``): the part the onnxruntime backend exports."""
        return self._trunk(x).mean((2, 3))

    def forward(self, x: torch.Tensor, logits: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = to_input(x).contiguous(memory_format=torch.channels_last)  # ~2x faster convolutions (oneDNN, cuDNN)
        if logits:
            self.require_logits()
        feats = self.features(x)
        return feats, (feats @ self.fc.weight.T if logits else None)


def to_input(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] at any size -> 3 x 299 x 299 (grey repeated, bilinear as pytorch-fid)."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return x


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so a process hashes it once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def weight_candidates() -> list[Path]:
    """Where the weights are looked for, in order: $FASTGAN_DATA/inception (else ./data/inception), the
    cache, and pytorch-fid's own download cache."""
    dirs = [data_home() / "inception", cache_home() / "inception"]
    out = [d / name for d in dirs for name in (PTH_NAME, NPZ_NAME)]
    torch_home = Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch")
    return out + [torch_home / "hub" / "checkpoints" / PTH_NAME]


def _download(dest: Path) -> bool:
    """Fetch pytorch-fid's weights into ``dest`` (checksum verified); False when offline."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    print(f"downloading the FID Inception weights from {PTH_URL}", file=sys.stderr)
    try:
        with urllib.request.urlopen(PTH_URL, timeout=30) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
    except OSError as e:
        print(f"download failed ({e})", file=sys.stderr)
        tmp.unlink(missing_ok=True)
        return False
    if sha256_of(tmp) != PTH_SHA256:
        tmp.unlink()
        raise FastganError(f"the download from {PTH_URL} has the wrong sha256: try again later or fetch it by hand")
    tmp.replace(dest)
    return True


def find_weights(path: str | Path | None = None, download: bool = True) -> Path:
    """The weights file: ``path``, else the first of ``weight_candidates()``, else a download."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            what = "is a folder, not a file" if p.is_dir() else "is not a regular file" if p.exists() else "does not exist"
            raise FastganError(f"Inception weights file {p} {what}: pass the path of {PTH_NAME} (or {NPZ_NAME})")
        return p
    for p in weight_candidates():
        if p.is_file():
            return p
    dest = cache_home() / "inception" / PTH_NAME
    if download and _download(dest):
        return dest
    raise FastganError(
        f"FID Inception weights not found: put {PTH_NAME} (from {PTH_URL}) in {dest.parent}, "
        "or pass --weights PATH / set FASTGAN_DATA"
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: torch.from_numpy(z[k]) for k in z.files}
    return torch.load(path, map_location="cpu", weights_only=True)


def load_inception(path: str | Path | None = None, dim: int = 2048, device: torch.device | str = "cpu",
                   download: bool = True, backend: str = "auto") -> FIDInception | OrtInception:
    """The FID Inception in eval mode with checked weights (sha256 must be a known file), run by ``backend``:
    ``torch`` (the reference module), ``onnxruntime`` (CPU only) or ``auto`` (see the module docstring)."""
    if backend not in BACKENDS:
        raise FastganError(f"unknown Inception backend '{backend}': choose one of {', '.join(BACKENDS)}")
    p = find_weights(path, download)
    digest = sha256_of(p)
    if digest not in KNOWN_WEIGHTS:
        raise FastganError(
            f"{p} has sha256 {digest[:16]}..., not pytorch-fid's {PTH_NAME} ({PTH_SHA256[:16]}...) nor {NPZ_NAME}: "
            f"the file is damaged or a different network; download it again from {PTH_URL}"
        )
    with torch.device("meta"):  # no random init: it would cost time and move the global RNG
        net = FIDInception(dim)
    sd = _read_state_dict(p)
    if "fc.weight" not in sd:
        net.fc = None
    try:
        net.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        raise FastganError(f"{p} does not hold FID Inception weights ({str(e).splitlines()[0]})") from None
    net.weights_sha256, net.weights_file = digest, p.name
    net = net.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
    return with_backend(net, backend)


# -- the onnxruntime backend: the trunk exported to ONNX once, resize and fc kept in torch ---------

BACKENDS = ("auto", "torch", "onnxruntime")
ONNX_FORMAT = 1  # part of the cached file's name: bump it when the exported graph changes


class _Features(nn.Module):
    def __init__(self, net: FIDInception) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


def onnx_path(net: FIDInception) -> Path:
    return cache_home() / "inception" / f"fid-inception-{net.weights_sha256[:16]}-d{net.dim}-v{ONNX_FORMAT}.onnx"


def export_onnx(net: FIDInception, path: Path) -> Path:
    """Write the feature trunk (3 x 299 x 299 input, any batch) as ONNX, atomically (~10-20 s for 2048-d)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    x = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            # the TorchScript exporter: a plain conv net, no onnxscript needed
            torch.onnx.export(_Features(net.cpu()).eval(), (x,), str(tmp), input_names=["x"],
                              output_names=["features"], dynamic_axes={"x": {0: "batch"}, "features": {0: "batch"}},
                              opset_version=18, dynamo=False)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


_SESSIONS: dict[tuple[str, int], object] = {}  # one session per weights and layer in a process


def _open_session(net: FIDInception, path: Path):
    import onnxruntime as ort

    from fastgan.export.runtime import session_options

    if not path.is_file():
        export_onnx(net, path)
    return ort.InferenceSession(str(path), session_options(torch.get_num_threads()), providers=["CPUExecutionProvider"])


class OrtInception:
    """The reference's call, ``net(x, logits=False) -> (features, logits | None)``, with the trunk run by
    onnxruntime on the CPU. Input preparation (``to_input``) and the fc logits are the reference's own
    torch code; the session is built (exporting the trunk if the cache lacks it) on the first call."""

    backend = "onnxruntime"

    def __init__(self, net: FIDInception, fallback: bool = False) -> None:
        self.net, self.fallback = net, fallback  # fallback: torch computes the features if the export fails
        self.dim, self.weights_sha256, self.weights_file = net.dim, net.weights_sha256, net.weights_file
        self.path = onnx_path(net)  # fixed now: the cache folder in force when the network was loaded
        self._session = None
        self._use_torch = False

    @property
    def fc(self) -> nn.Linear | None:
        return self.net.fc

    @fc.setter
    def fc(self, value: nn.Linear | None) -> None:
        self.net.fc = value

    @property
    def has_fc(self) -> bool:
        return self.net.has_fc

    def require_logits(self) -> None:
        self.net.require_logits()

    def session(self):
        """The onnxruntime session (the trunk exported first if the cache lacks it); None once the export or
        session failed and ``fallback`` let the torch module take over."""
        if self._session is None and not self._use_torch:
            key = (self.weights_sha256, self.dim)
            try:
                if key not in _SESSIONS:
                    _SESSIONS[key] = _open_session(self.net, self.path)
                self._session = _SESSIONS[key]
            except Exception as e:  # the exporter or onnxruntime failed; the reference gives the same features
                if not self.fallback:
                    raise
                first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
                warn_once("metrics.inception (onnxruntime)", f"the ONNX export or session failed "
                          f"({type(e).__name__}: {first}), so torch computes the features")
                self._use_torch = True
        return self._session

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, logits: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        session = self.session()
        if session is None:
            return self.net(x, logits)
        if logits:
            self.require_logits()
        inp = to_input(x.float()).contiguous().numpy()
        feats = torch.from_numpy(session.run(None, {"x": inp})[0])
        return feats, (feats @ self.fc.weight.T if logits else None)


def with_backend(net: FIDInception, backend: str = "auto") -> FIDInception | OrtInception:
    """``net`` run by ``backend``; ``auto`` falls back to the torch module, with one warning, where
    onnxruntime is missing (on a GPU the torch module is the fast path and nothing is said)."""
    on_cpu = next(net.parameters()).device.type == "cpu"
    if backend == "torch" or (backend == "auto" and not on_cpu):
        return net
    if not on_cpu:
        raise FastganError("the onnxruntime Inception backend runs on the CPU: load the network on the CPU, "
                           "or use backend='torch'")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        reason = "onnxruntime is not installed (pip install 'fastgan[onnx]'), so torch computes the features, ~3x slower"
        if backend == "onnxruntime":
            raise FastganError(f"the onnxruntime Inception backend is unavailable: {reason}") from None
        warn_once("metrics.inception (onnxruntime)", reason)
        return net
    return OrtInception(net, fallback=backend == "auto")
