"""Fixture files in each source's real on-disk format, built by the tests (tiny, seeded)."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def smooth_images(n: int, h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """uint8 (n, h, w, C) low-frequency images: resizers and JPEG disagree little on them, unlike on noise."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, h, w, channels), np.uint8)
    for i in range(n):
        small = rng.integers(0, 256, (4, 5, channels), dtype=np.uint8)
        im = Image.fromarray(small.squeeze(-1) if channels == 1 else small).resize((w, h), Image.Resampling.BICUBIC)
        out[i] = np.asarray(im).reshape(h, w, channels)
    return out


def encode(img: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


class Fixtures:
    @staticmethod
    def idx(a: np.ndarray) -> bytes:
        code = {np.uint8: 0x08, np.int32: 0x0C}[a.dtype.type]
        dtype = ">i4" if code == 0x0C else np.uint8
        return bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(dtype).tobytes()

    @staticmethod
    def mnist(root: Path, n: int = 64, n_labels: int | None = None, classes: int = 10) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(1)
        for split, m in (("train", n), ("t10k", n // 2)):
            x = rng.integers(0, 256, (m, 28, 28), dtype=np.uint8)
            y = (np.arange(m if n_labels is None or split == "t10k" else n_labels) % classes).astype(np.uint8)
            (root / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(Fixtures.idx(x)))
            (root / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(Fixtures.idx(y)))
        return root

    @staticmethod
    def emnist_zip(root: Path, infix: str = "letters", n: int = 30, n_labels: int | None = None,
                   first_label: int = 1, classes: int = 26) -> tuple[Path, np.ndarray, np.ndarray]:
        """The official gzip.zip layout; images stored transposed as EMNIST does. Returns (root, upright, labels)."""
        root.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(2)
        upright = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        upright[:, :4, :] = 255  # a bright top band: transposed, it would be a left band
        labels = (np.arange(n) % classes + first_label).astype(np.uint8)
        with zipfile.ZipFile(root / "gzip.zip", "w") as z:
            for part in ("train", "test"):
                stem = f"gzip/emnist-{infix}-{part}"
                z.writestr(f"{stem}-images-idx3-ubyte.gz",
                           gzip.compress(Fixtures.idx(np.ascontiguousarray(upright.transpose(0, 2, 1)))))
                z.writestr(f"{stem}-labels-idx1-ubyte.gz", gzip.compress(Fixtures.idx(labels[:n_labels])))
        return root, upright, labels

    @staticmethod
    def cifar(root: Path, name: str = "cifar10", per_batch: int = 6) -> tuple[Path, np.ndarray, np.ndarray]:
        """The official python pickle tar.gz; returns (root, train images (N,3,32,32), train labels)."""
        root.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(3)
        ten = name == "cifar10"
        inner, archive = (("cifar-10-batches-py", "cifar-10-python.tar.gz") if ten
                          else ("cifar-100-python", "cifar-100-python.tar.gz"))
        train = [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"]
        key, k = (b"labels", 10) if ten else (b"fine_labels", 100)
        members, xs, ys = {}, [], []
        for b in [*train, "test_batch" if ten else "test"]:
            x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            y = [int(v) for v in rng.integers(0, k, per_batch)]
            d = {b"data": x, key: y, b"batch_label": b.encode()}
            if not ten:
                d[b"coarse_labels"] = [v // 5 for v in y]
            members[b] = pickle.dumps(d)
            if b in train:
                xs.append(x.reshape(-1, 3, 32, 32))
                ys.append(y)
        meta = {b"label_names": [f"c{i}".encode() for i in range(10)]} if ten else \
            {b"fine_label_names": [f"f{i}".encode() for i in range(100)]}
        members["batches.meta" if ten else "meta"] = pickle.dumps(meta)
        with tarfile.open(root / archive, "w:gz") as tar:
            for m, raw in members.items():
                info = tarfile.TarInfo(f"{inner}/{m}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
        return root, np.concatenate(xs), np.concatenate(ys)

    @staticmethod
    def folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (40, 30), fmt: str = "JPEG",
               seed: int = 4) -> Path:
        """``counts``: sub-folder -> number of images ("" = the root itself)."""
        ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]
        for j, (sub, n) in enumerate(counts.items()):
            d = root / sub
            d.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(smooth_images(n, size[1], size[0], seed + j)):
                (d / f"img{i:03d}.{ext}").write_bytes(encode(img, fmt))
        return root

    @staticmethod
    def celeba(root: Path, n: int = 6, attrs: tuple[str, ...] = ("Male", "Smiling")) -> Path:
        img_dir = root / "img_align_celeba"
        img_dir.mkdir(parents=True)
        names = [f"{i + 1:06d}.jpg" for i in range(n)]
        for name, img in zip(names, smooth_images(n, 218, 178, 5)):
            (img_dir / name).write_bytes(encode(img, "JPEG"))
        rows = [f"{nm} " + " ".join("1" if (i + j) % 2 else "-1" for j in range(len(attrs))) for i, nm in
                enumerate(names)]
        (root / "list_attr_celeba.txt").write_text(f"{n}\n{' '.join(attrs)}\n" + "\n".join(rows) + "\n")
        (root / "list_eval_partition.txt").write_text("".join(f"{nm} {2 if i >= n - 2 else 0}\n"
                                                              for i, nm in enumerate(names)))
        return root

    @staticmethod
    def lsun(root: Path, category: str = "church_outdoor", n: int = 5, split: str = "train", seed: int = 6,
             size: tuple[int, int] = (48, 36)) -> Path:
        """The official export: an LMDB folder mapping hex keys to WebP bytes."""
        import lmdb

        db = root / f"{category}_{split}_lmdb"
        db.mkdir(parents=True)
        env = lmdb.open(str(db), map_size=1 << 24)
        with env.begin(write=True) as txn:
            for i, img in enumerate(smooth_images(n, size[1], size[0], seed)):
                txn.put(f"{i:040x}".encode(), encode(img, "WEBP"))
        env.close()
        return root

    @staticmethod
    def imagenet(root: Path, r: int = 32, batches: int = 2, per: int = 5) -> tuple[Path, np.ndarray, np.ndarray]:
        root.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(7)
        xs, ys = [], []
        for b in range(1, batches + 1):
            x = rng.integers(0, 256, (per, 3 * r * r), dtype=np.uint8)
            y = rng.integers(1, 1001, per)
            np.savez(root / f"train_data_batch_{b}.npz", data=x, labels=y, mean=x.mean(0))
            xs.append(x.reshape(-1, 3, r, r))
            ys.append(y - 1)
        np.savez(root / "val_data.npz", data=xs[0].reshape(per, -1), labels=ys[0] + 1)
        return root, np.concatenate(xs), np.concatenate(ys)


@pytest.fixture
def fx() -> type[Fixtures]:
    return Fixtures


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Decoded caches go to the test's folder, never to ~/.cache."""
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path / "cache"))
