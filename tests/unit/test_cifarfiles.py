"""DATASET=cifar10: refused at validation without its files (one line: where they go, how to get
them); with them, the training-set size is the files' (read from the pickle opcodes up to the
labels, not the pixels). Training on such files: tests/integration/test_cifar.py."""

from __future__ import annotations

import os
import pickle
import pickletools

import pytest

from contract import cifarfiles
from contract.config import ExperimentConfig, validate
from contract.errors import ConfigError
from contract.tables import TRAIN_SAMPLES
from tests import fake_cifar
from trainers.common.data import load


def refusal(**kw) -> str:
    with pytest.raises(ConfigError) as e:
        validate(ExperimentConfig(dataset="cifar10", **kw))
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_files_are_refused_with_where_and_how(tmp_path) -> None:
    message = refusal(data_dir=str(tmp_path / "nowhere"))
    assert os.path.join(str(tmp_path / "nowhere"), "cifar-10-batches-py") in message
    assert "--data-dir/cifar-10-batches-py" in message and "make data" in message
    os.makedirs(tmp_path / "half" / "cifar-10-batches-py")
    (tmp_path / "half" / "cifar-10-batches-py" / "test_batch").write_bytes(b"")
    message = refusal(data_dir=str(tmp_path / "half"))
    assert "data_batch_* not found" in message and "test_batch" not in message.split("not found")[0]


def test_the_training_set_size_is_the_files(tmp_path) -> None:
    d = fake_cifar.write(str(tmp_path), train=(70, 50), test=20)
    assert cifarfiles.train_samples(d) == 120
    validate(ExperimentConfig(dataset="cifar10", data_dir=d, global_batch=120))
    assert "larger than the 120 training samples of dataset cifar10" in refusal(data_dir=d, global_batch=121)
    data = load("cifar10", 0, d)
    assert len(data.y_train) == 120 and len(data.y_val) == 20
    assert data.x_train.shape[1:] == (3, 32, 32)
    assert TRAIN_SAMPLES["cifar10"] == 50000  # the full set's figure stays for what has no files


def test_a_partial_file_set_is_another_experiment(tmp_path) -> None:
    partial = fake_cifar.write(str(tmp_path / "a"), train=(70, 50), test=20)
    bigger = fake_cifar.write(str(tmp_path / "b"), train=(70, 60), test=20)
    a, b = (ExperimentConfig(dataset="cifar10", data_dir=d, global_batch=32) for d in (partial, bigger))
    assert a.identity()["data_size"] == 120 and b.identity()["data_size"] == 130
    assert a.experiment_id() != b.experiment_id() and "-d120-" in a.experiment_id()
    named = ExperimentConfig(dataset="cifar10", data_dir=partial, global_batch=32, data_size=120)
    assert named.identity() == a.identity()  # the whole set, named or not, is one experiment


def test_the_count_stops_before_the_pixels(tmp_path) -> None:
    d = fake_cifar.write(str(tmp_path), train=(30,), test=5)
    path = cifarfiles.train_files(d)[0]
    with open(path, "rb") as f:
        whole = f.read()
    cut = whole[: whole.index(b"C\x04data") + 6]  # everything after the key that follows the labels is gone
    with open(path, "wb") as f:
        f.write(cut)
    cifarfiles._labels_in.cache_clear()
    assert cifarfiles.train_samples(d) == 30


def test_labels_stored_otherwise_are_counted_by_loading(tmp_path) -> None:
    import numpy as np

    d = fake_cifar.write(str(tmp_path), train=(30,), test=5)
    path = cifarfiles.train_files(d)[0]
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((12, 3072), np.uint8), b"labels": np.zeros(12, np.int64)}, f)
    assert cifarfiles.train_samples(d) == 12


def test_a_corrupt_file_is_one_line(tmp_path) -> None:
    d = fake_cifar.write(str(tmp_path), train=(30,), test=5)
    with open(cifarfiles.train_files(d)[0], "wb") as f:
        f.write(b"not a pickle")
    assert "cannot read" in refusal(data_dir=d) and "data_batch_1" in refusal(data_dir=d)


def python2_batch(labels: list[int]) -> bytes:
    """The opcodes Python 2's cPickle (protocol 2) writes for CIFAR-10's batches: str keys as
    SHORT_BINSTRING, the labels as BININT1 appended in groups of 1000, `data` after them (here a
    short string: the count must stop before it)."""
    def s(text: str) -> bytes:
        return b"U" + bytes([len(text)]) + text.encode()
    out = b"\x80\x02}q\x00(" + s("batch_label") + s("training batch 1 of 5") + s("labels") + b"]q\x01"
    for i in range(0, len(labels), 1000):
        out += b"(" + b"".join(b"K" + bytes([x]) for x in labels[i:i + 1000]) + b"e"
    return out + s("data") + s("pixels") + b"u."


def test_the_count_reads_python2_pickles(tmp_path) -> None:
    d = fake_cifar.write(str(tmp_path), train=(30,), test=5)
    path = cifarfiles.train_files(d)[0]
    with open(path, "wb") as f:
        f.write(python2_batch([i % 10 for i in range(2500)]))
    with open(path, "rb") as f:
        assert len(pickle.load(f, encoding="bytes")[b"labels"]) == 2500  # a valid pickle
    with open(path, "rb") as f:  # from the opcodes, not by loading the file
        assert cifarfiles._count_label_list(pickletools.genops(f)) == 2500
    assert cifarfiles.train_samples(d) == 2500
