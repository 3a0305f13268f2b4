"""Checksummed, resumable, atomic downloads of the datasets that have official direct links.

A file is fetched into ``<name>.part`` (resumed with an HTTP Range request when a part exists), checked against
its published MD5, and only then renamed to its final name, so a partial or corrupt file never looks complete.
``--mirror URL`` or $FASTGAN_MIRROR replaces everything before the file name (a local mirror; the tests' server).
"""

from __future__ import annotations

import hashlib
import http.client
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fastgan.data.idx import EMNIST_SETS
from fastgan.data.imagenet import HOW_TO_GET as IMAGENET_HOW
from fastgan.data.imagenet import IMAGENET_SETS
from fastgan.data.lsun import HOW_TO_GET as LSUN_HOW
from fastgan.data.lsun import LSUN_SETS
from fastgan.errors import DataError
from fastgan.outputs import check_output_dir
from fastgan.paths import resolve_root
from fastgan.progress import Bar

TIMEOUT_S = 10.0  # connect/read timeout: offline, fail within seconds instead of hanging
_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # torchvision's mirror of yann.lecun.com/exdb/mnist
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"  # the Zalando release bucket


@dataclass(frozen=True)
class Remote:
    url: str
    md5: str  # as published (torchvision's resources lists use the same values)

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


DOWNLOADS: dict[str, tuple[str, tuple[Remote, ...]]] = {
    # name: (folder under the data home, files)
    "mnist": ("mnist", (
        Remote(_MNIST + "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        Remote(_MNIST + "train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        Remote(_MNIST + "t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        Remote(_MNIST + "t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    )),
    "fashion-mnist": ("fashion_mnist", (
        Remote(_FASHION + "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        Remote(_FASHION + "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        Remote(_FASHION + "t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        Remote(_FASHION + "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    )),
    "emnist": ("emnist", (Remote("https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",
                                 "58c8d27c78d21e728a6bc7b3cc06412e"),)),
    "cifar10": ("cifar10", (Remote("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                                   "c58f30108f718f92721af3b95e74349a"),)),
    "cifar100": ("cifar100", (Remote("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                                     "eb9058c3a382ffc7106e4002c42a8d85"),)),
}
ALIASES = {name: "emnist" for name in EMNIST_SETS}  # every EMNIST split lives in the one archive

_MIRROR_HINT = "--mirror URL (or $FASTGAN_MIRROR): the same file names under another base URL"

CELEBA_HOW = ("CelebA has no direct download link: get img_align_celeba.zip (and list_attr_celeba.txt for "
              "attribute labels) from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html and unzip it into {root}")


def _manual(name: str, root: Path) -> str | None:
    """Where to get a dataset that cannot be fetched here, or None if it can."""
    if name == "celeba":
        return CELEBA_HOW.format(root=root)
    if name in LSUN_SETS or name == "lsun":
        return LSUN_HOW.format(cat=LSUN_SETS.get(name, "<category>"), split="train", root=root)
    if name in IMAGENET_SETS:
        return IMAGENET_HOW.format(r=IMAGENET_SETS[name], root=root)
    return None


def check_mirror(base: str, what: str = "--mirror") -> str:
    """A base URL urllib can fetch from (http, https or file), else one DataError naming it."""
    fix = f"give a base URL such as https://example.org/mnist/ or file:///srv/mirror/ ({what})"
    try:
        parts = urllib.parse.urlsplit(base)
    except ValueError as e:  # an unclosed IPv6 bracket, a bad port...
        raise DataError(f"{what} {base!r:.100} is not a valid URL ({e}): {fix}") from None
    if parts.scheme not in ("http", "https", "file"):
        raise DataError(f"{what} {base!r:.100} is not an http, https or file URL: {fix}")
    if parts.scheme != "file" and not parts.hostname:
        raise DataError(f"{what} {base!r:.100} names no server: {fix}")
    try:
        parts.port  # noqa: B018 -- raises on a port that is not a number in range
    except ValueError as e:
        raise DataError(f"{what} {base!r:.100} is not a valid URL ({e}): {fix}") from None
    return base


def check_timeout(timeout: float) -> float:
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise DataError(f"--timeout {timeout} must be a positive number of seconds, e.g. {TIMEOUT_S:g}")
    return float(timeout)


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def fetch(url: str, dest: Path, md5: str, timeout: float = TIMEOUT_S, quiet: bool = False) -> Path:
    """Download ``url`` to ``dest`` unless a file with the right MD5 is already there."""
    if dest.is_file() and md5_of(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "fastgan", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:  # 416: the part already holds every byte; check it below
            raise DataError(f"{url} answered HTTP {e.code} ({e.reason}): download it by hand into "
                            f"{dest.parent}, or from another server with {_MIRROR_HINT}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:  # ValueError: a bad URL
        reason = getattr(e, "reason", e)
        raise DataError(f"cannot reach {url} ({reason}): offline? download it by hand and put it in "
                        f"{dest.parent}, or fetch it from another server with {_MIRROR_HINT}") from None
    else:
        with resp:
            _receive(resp, url, part, have, quiet)
    got = md5_of(part)
    if got != md5:
        part.unlink()
        raise DataError(f"{dest.name} from {url} has MD5 {got}, expected {md5}: the download is corrupt (removed); "
                        "run the command again")
    os.replace(part, dest)
    return dest


def _receive(resp, url: str, part: Path, have: int, quiet: bool) -> None:
    resumed = have and resp.status == 206 and resp.headers.get("Content-Range", "").startswith(f"bytes {have}-")
    start = have if resumed else 0
    length = resp.headers.get("Content-Length")
    total = start + int(length) if length is not None else None
    done = start
    with open(part, "ab" if resumed else "wb") as f, Bar(
            total=total, initial=start, unit="B", unit_scale=True, desc=part.name[:-5], disable=quiet,
            file=sys.stderr, mininterval=0.5) as bar:
        try:
            while chunk := resp.read(1 << 16):
                f.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
        except (TimeoutError, http.client.IncompleteRead, ConnectionError, OSError) as e:
            f.flush()
            raise DataError(f"download of {url} stopped at {done} of {total or '?'} bytes ({type(e).__name__}): "
                            "run the same command again to resume") from None
        f.flush()
        os.fsync(f.fileno())
    if total is not None and done < total:
        raise DataError(f"download of {url} stopped at {done} of {total} bytes: run the same command again to resume")


def download(name: str, root: str = "", mirror: str = "", timeout: float = TIMEOUT_S, quiet: bool = False) -> Path:
    """Fetch every file of dataset ``name`` into ``root`` (default: its folder under the data home)."""
    key = ALIASES.get(name, name)
    if key not in DOWNLOADS:
        folder = resolve_root(root, name)
        how = _manual(name, folder)
        if how:
            raise DataError(how)
        raise DataError(f"no download for '{name}': choose one of {', '.join([*DOWNLOADS, *ALIASES])}")
    folder_name, files = DOWNLOADS[key]
    folder = resolve_root(root, folder_name)
    check_output_dir(folder, "--root" if root else "the data folder")
    timeout = check_timeout(timeout)
    base = check_mirror(mirror) if mirror else os.environ.get("FASTGAN_MIRROR", "")
    if base and not mirror:
        check_mirror(base, "$FASTGAN_MIRROR")
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        for r in files:
            url = f"{base.rstrip('/')}/{r.filename}" if base else r.url
            fetch(url, folder / r.filename, r.md5, timeout, quiet)
    except DataError:
        # A failed first try leaves no empty folder behind: `data list` would call it present. Folders holding a
        # .part (resumable) or a verified file stay.
        for p in created:
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        raise
    return folder
