"""Local folders first, then downloads checked by SHA-256, against a server on 127.0.0.1."""

import gzip
import hashlib
import http.server
import socket
import threading
import zipfile
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from spikeforge.data import load_dataset
from spikeforge.data.idx import encode_idx, write_idx
from spikeforge.data.sources import (
    FASHION_MNIST,
    MNIST,
    DatasetSource,
    RemoteFile,
    download_file,
    download_idx,
    extract_zip,
    locate_idx,
    search_dirs,
)
from spikeforge.errors import DataError

PAYLOAD = encode_idx(np.arange(1000, dtype=np.int32) % 251)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: Counter
    files: dict

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.hits[self.path] += 1
        kind, _, name = self.path.strip("/").partition("/")
        if kind == "missing" or name not in self.files:
            self.send_error(404)
            return
        body = gzip.compress(self.files[name], mtime=0)
        if kind == "corrupt":
            body = gzip.compress(self.files[name][:-1] + b"\x01", mtime=0)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if kind == "drop":  # half the promised bytes, then the connection closes
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    hits = Counter()
    handler = type("Handler", (_Handler,), {"hits": hits, "files": {"f.gz": PAYLOAD}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, hits, handler.files
    httpd.shutdown()
    httpd.server_close()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_good_download_is_verified_and_renamed(server, tmp_path):
    base, hits, _ = server
    dest = download_file([f"{base}/good/f.gz"], tmp_path / "f.gz", SHA, backoff=0)
    assert gzip.decompress(dest.read_bytes()) == PAYLOAD
    assert _leftovers(tmp_path) == ["f.gz"]
    assert hits["/good/f.gz"] == 1


def test_corrupt_file_is_not_written(server, tmp_path):
    base, hits, _ = server
    with pytest.raises(DataError, match="checksum mismatch") as info:
        download_file([f"{base}/corrupt/f.gz"], tmp_path / "f.gz", SHA, backoff=0)
    assert "f.gz" in str(info.value) and str(tmp_path) in str(info.value)
    assert _leftovers(tmp_path) == []
    assert hits["/corrupt/f.gz"] == 1  # wrong content is not retried


def test_dropped_connection_is_retried_then_reported(server, tmp_path):
    base, hits, _ = server
    with pytest.raises(DataError, match="connection dropped after") as info:
        download_file([f"{base}/drop/f.gz"], tmp_path / "f.gz", SHA, retries=3, backoff=0)
    assert "could not download f.gz from any mirror" in str(info.value)
    assert hits["/drop/f.gz"] == 3
    assert _leftovers(tmp_path) == []


def test_next_mirror_after_failures(server, tmp_path):
    base, hits, _ = server
    urls = [f"{base}/missing/f.gz", f"{base}/drop/f.gz", f"{base}/good/f.gz"]
    dest = download_file(urls, tmp_path / "f.gz", SHA, retries=2, backoff=0)
    assert gzip.decompress(dest.read_bytes()) == PAYLOAD
    assert (hits["/missing/f.gz"], hits["/drop/f.gz"], hits["/good/f.gz"]) == (1, 2, 1)


def test_timeout_is_retried_then_reported(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/f.gz"
        with pytest.raises(DataError, match="timed out"):
            download_file([url], tmp_path / "f.gz", SHA, retries=2, timeout=0.2, backoff=0)
    finally:
        listener.close()
    assert _leftovers(tmp_path) == []


def _tiny_source(base, images, labels):
    files = {}
    pairs = []
    for stem, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        raw = encode_idx(array)
        files[stem + ".gz"] = raw
        pairs.append(RemoteFile(stem, hashlib.sha256(raw).hexdigest()))
    source = DatasetSource(name="tiny", title="Tiny", mirrors=(f"{base}/good/",),
                           files={"train": tuple(pairs)}, subdirs=("",))
    return source, files


def test_locate_downloads_into_the_default_folder_then_reuses(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_DATA", str(tmp_path / "default"))
    base, hits, served = server
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    source, files = _tiny_source(base, images, np.array([1, 2, 3], np.uint8))
    served.update(files)
    with pytest.raises(DataError, match="spikeforge data download tiny --data-dir"):
        locate_idx(source, "train", tmp_path / "d", download=True)   # a user folder: never
    assert not (tmp_path / "d").exists() and sum(hits.values()) == 0
    paths = locate_idx(source, "train", download=True)
    assert [p.name for p in paths] == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert all(p.parent == tmp_path / "default" / "tiny" for p in paths)
    assert locate_idx(source, "train", download=False) == paths
    assert sum(hits.values()) == 2


def test_offline_without_files_says_where_and_what(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_DATA", str(tmp_path / "default"))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", data_dir=tmp_path / "mine", download=False)
    message = str(info.value)
    assert str(tmp_path / "mine") in message
    assert "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz" in message
    assert f"spikeforge data download mnist --data-dir {tmp_path / 'mine'}" in message
    assert "\n" not in message
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", download=False)
    message = str(info.value)
    assert str(tmp_path / "default" / "mnist") in message
    assert "'spikeforge data download mnist'" in message and "\n" not in message


def test_search_order_data_dir_alone_else_default_then_system(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_DATA", str(tmp_path / "default"))
    source = replace(FASHION_MNIST, system_dirs=(str(tmp_path / "system"),))
    dirs = search_dirs(source, tmp_path / "mine")
    assert dirs[0] == tmp_path / "mine" and all(tmp_path / "mine" in [d, *d.parents]
                                                for d in dirs)
    assert search_dirs(source, None) == [tmp_path / "default" / "fashion-mnist",
                                         tmp_path / "system"]
    places = (("system", 1, None), ("default/fashion-mnist", 2, None),
              ("mine/FashionMNIST/raw", 3, tmp_path / "mine"))
    for folder, value, data_dir in places:
        write_idx(tmp_path / folder / "t10k-images-idx3-ubyte.gz",
                  np.full((2, 28, 28), value, np.uint8))
        write_idx(tmp_path / folder / "t10k-labels-idx1-ubyte", np.zeros(2, np.uint8))
        images, _ = locate_idx(source, "test", data_dir, download=False)
        assert images.parent == tmp_path / folder


def test_extract_zip_refuses_paths_outside_target(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("Train/3/00001.bin", b"\x01\x02\x03\x04\x05")
    extract_zip(good, tmp_path / "out")
    assert (tmp_path / "out" / "Train" / "3" / "00001.bin").read_bytes() == b"\x01\x02\x03\x04\x05"

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("Train/0/ok.bin", b"12345")
        zf.writestr("../escaped.bin", b"12345")
    with pytest.raises(DataError, match="unsafe member '../escaped.bin'"):
        extract_zip(evil, tmp_path / "out2")
    assert not (tmp_path / "escaped.bin").exists()
    assert not (tmp_path / "out2" / "Train").exists()  # checked before anything is written

    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="not a valid zip archive"):
        extract_zip(tmp_path / "broken.zip", tmp_path / "out3")


def test_download_command_end_to_end(server, tmp_path, monkeypatch, capsys):
    from spikeforge.cli import main
    from spikeforge.data import sources

    monkeypatch.setenv("SPIKEFORGE_DATA", str(tmp_path / "default"))
    base, hits, served = server
    files, split_files = {}, {}
    for split, prefix, n in (("train", "train", 5), ("test", "t10k", 3)):
        images = np.full((n, 28, 28), 9, np.uint8)
        labels = np.arange(n, dtype=np.uint8)
        pair = []
        for stem, array in ((f"{prefix}-images-idx3-ubyte", images),
                            (f"{prefix}-labels-idx1-ubyte", labels)):
            files[stem + ".gz"] = encode_idx(array)
            pair.append(RemoteFile(stem, hashlib.sha256(files[stem + ".gz"]).hexdigest()))
        split_files[split] = tuple(pair)
    served.update(files)
    fake = replace(sources.MNIST, mirrors=(f"{base}/missing/", f"{base}/good/"), files=split_files)
    monkeypatch.setitem(sources.SOURCES, "mnist", fake)
    assert main(["data", "download", "mnist", "--data-dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "mnist train: 5 images" in out and "mnist test: 3 images" in out
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted(files)
    assert sum(v for k, v in hits.items() if k.startswith("/good/")) == 4
    ds = load_dataset("mnist", "test", data_dir=tmp_path / "d", download=False)
    assert ds.labels.tolist() == [0, 1, 2] and int(ds.images.max()) == 9


def test_download_replaces_a_damaged_file_and_keeps_a_good_one(server, tmp_path):
    """A truncated file under the official name is downloaded again (atomically); one under
    another name is set aside as NAME.damaged; an intact file is never fetched again."""
    base, hits, served = server
    served.update({"a-images-idx3-ubyte.gz": PAYLOAD, "a-labels-idx1-ubyte.gz": PAYLOAD})
    source = replace(MNIST, mirrors=(f"{base}/good/",), files={"test": (
        RemoteFile("a-images-idx3-ubyte", SHA), RemoteFile("a-labels-idx1-ubyte", SHA))})
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "a-images-idx3-ubyte.gz").write_bytes(gzip.compress(PAYLOAD)[:-20])  # truncated
    (folder / "a-labels-idx1-ubyte").write_bytes(PAYLOAD[:-1] + b"\x07")          # wrong bytes
    images, labels = download_idx(source, "test", folder)
    assert gzip.decompress(images.read_bytes()) == PAYLOAD
    assert gzip.decompress(labels.read_bytes()) == PAYLOAD
    assert _leftovers(folder) == ["a-images-idx3-ubyte.gz", "a-labels-idx1-ubyte.damaged",
                                  "a-labels-idx1-ubyte.gz"]
    assert sum(hits.values()) == 2
    download_idx(source, "test", folder)
    assert sum(hits.values()) == 2
