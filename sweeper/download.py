"""`make data`: download CIFAR-10 (python version) with torchvision into DATA_DIR/cifar-10-batches-py.

    bin/_py -m sweeper.download --data-dir data

Needs internet. Without it: one line on stderr saying what failed and where the files go, exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys

from contract import cifarfiles
from contract.config import ExperimentConfig

ARCHIVE = "cifar-10-python.tar.gz"  # what torchvision downloads into the data dir, then unpacks
TIMEOUT_S = 30  # a network that drops packets fails after this, instead of hanging


def download(data_dir: str) -> None:
    from torchvision.datasets import CIFAR10

    os.makedirs(data_dir, exist_ok=True)
    socket.setdefaulttimeout(TIMEOUT_S)
    with contextlib.redirect_stdout(sys.stderr):  # torchvision's progress lines: keep stdout for the result
        CIFAR10(root=data_dir, train=True, download=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default = ExperimentConfig.data_dir
    p.add_argument("--data-dir", default=default, help=f"data directory (the trainers' --data-dir; default: {default})")
    a = p.parse_args(argv)
    target = cifarfiles.folder(a.data_dir)
    if cifarfiles.missing(a.data_dir) is None:
        print(f"CIFAR-10 is already in {target}")
        return 0
    try:
        download(a.data_dir)
    except Exception as e:  # noqa: BLE001 - no network, a proxy, a bad archive: one line
        partial = os.path.join(a.data_dir, ARCHIVE)
        if os.path.exists(partial):
            os.remove(partial)  # a cut download would otherwise be mistaken for the archive next time
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        print(f"error: could not download CIFAR-10 ({reason}); on a machine with internet run `make data` and "
              f"copy {target} here, or unpack {ARCHIVE} into {a.data_dir}", file=sys.stderr)
        return 1
    problem = cifarfiles.missing(a.data_dir)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    print(f"CIFAR-10 is in {target}: {cifarfiles.train_samples(a.data_dir)} training samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
