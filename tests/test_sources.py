"""`sources.discover`: layouts, label files and subsets."""

from __future__ import annotations

import os

import pytest

from alexnet_tf.errors import InputError
from alexnet_tf.prepare import sources
from alexnet_tf.records.schema import TRAIN, VALIDATION
from tests.tiny_imagenet import NAMES, WNIDS, make_dataset


def names(items) -> list[str]:
    return [os.path.basename(item.path) for item in items]


def test_kaggle_layout_with_flat_validation_and_unlabelled_files(tmp_path):
    root = tmp_path / "kaggle"
    data = make_dataset(str(root / "ILSVRC" / "Data" / "CLS-LOC"), per_class=1, val_form="csv", quirks=False)
    for name in ("LOC_val_solution.csv", "LOC_synset_mapping.txt"):  # Kaggle keeps these at the top
        os.rename(os.path.join(data.root, name), root / name)
    (root / "ILSVRC" / "Data" / "CLS-LOC" / "val" / "extra.JPEG").write_bytes(b"x")
    found = sources.discover(str(root))
    assert [(c.wnid, c.name) for c in found.classes] == [(w, NAMES[w]) for w in WNIDS]
    assert {
        n: WNIDS[i.class_index] for n, i in zip(names(found.splits[VALIDATION]), found.splits[VALIDATION], strict=True)
    } == data.validation
    assert [os.path.basename(s.path) for s in found.skipped] == ["extra.JPEG"]
    assert found.skipped[0].reason == "no label in LOC_val_solution.csv"


def test_a_root_of_class_folders_is_the_training_set(tmp_path):
    data = make_dataset(str(tmp_path / "data"), per_class=2, val_form=None, quirks=False)
    found = sources.discover(os.path.join(data.root, "train"))
    assert sorted(names(found.splits[TRAIN])) == sorted(data.train) and VALIDATION not in found.splits
    assert [c.name for c in found.classes] == list(WNIDS)  # no synset file here: named by folder


def test_limit_per_class_is_a_seeded_subset(tmp_path):
    data = make_dataset(str(tmp_path / "data"), per_class=6, val_form=None, quirks=False)
    first = names(sources.discover(data.root, limit_per_class=2).splits[TRAIN])
    assert len(first) == 6 and first == names(sources.discover(data.root, limit_per_class=2).splits[TRAIN])
    others = {tuple(names(sources.discover(data.root, limit_per_class=2, seed=s).splits[TRAIN])) for s in range(1, 6)}
    assert len(others | {tuple(first)}) > 1


def test_conflicting_or_useless_label_options(tmp_path):
    data = make_dataset(str(tmp_path / "data"), per_class=1, val_form="folders", quirks=False)
    with pytest.raises(InputError, match="`val_labels` is only for a flat validation folder"):
        sources.discover(data.root, val_labels=os.path.join(data.root, "LOC_synset_mapping.txt"))
    other = tmp_path / "synsets.txt"
    other.write_text("n00000001 something else\n")
    with pytest.raises(InputError, match="names none of the 3 training classes"):
        sources.discover(data.root, synsets=str(other))
    os.makedirs(os.path.join(data.root, "val", "n00000002"))
    with pytest.raises(InputError, match="n00000002: not a class of the training set"):
        sources.discover(data.root)


def test_files_beside_the_class_folders_are_listed_as_skipped(tmp_path):
    data = make_dataset(str(tmp_path / "data"), per_class=1, val_form=None, quirks=False)
    (tmp_path / "data" / "train" / "n01440764.tar").write_bytes(b"tar")
    (tmp_path / "data" / "train" / ".hidden").write_bytes(b"x")
    found = sources.discover(data.root)
    assert [(os.path.basename(s.path), s.reason) for s in found.skipped] == [("n01440764.tar", "not in a class folder")]
    assert len(found.classes) == 3
