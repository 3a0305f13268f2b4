"""Every source on fixture files in its real on-disk format (plus the real MNIST / Fashion-MNIST when present)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fastgan.config import DataConfig
from fastgan.data import load_dataset
from fastgan.data.download import DOWNLOADS, md5_of
from fastgan.data.items import centre_square, decode_image


def cfg(dataset: str, root: Path | str = "", **kw) -> DataConfig:
    return replace(DataConfig(), dataset=dataset, root=str(root), cache_resolution=kw.pop("res", 16),
                   prepare_workers=kw.pop("workers", 1), **kw)


@pytest.mark.parametrize("name,folder,n_train,n_test", [("mnist", "mnist", 60000, 10000),
                                                         ("fashion-mnist", "fashion_mnist", 60000, 10000)])
def test_real_idx_files_and_their_published_md5(data_dir, name, folder, n_train, n_test):
    for remote in DOWNLOADS[name][1]:  # the registry's checksums are the real files' checksums
        assert md5_of(data_dir / folder / remote.filename) == remote.md5
    tr = load_dataset(cfg(name, data_dir / folder))
    te = load_dataset(cfg(name, data_dir / folder, split="test"))
    assert tr.images.shape == (n_train, 1, 28, 28) and te.images.shape == (n_test, 1, 28, 28)
    assert tr.images.dtype == torch.uint8 and tr.num_classes == 10
    assert torch.bincount(tr.labels).tolist() == [6000] * 10 if name == "fashion-mnist" else tr.labels.max() == 9
    if name == "mnist":  # the data README's figures
        assert abs(tr.images.float().mean().item() - 33.318) < 1e-3


def test_emnist_from_the_official_zip_is_upright_with_zero_based_labels(fx, tmp_path):
    root, upright, labels = fx.emnist_zip(tmp_path / "emnist")
    ds = load_dataset(cfg("emnist-letters", root))
    assert ds.images.shape == (30, 1, 28, 28)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(upright))  # EMNIST stores them transposed
    assert (ds.images[:, 0, :4, :] == 255).all()
    assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64) - 1))
    assert ds.num_classes == 26 and ds.class_names[0] == "a" and ds.labels.min() == 0


def test_emnist_digits_from_extracted_files(fx, tmp_path):
    import zipfile

    root, upright, _ = fx.emnist_zip(tmp_path / "z", infix="digits", first_label=0, classes=10)
    out = tmp_path / "emnist"
    with zipfile.ZipFile(root / "gzip.zip") as z:
        z.extractall(out)  # gives out/gzip/emnist-digits-*.gz
    ds = load_dataset(cfg("emnist-digits", out, split="test"))
    assert torch.equal(ds.images[:, 0], torch.from_numpy(upright)) and ds.num_classes == 10


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_the_tarball_and_from_its_folder(fx, tmp_path, name):
    root, x, y = fx.cifar(tmp_path / name, name)
    ds = load_dataset(cfg(name, root))
    assert torch.equal(ds.images, torch.from_numpy(x)) and torch.equal(ds.labels, torch.from_numpy(y))
    assert ds.num_classes == (10 if name == "cifar10" else 100)
    assert ds.class_names[1] == ("c1" if name == "cifar10" else "f1")
    assert len(load_dataset(cfg(name, root, split="test"))) == 6
    import tarfile

    with tarfile.open(next(root.glob("*.tar.gz"))) as t:
        t.extractall(tmp_path / "x", filter="data")
    (next(root.glob("*.tar.gz"))).unlink()
    assert torch.equal(load_dataset(cfg(name, tmp_path / "x")).images, ds.images)


def test_cifar_pickles_cannot_run_code(fx, tmp_path):
    import io
    import pickle
    import tarfile

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    raw = pickle.dumps({b"data": Evil(), b"labels": []})
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        for m in [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta"]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{m}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    from fastgan.errors import DataError

    with pytest.raises(DataError, match="refusing to load posix.system|refusing to load os.system"):
        load_dataset(cfg("cifar10", tmp_path))


def test_folder_recursive_mixed_formats_with_class_labels(fx, tmp_path):
    root = fx.folder(tmp_path / "pics", {"cats": 3, "dogs/puppies": 2}, fmt="JPEG")
    fx.folder(root, {"dogs": 2}, fmt="PNG", seed=9)
    fx.folder(root, {"cats": 1}, fmt="WEBP", seed=11)  # img000.webp beside img000.jpg
    ds = load_dataset(cfg("folder", root, class_folders=True))
    assert ds.images.shape == (8, 3, 16, 16) and ds.class_names == ["cats", "dogs"]
    assert ds.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert load_dataset(cfg("folder", root)).labels is None


def test_folder_cache_is_reused_and_rebuilt_when_the_source_changes(fx, tmp_path, capsys):
    root = fx.folder(tmp_path / "pics", {"": 3})
    c = cfg("folder", root)
    a = load_dataset(c)
    assert "building the 16 px cache" in capsys.readouterr().err
    manifest = next((tmp_path / "cache").glob("folder-16px-*/manifest.json"))
    stamp = manifest.stat().st_mtime_ns
    b = load_dataset(c)
    assert capsys.readouterr().err == "" and manifest.stat().st_mtime_ns == stamp and torch.equal(a.images, b.images)
    fx.folder(root, {"new": 1}, seed=20)
    assert len(load_dataset(c)) == 4 and "rebuilding (the source changed)" in capsys.readouterr().err
    # a different crop is another cache, the first one stays valid
    load_dataset(replace(c, crop=0.5))
    assert len(list((tmp_path / "cache").glob("folder-16px-*/manifest.json"))) == 2


def test_folder_cache_pixels_are_the_pillow_decode(fx, tmp_path):
    root = fx.folder(tmp_path / "pics", {"": 2}, size=(50, 30))
    ds = load_dataset(cfg("folder", root, res=20, crop=0.8))
    first = min(root.glob("*.jpg")).read_bytes()
    assert torch.equal(ds.images[0], torch.from_numpy(decode_image(first, 20, 0.8)))
    assert centre_square(50, 30, 0.8) == (13, 3, 24)


def test_celeba_crop_attribute_labels_and_test_split(fx, tmp_path):
    root = fx.celeba(tmp_path / "celeba", n=6)
    ds = load_dataset(cfg("celeba", root, crop=0.7, attribute="Smiling"))
    assert ds.images.shape == (6, 3, 16, 16) and ds.class_names == ["not Smiling", "Smiling"]
    assert ds.labels.tolist() == [1, 0, 1, 0, 1, 0]  # Smiling is column 1: (i + 1) % 2
    assert load_dataset(cfg("celeba", root)).labels is None
    assert len(load_dataset(cfg("celeba", root, split="test"))) == 2
    ms = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("celeba-16px-*/manifest.json")]
    assert sorted((m["params"]["crop"], m["params"]["attribute"], m["count"]) for m in ms) == [
        (0.7, "Smiling", 6), (1.0, "", 2), (1.0, "", 6)]


def test_lsun_lmdb_single_and_combined_categories(fx, tmp_path):
    root = fx.lsun(tmp_path / "lsun", "church_outdoor", n=4)
    fx.lsun(root, "bedroom", n=3, seed=8)
    one = load_dataset(cfg("lsun-church", root))
    assert one.images.shape == (4, 3, 16, 16) and one.labels is None
    both = load_dataset(cfg("lsun", root, categories="church_outdoor,bedroom"))
    assert both.labels.tolist() == [0, 0, 0, 0, 1, 1, 1] and both.class_names == ["church_outdoor", "bedroom"]
    assert torch.equal(both.images[:4], one.images)
    # data.root may also be the LMDB folder itself
    assert len(load_dataset(cfg("lsun-church", root / "church_outdoor_train_lmdb"))) == 4


def test_downsampled_imagenet_npz(fx, tmp_path):
    root, x, y = fx.imagenet(tmp_path / "imagenet32")
    ds = load_dataset(cfg("imagenet32", root, res=32))
    assert torch.equal(ds.images, torch.from_numpy(x)) and torch.equal(ds.labels, torch.from_numpy(y))
    assert ds.num_classes == 1000 and len(load_dataset(cfg("imagenet32", root, res=32, split="test"))) == 5
    small = load_dataset(cfg("imagenet32", root, res=16))
    assert small.images.shape == (10, 3, 16, 16)
