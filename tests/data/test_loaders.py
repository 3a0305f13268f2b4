"""Loaders: one Draw -> the same images from every loader; augmentation against a plain-torch reference."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fastgan.config import DataConfig
from fastgan.data import ImageDataset, load_dataset
from fastgan.data.loader import DeviceLoader, Draw, StreamLoader, augment, choose_loader, make_loader
from fastgan.errors import DataError

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def dataset(n: int = 40, r: int = 12, c: int = 3, labels: bool = True) -> ImageDataset:
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 256, (n, c, r, r), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 4 if labels else None
    return ImageDataset(x, y, 4 if labels else 0, [], "t")


def augment_ref(x: torch.Tensor, d: Draw, pad: int) -> torch.Tensor:
    """Plain torch, one image at a time: mirror, reflect-pad, slice."""
    out = []
    for i in range(len(x)):
        img = x[i].float()
        if d.flip is not None and d.flip[i]:
            img = img.flip(-1)
        if d.shift is not None:
            dy, dx = int(d.shift[0, i]), int(d.shift[1, i])
            img = F.pad(img[None], (pad, pad, pad, pad), mode="reflect")[0]
            img = img[:, dy:dy + x.shape[-2], dx:dx + x.shape[-1]]
        out.append(img)
    return torch.stack(out).to(x.dtype)


@pytest.mark.parametrize("hflip,pad,r", [(False, 0, 12), (True, 0, 12), (False, 3, 12), (True, 4, 7),
                                         (True, 6, 7)])  # 7: odd size; pad 6 = r - 1, the widest reflect
def test_augment_matches_the_reference(hflip, pad, r):
    x = dataset(16, r).images
    torch.manual_seed(1)
    d = Draw(torch.arange(16), (torch.rand(16) < 0.5) if hflip else None,
             torch.randint(2 * pad + 1, (2, 16)) if pad else None)
    assert torch.equal(augment(x, d, pad), augment_ref(x, d, pad))
    assert torch.equal(augment(x.float(), d, pad), augment_ref(x.float(), d, pad))  # any dtype


@pytest.mark.parametrize("hflip,pad", [(False, 0), (True, 2)])
def test_device_and_stream_give_bit_identical_batches_for_one_draw(hflip, pad):
    ds = dataset()
    dev = DeviceLoader(ds, 12, torch.device("cpu"), hflip, pad)
    stream = StreamLoader(ds, 12, torch.device("cpu"), hflip, pad, workers=0)
    torch.manual_seed(3)
    d = dev.draw(32)
    (xa, ya), (xb, yb) = dev.batch_at(d), stream.batch_at(d)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert xa.dtype == torch.float32 and xa.min() >= -1 and xa.max() <= 1 and xa.shape == (32, 3, 12, 12)
    assert torch.equal(ya, ds.labels[d.idx])


@pytest.mark.parametrize("workers", [0, 2])
def test_on_cpu_device_and_stream_give_the_same_batch_sequence(workers):
    """Both draw from the default CPU generator in call order, so from one seed the sequences agree."""
    ds = dataset()
    torch.manual_seed(7)
    dev = DeviceLoader(ds, 12, torch.device("cpu"), True, 1)
    a = [dev.batch(8) for _ in range(4)]
    torch.manual_seed(7)
    stream = StreamLoader(ds, 12, torch.device("cpu"), True, 1, workers=workers)
    b = [stream.batch(8) for _ in range(4)]
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][0], a[1][0])


def test_device_batches_depend_only_on_the_rng_state():
    loader = DeviceLoader(dataset(), 12, torch.device("cpu"), True, 2)
    state = torch.get_rng_state()
    a = loader.batch(16)
    torch.set_rng_state(state)
    b = loader.batch(16)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_without_augmentation_the_draw_is_the_old_one():
    """hflip only consumes B uniforms after the indices, as before crop_pad existed (old runs stay reproducible)."""
    ds = dataset()
    torch.manual_seed(0)
    x, _ = DeviceLoader(ds, 12, torch.device("cpu"), hflip=True).batch(8)
    torch.manual_seed(0)
    idx = torch.randint(40, (8,))
    flip = torch.rand(8, 1, 1, 1) < 0.5
    ref = ds.images[idx].float().mul(2 / 255).sub(1)
    assert torch.equal(x, torch.where(flip, ref.flip(-1), ref))


def _mapped_file(address: int) -> str:
    """The file mapped at ``address`` in this process ('' if none): Linux /proc/self/maps."""
    with open("/proc/self/maps") as f:
        lines = f.read().splitlines()
    for line in lines:
        lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
        if lo <= address < hi:
            return line.split()[-1] if len(line.split()) > 5 else ""
    return ""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc to see memory maps")
def test_stream_reads_the_cache_memory_map_and_loaders_resize(fx, tmp_path):
    root = fx.folder(tmp_path / "pics", {"": 5})
    cfg = replace(DataConfig(), dataset="folder", root=str(root), cache_resolution=16, prepare_workers=1)
    ds = load_dataset(cfg)
    stream = StreamLoader(ds, 16, torch.device("cpu"), workers=2)
    assert _mapped_file(stream.images.ctypes.data).endswith("images.npy")  # not a copy in RAM
    x, y = stream.batch(6)
    assert x.shape == (6, 3, 16, 16) and y is None
    small = StreamLoader(ds, 8, torch.device("cpu"), workers=0)  # another resolution: resized once, in RAM
    d = small.draw(6)
    assert torch.equal(small.batch_at(d)[0], DeviceLoader(ds, 8, torch.device("cpu")).batch_at(d)[0])
    assert small.batch_at(d)[0].shape == (6, 3, 8, 8)


def test_auto_picks_device_when_it_fits_else_stream():
    ds = dataset()
    cfg = DataConfig()
    assert choose_loader(ds, 12, torch.device("cpu"), 0.5) == "device"
    assert choose_loader(ds, 12, torch.device("cpu"), 1e-12) == "stream"
    assert make_loader(ds, cfg, 12, torch.device("cpu")).kind == "device"
    assert make_loader(ds, replace(cfg, device_fraction=1e-12), 12, torch.device("cpu")).kind == "stream"
    assert make_loader(ds, replace(cfg, loader="stream", loader_workers=0), 12, torch.device("cpu")).kind == "stream"


def test_crop_pad_must_be_below_the_resolution():
    with pytest.raises(DataError, match="crop_pad=12 must be below the resolution"):
        make_loader(dataset(), replace(DataConfig(), crop_pad=12), 12, torch.device("cpu"))


def test_dali_without_the_package_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # makes `import nvidia.dali` fail as if absent
    with pytest.raises(DataError, match=r"pip install 'fastgan\[dali\]'"):
        make_loader(dataset(), replace(DataConfig(), loader="dali"), 12, torch.device("cpu"))


@pytest.mark.parametrize("loader", ["device", "stream"])
def test_training_resumes_bit_identically_with_augmentation(tmp_path, loader):
    """The engine's resume guarantee holds for both loaders (stream: workers=0, draws taken at batch time)."""
    from fastgan.config import load_config
    from fastgan.engine.checkpoint import load_checkpoint
    from fastgan.engine.loop import train

    ov = {"data.loader": loader, "data.loader_workers": "0", "data.hflip": "true", "data.crop_pad": "3",
          "model.g_width": "4", "model.d_width": "4", "model.z_dim": "8", "train.batch_size": "8",
          "train.ckpt_every": "3", "train.log_every": "3", "train.sample_every": "100", "train.grid_size": "4"}
    straight = train(load_config(None, {**ov, "train.steps": "6", "train.out": str(tmp_path / "a")}), quiet=True)
    train(load_config(None, {**ov, "train.steps": "3", "train.out": str(tmp_path / "b")}), quiet=True)
    resumed = train(load_config(None, {**ov, "train.steps": "6", "train.out": str(tmp_path / "b")}), resume="auto",
                    quiet=True)
    a, b = load_checkpoint(straight.checkpoint)["models"], load_checkpoint(resumed.checkpoint)["models"]
    for net in ("G", "D"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net])


@CUDA
def test_device_and_stream_bit_identical_on_the_gpu():
    ds = dataset()
    dev = DeviceLoader(ds, 12, torch.device("cuda"), True, 2)
    stream = StreamLoader(ds, 12, torch.device("cuda"), True, 2, workers=2)
    d = dev.draw(32)
    assert torch.equal(dev.batch_at(d)[0], stream.batch_at(d)[0])
    x, y = stream.batch(32)
    assert x.device.type == "cuda" and y.device.type == "cuda"


@CUDA
def test_device_loader_is_graph_capturable():
    loader = DeviceLoader(dataset(), 12, torch.device("cuda"), True, 2)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        loader.batch(16)  # warm-up outside capture
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        x, y = loader.batch(16)
    g.replay()
    first = x.clone()
    g.replay()
    torch.cuda.synchronize()
    assert not torch.equal(first, x)  # fresh indices and flips on every replay
    assert x.min() >= -1 and x.max() <= 1 and y.max() < 4
