"""Stage download against real IDX files: a local folder, a loopback HTTP server, Debian's copy."""

from pathlib import Path

import pytest
import torch
from documented import documented
from helpers import serve_folder, write_idx_folder
from torchvision import datasets
from torchvision.datasets import FashionMNIST

from pipeline.choices import DATASETS
from pipeline.download import RAW_SHA256, TORCHVISION_FILES, DataError, download

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def http_mirror(idx_folder):
    """The synthetic .gz files on a loopback HTTP server."""
    folder, sums = idx_folder
    with serve_folder(folder) as url:
        yield url, sums


def test_local_folder_gives_files_torchvision_loads(idx_folder, tmp_path):
    folder, sums = idx_folder
    out = download("FashionMNIST", [str(folder)], tmp_path / "raw", True, pinned={"FashionMNIST": sums})
    train = FashionMNIST(out, train=True, download=False)
    assert train.data.shape == (600, 28, 28) and train.data.dtype == torch.uint8
    assert sorted(p.name for p in (out / "FashionMNIST" / "raw").iterdir()) == sorted(sums)


def test_uncompressed_local_files_work_too(tmp_path):
    sums = write_idx_folder(tmp_path / "plain", gz=False)
    out = download("FashionMNIST", [str(tmp_path / "plain")], tmp_path / "raw", True, pinned={"FashionMNIST": sums})
    assert len(FashionMNIST(out, train=False, download=False)) == 200


def test_loopback_http_mirror_after_a_missing_folder(http_mirror, tmp_path):
    url, sums = http_mirror
    out = download(
        "FashionMNIST", [str(tmp_path / "absent"), url], tmp_path / "raw", True, pinned={"FashionMNIST": sums}
    )
    assert len(FashionMNIST(out, train=True, download=False)) == 600


def test_corrupt_file_gives_checksum_error_and_no_output(idx_folder, http_mirror, tmp_path):
    folder, sums = idx_folder
    url, _ = http_mirror
    path = folder / "train-images-idx3-ubyte.gz"
    import gzip

    data = bytearray(gzip.decompress(path.read_bytes()))
    data[5000] ^= 0xFF  # one flipped pixel
    path.write_bytes(gzip.compress(bytes(data)))
    out = tmp_path / "raw"
    with pytest.raises(DataError) as error:
        download("FashionMNIST", [str(folder), url], out, True, pinned={"FashionMNIST": sums})
    message = str(error.value)
    assert "no source gave a valid train-images-idx3-ubyte" in message
    documented("no source gave a valid", error.value)
    assert message.count("checksum mismatch: sha256") == 2  # both sources serve the corrupt file
    assert str(folder) in message and url in message and "\n" not in message
    assert not out.exists() and list(tmp_path.glob(".raw.*")) == []


def test_damaged_gzip_is_one_line_and_the_next_source_is_tried(idx_folder, tmp_path):
    folder, sums = idx_folder
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in folder.glob("*.gz"):
        data = bytearray(path.read_bytes())
        data[20:60] = bytes(b ^ 0xFF for b in data[20:60])  # bytes flipped near the start of the stream
        (damaged / path.name).write_bytes(bytes(data))
    with pytest.raises(DataError) as error:
        download("FashionMNIST", [str(damaged)], tmp_path / "raw", True, pinned={"FashionMNIST": sums})
    assert str(damaged / "train-images-idx3-ubyte.gz") in str(error.value) and "\n" not in str(error.value)
    out = download("FashionMNIST", [str(damaged), str(folder)], tmp_path / "raw", True, pinned={"FashionMNIST": sums})
    assert len(FashionMNIST(out, train=True, download=False)) == 600


def test_failed_download_keeps_the_previous_output(idx_folder, tmp_path):
    folder, sums = idx_folder
    out = download("FashionMNIST", [str(folder)], tmp_path / "raw", True, pinned={"FashionMNIST": sums})
    before = sorted(p.read_bytes() for p in out.rglob("*-ubyte"))
    with pytest.raises(DataError, match="tried: .*absent"):
        download("FashionMNIST", [str(tmp_path / "absent")], out, True, pinned={"FashionMNIST": sums})
    assert sorted(p.read_bytes() for p in out.rglob("*-ubyte")) == before


def test_refused_url_is_listed_with_the_way_to_get_the_data(tmp_path):
    with pytest.raises(DataError) as error:
        download("FashionMNIST", ["http://127.0.0.1:9/"], tmp_path / "raw", True)
    assert "http://127.0.0.1:9/train-images-idx3-ubyte.gz (URLError" in str(error.value)
    assert "apt-get install dataset-fashion-mnist" in str(error.value)


