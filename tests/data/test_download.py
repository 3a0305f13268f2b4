"""Downloads against a loopback HTTP server (127.0.0.1 only, stops itself) serving archives the tests build."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import pytest

from fastgan.cli import main
from fastgan.data import load_dataset
from fastgan.data.download import DOWNLOADS, Remote, fetch
from fastgan.errors import DataError

LIFETIME_S = 60  # the server shuts itself down after this even if a test forgets to


class Server:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate_once: set[str] = set()
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                outer.requests.append((name, rng))
                if name not in outer.files:
                    self.send_error(404)
                    return
                body = outer.files[name]
                start = int(rng.split("=")[1].split("-")[0]) if rng and not outer.ignore_range else 0
                if start >= len(body) and start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if name in outer.truncate_once:  # promise everything, send a third, hang up
                    outer.truncate_once.discard(name)
                    self.wfile.write(body[start:start + len(body) // 3])
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.timer = threading.Timer(LIFETIME_S, self.httpd.shutdown)

    def __enter__(self) -> Self:
        self.thread.start()
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    with Server() as s:
        yield s


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


BLOB = bytes(range(256)) * 400  # 100 KiB


def test_download_is_verified_and_renamed_into_place(server, tmp_path):
    server.files["a.bin"] = BLOB
    dest = fetch(f"{server.url}/a.bin", tmp_path / "a.bin", md5(BLOB), quiet=True)
    assert dest.read_bytes() == BLOB and not (tmp_path / "a.bin.part").exists()
    fetch(f"{server.url}/a.bin", tmp_path / "a.bin", md5(BLOB), quiet=True)
    assert len(server.requests) == 1  # a verified file is not fetched again


def test_a_partial_file_is_resumed_with_a_range_request(server, tmp_path):
    server.files["a.bin"] = BLOB
    (tmp_path / "a.bin.part").write_bytes(BLOB[:1000])
    fetch(f"{server.url}/a.bin", tmp_path / "a.bin", md5(BLOB), quiet=True)
    assert server.requests == [("a.bin", "bytes=1000-")] and (tmp_path / "a.bin").read_bytes() == BLOB


def test_a_server_without_ranges_restarts_the_file(server, tmp_path):
    server.files["a.bin"] = BLOB
    server.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(b"x" * 1000)  # junk that must not be kept
    fetch(f"{server.url}/a.bin", tmp_path / "a.bin", md5(BLOB), quiet=True)
    assert (tmp_path / "a.bin").read_bytes() == BLOB


def test_a_truncated_transfer_never_looks_complete_and_resumes(server, tmp_path):
    server.files["a.bin"] = BLOB
    server.truncate_once.add("a.bin")
    with pytest.raises(DataError, match=r"stopped at \d+ of 102400 bytes.*run the same command again to resume"):
        fetch(f"{server.url}/a.bin", tmp_path / "a.bin", md5(BLOB), quiet=True)
    part = tmp_path / "a.bin.part"
    assert not (tmp_path / "a.bin").exists() and 0 < part.stat().st_size < len(BLOB)
    have = part.stat().st_size
    fetch(f"{server.url}/a.bin", tmp_path / "a.bin", md5(BLOB), quiet=True)
    assert server.requests[-1] == ("a.bin", f"bytes={have}-") and (tmp_path / "a.bin").read_bytes() == BLOB


def test_a_corrupted_download_is_removed(server, tmp_path):
    server.files["a.bin"] = BLOB[:-1] + b"!"
    with pytest.raises(DataError, match=f"has MD5 {md5(BLOB[:-1] + b'!')}, expected {md5(BLOB)}"):
        fetch(f"{server.url}/a.bin", tmp_path / "a.bin", md5(BLOB), quiet=True)
    assert not list(tmp_path.iterdir())


def test_offline_fails_fast_naming_the_url_and_the_folder(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t = time.perf_counter()
    with pytest.raises(DataError) as e:
        fetch(f"http://127.0.0.1:{port}/gzip.zip", tmp_path / "emnist" / "gzip.zip", "0" * 32, timeout=2)
    assert time.perf_counter() - t < 5
    msg = str(e.value)
    assert f"http://127.0.0.1:{port}/gzip.zip" in msg and f"put it in {tmp_path / 'emnist'}" in msg
    assert "\n" not in msg


def test_http_errors_are_one_line(server, tmp_path, capsys):
    rc = main(["data", "download", "cifar100", "--root", str(tmp_path), "--mirror", server.url, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "answered HTTP 404" in err and err.count("\n") == 1


def test_cli_wrong_checksum_against_the_real_registry(server, fx, tmp_path, capsys, monkeypatch):
    root, _, _ = fx.cifar(tmp_path / "build")
    server.files["cifar-10-python.tar.gz"] = (root / "cifar-10-python.tar.gz").read_bytes()
    monkeypatch.setenv("FASTGAN_MIRROR", server.url)  # the env var form of --mirror
    rc = main(["data", "download", "cifar10", "--root", str(tmp_path / "c"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "expected c58f30108f718f92721af3b95e74349a" in err and err.startswith("fastgan: error:")
    assert not (tmp_path / "c" / "cifar-10-python.tar.gz").exists()


def test_cli_download_then_train_data_loads(server, fx, tmp_path, capsys, monkeypatch):
    root, _, _ = fx.emnist_zip(tmp_path / "build")
    blob = (root / "gzip.zip").read_bytes()
    server.files["gzip.zip"] = blob
    monkeypatch.setitem(DOWNLOADS, "emnist", ("emnist", (Remote("https://example.invalid/gzip.zip", md5(blob)),)))
    rc = main(["data", "download", "emnist-letters", "--root", str(tmp_path / "e"), "--mirror", server.url])
    out, err = capsys.readouterr()
    assert rc == 0 and "files verified" in out and "gzip.zip" in err  # the progress bar
    from dataclasses import replace

    from fastgan.config import DataConfig

    ds = load_dataset(replace(DataConfig(), dataset="emnist-letters", root=str(tmp_path / "e")))
    assert ds.images.shape == (30, 1, 28, 28)


@pytest.mark.parametrize("name,where", [("celeba", "mmlab.ie.cuhk.edu.hk"),
                                        ("lsun-church", "church_outdoor_train_lmdb"),
                                        ("imagenet32", "image-net.org"), ("nope", "choose one of")])
def test_datasets_without_a_direct_link_say_where_to_get_them(capsys, tmp_path, name, where):
    rc = main(["data", "download", name, "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and where in err and err.count("\n") == 1
