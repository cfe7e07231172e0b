"""Stage `download`: fetch the four IDX files of data.dataset.

Reads params: data.dataset, data.sources.<dataset>, data.verify_checksums.
Writes:       <out>/<Dataset>/raw/<file> (decompressed), the layout that
              torchvision's dataset classes load with download=False.

Each entry of data.sources.<dataset> is tried in order, file by file:
  - a local folder holding the files, gzipped (<name>.gz) or not;
  - an http(s):// base URL serving <base>/<name>.gz;
  - `torchvision`: the mirrors torchvision's own dataset class lists.
Every file is checked before it is kept: the decompressed bytes against the
sha256 sums pinned below where we have them (Debian recompressed its .gz, so
only the decompressed bytes are comparable), else the .gz against
torchvision's pinned MD5. Files are assembled in a temp folder that replaces
<out> only when all four passed: a failure leaves no partial output.
"""

import argparse
import gzip
import hashlib
import urllib.request
import zlib
from pathlib import Path

from tqdm import tqdm

from pipeline.errors import PipelineError, declare_outputs, run_stage
from pipeline.io import atomic_folder
from pipeline.params import load_params

# sha256 of the decompressed files, measured on the Debian package
# dataset-fashion-mnist; their MD5s equal the ones Zalando publishes.
RAW_SHA256 = {
    "FashionMNIST": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
HOW_TO_GET = {
    "FashionMNIST": "install Debian's package (apt-get install dataset-fashion-mnist) "
    "or put the four IDX files in a folder listed in data.sources.FashionMNIST",
}
TIMEOUT_S = 30


class DataError(PipelineError):
    """No source gave a file that passed its checksum."""


# What the source `torchvision` means: torchvision.datasets.<Dataset>.mirrors and .resources (torchvision 0.29),
# copied because importing torchvision (and torch with it) costs 2-3 s of CPU (2.15 s per process in the test
# suite, 2026-12-06), nearly all of this stage's own on small files; tests/test_download.py checks the copy
# against the installed torchvision. QMNIST's are whole URLs.
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_QMNIST = "https://raw.githubusercontent.com/facebookresearch/qmnist/master/"
TORCHVISION_FILES = {
    "FashionMNIST": (
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        (
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
    ),
    "MNIST": (
        _MNIST_MIRRORS,
        (
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
    ),
    "KMNIST": (
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        (
            ("train-images-idx3-ubyte.gz", "bdb82020997e1d708af4cf47b453dcf7"),
            ("train-labels-idx1-ubyte.gz", "e144d726b3acfaa3e44228e80efcd344"),
            ("t10k-images-idx3-ubyte.gz", "5c965bf0a639b31b8f53240b1b52f4d7"),
            ("t10k-labels-idx1-ubyte.gz", "7320c461ea6c1c855c0b718fb2a4b134"),
        ),
    ),
    "QMNIST": (
        ("",),  # its train and test files (not the extra `nist` ones), by whole URL
        (
            (_QMNIST + "qmnist-train-images-idx3-ubyte.gz", "ed72d4157d28c017586c42bc6afe6370"),
            (_QMNIST + "qmnist-train-labels-idx2-int.gz", "0058f8dd561b90ffdd0f734c6a30e5e4"),
            (_QMNIST + "qmnist-test-images-idx3-ubyte.gz", "1394631089c404de565df7b7aeaf9412"),
            (_QMNIST + "qmnist-test-labels-idx2-int.gz", "5b5b05890a5e13444e108efe57b788aa"),
        ),
    ),
}


def dataset_files(dataset):
    """[(gz file name, torchvision's MD5 of it, torchvision's URLs)] for a dataset."""
    mirrors, resources = TORCHVISION_FILES[dataset]
    return [(url.rsplit("/", 1)[-1], md5, [mirror + url for mirror in mirrors]) for url, md5 in resources]


def _candidates(source, gz_name, urls):
    """[(where, read)] for each place `source` may hold the file; read() -> (bytes, gzipped)."""
    raw_name = gz_name.removesuffix(".gz")
    if source == "torchvision":
        found = urls
    elif source.startswith(("http://", "https://")):
        found = [f"{source.rstrip('/')}/{gz_name}"]
    else:
        folder = Path(source)
        for name, gzipped in ((gz_name, True), (raw_name, False)):
            if (folder / name).is_file():
                return [(str(folder / name), lambda p=folder / name, g=gzipped: (p.read_bytes(), g))]
        return [(str(folder), None)]  # reported as not found

    def fetch(url):
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return response.read(), True

    return [(url, lambda u=url: fetch(u)) for url in found]


def _verify(payload, gzipped, md5, sha256):
    """Return the decompressed bytes, or raise ValueError saying which check failed.

    `sha256` is the pinned sum of the decompressed file, or None where we have
    none; `md5` torchvision's sum of the .gz, or None to skip all checks.
    """
    data = gzip.decompress(payload) if gzipped else payload
    if md5 is None and sha256 is None:
        return data
    if sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise ValueError(f"checksum mismatch: sha256 {got}, expected {sha256}")
    elif gzipped:
        got = hashlib.md5(payload).hexdigest()
        if got != md5:
            raise ValueError(f"checksum mismatch: .gz MD5 {got}, expected {md5}")
    else:
        raise ValueError("no pinned checksum for the decompressed file: offer the .gz")
    return data


def fetch_file(dataset, gz_name, md5, urls, sources, sha256):
    """The verified, decompressed bytes of one file from the first source that works."""
    raw_name = gz_name.removesuffix(".gz")
    tried = []
    for source in sources:
        for where, read in _candidates(source, gz_name, urls):
            if read is None:
                tried.append(f"{where} (neither {gz_name} nor {raw_name} there)")
                continue
            try:
                payload, gzipped = read()
            except Exception as e:  # unreachable: refused, timed out, 404
                tried.append(f"{where} ({type(e).__name__}: {e})")
                continue
            try:
                return _verify(payload, gzipped, md5, sha256)
            except (ValueError, OSError, EOFError, zlib.error) as e:  # bad checksum or bad gzip
                tried.append(f"{where} ({e})")
    how = HOW_TO_GET.get(dataset, f"put the IDX files in a folder listed in data.sources.{dataset}")
    raise DataError(
        f"no source gave a valid {raw_name} for {dataset}; tried: {'; '.join(tried) or 'no sources'}. To get it: {how}"
    )


def download(dataset, sources, out, verify, pinned=RAW_SHA256):
    """Fetch all files of `dataset` into out/<dataset>/raw/, all or nothing.

    `pinned` maps dataset -> raw file name -> sha256 (tests pass their own).
    """
    fetched = {}  # all four first (tens of MB), then written: a DataError stays a DataError
    for gz_name, md5, urls in tqdm(dataset_files(dataset), desc=f"download {dataset}", unit="file", disable=None):
        raw_name = gz_name.removesuffix(".gz")
        sha256 = pinned.get(dataset, {}).get(raw_name) if verify else None
        fetched[raw_name] = fetch_file(dataset, gz_name, md5 if verify else None, urls, sources, sha256)
    with atomic_folder(out) as staging:
        raw_dir = staging / dataset / "raw"
        raw_dir.mkdir(parents=True)
        for raw_name, data in fetched.items():
            (raw_dir / raw_name).write_bytes(data)
    return Path(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", required=True, help="folder to hold <Dataset>/raw/")
    args = parser.parse_args()
    declare_outputs(args.out)
    data = load_params(args.params).data
    download(data.dataset, data.sources[data.dataset], args.out, data.verify_checksums)
    print(f"download: {data.dataset} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