@pytest.mark.skipif(
    not DEBIAN.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (`make test` installs it when run as root)",
)
def test_debian_files_match_the_pinned_sums(tmp_path):
    out = download("FashionMNIST", [str(DEBIAN)], tmp_path / "raw", True)
    test = FashionMNIST(out, train=False, download=False)
    assert len(test) == 10000 and torch.bincount(test.targets).tolist() == [1000] * 10
    assert set(RAW_SHA256["FashionMNIST"]) == {p.name for p in (out / "FashionMNIST" / "raw").iterdir()}


def test_the_copy_of_torchvisions_file_lists_is_the_installed_torchvisions():
    """download's copy of torchvision's mirrors and MD5s (it does not import torchvision) against the classes'."""
    assert set(TORCHVISION_FILES) == set(DATASETS)
    for name, (mirrors, resources) in TORCHVISION_FILES.items():
        cls = getattr(datasets, name)
        if name == "QMNIST":  # its train and test files by whole URL; the mirrors are MNIST's, for other files
            assert list(resources) == cls.resources["train"] + cls.resources["test"] and mirrors == ("",)
        else:
            assert list(mirrors) == cls.mirrors and list(resources) == cls.resources, name


@pytest.fixture
def torchvision_mirrors(idx_folder, monkeypatch):
    """The source `torchvision` pointed at loopback mirrors laid out like torchvision's (<mirror>/<name>.gz): a
    refused one first, then ours, with the .gz MD5s of our synthetic files where torchvision pins the real ones.
    Only the addresses and sums change: download reads them from its copy of torchvision's as in production."""
    import hashlib

    from helpers import free_port

    folder, _ = idx_folder
    _, real = TORCHVISION_FILES["FashionMNIST"]
    resources = tuple((name, hashlib.md5((folder / name).read_bytes()).hexdigest()) for name, _ in real)
    with serve_folder(folder) as url:
        refused = f"http://127.0.0.1:{free_port()}/"
        monkeypatch.setitem(TORCHVISION_FILES, "FashionMNIST", ((refused, url), resources))
        yield folder, url, refused


def test_torchvision_mirrors_are_tried_in_order_and_the_gz_md5_checked(torchvision_mirrors, tmp_path):
    folder, url, refused = torchvision_mirrors
    out = download("FashionMNIST", ["torchvision"], tmp_path / "raw", True, pinned={})  # no sha256: the MD5
    assert len(FashionMNIST(out, train=True, download=False)) == 600
    assert len(FashionMNIST(out, train=False, download=False)) == 200


def test_a_gz_whose_md5_differs_from_torchvisions_is_refused(torchvision_mirrors, tmp_path):
    folder, url, refused = torchvision_mirrors
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes() + b"\0")  # still a valid gzip stream, another MD5
    with pytest.raises(DataError) as error:
        download("FashionMNIST", ["torchvision"], tmp_path / "raw", True, pinned={})
    message = str(error.value)
    assert "no source gave a valid t10k-labels-idx1-ubyte" in message and "checksum mismatch: .gz MD5" in message
    assert f"{refused}t10k-labels-idx1-ubyte.gz (URLError" in message and "\n" not in message
    assert not (tmp_path / "raw").exists()
    # with checks off the same file passes
    download("FashionMNIST", ["torchvision"], tmp_path / "raw", False, pinned={})
    assert len(FashionMNIST(tmp_path / "raw", train=False, download=False)) == 200


@pytest.mark.parametrize("status", [404, 500])
def test_an_http_error_is_named_and_the_next_source_tried(idx_folder, tmp_path, status):
    import http.server
    import threading

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(status)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    folder, sums = idx_folder
    failing = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        out = download("FashionMNIST", [failing, str(folder)], tmp_path / "raw", True, pinned={"FashionMNIST": sums})
        assert len(FashionMNIST(out, train=True, download=False)) == 600  # the folder after the failing server
        with pytest.raises(DataError) as error:
            download("FashionMNIST", [failing], tmp_path / "other", True, pinned={"FashionMNIST": sums})
    finally:
        server.shutdown()
        server.server_close()
    assert f"{failing}/train-images-idx3-ubyte.gz (HTTPError: HTTP Error {status}" in str(error.value)
    assert not (tmp_path / "other").exists()
