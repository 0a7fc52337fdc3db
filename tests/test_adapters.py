"""Adapters: Dataset Cartography logs and long tables -> native dynamics runs -> profiles."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import soicurate
from soicurate.errors import LogFormatError, UsageError
from soicurate.profiling.sources import detect_format, open_run
from soicurate.recording.adapters import (
    TableMapping,
    find_cartography_files,
    import_cartography,
    import_table,
    stable_example_id,
)
from soicurate.recording.adapters import cartography as carto_mod
from soicurate.recording.manifest import Manifest

# -- a hand-made Cartography log ------------------------------------------------------------
# 4 examples x 3 epochs, 3 labels. Correctness sequences (argmax == gold):
#   guid 10 (gold 0): 1 1 1   guid 11 (gold 1): 0 1 0   guid 12 (gold 2): 1 0 1   guid 13 (gold 1): 0 0 0
HAND_GOLD = {10: 0, 11: 1, 12: 2, 13: 1}
HAND_LOGITS = {
    10: [[2.0, 0.5, -1.0], [3.0, 0.0, 0.0], [1.2, 1.1, -0.3]],
    11: [[1.0, 0.2, 0.1], [0.0, 1.5, -0.5], [0.3, 0.2, 0.25]],
    12: [[0.1, 0.2, 0.9], [1.0, 0.0, 0.5], [-1.0, -2.0, 2.5]],
    13: [[0.0, -1.0, 1.0], [2.0, 1.0, 0.0], [0.5, 0.4, 0.6]],
}


def _softmax(row):
    m = max(row)
    z = sum(math.exp(x - m) for x in row)
    return [math.exp(x - m) / z for x in row]


def _hand_stats(logits_per_epoch, gold):
    """The formulas, one example at a time: (confidence, variability, correctness, forgetting)."""
    p = [_softmax(row)[gold] for row in logits_per_epoch]
    correct = [int(max(range(len(row)), key=row.__getitem__) == gold) for row in logits_per_epoch]
    confidence = sum(p) / len(p)
    variability = math.sqrt(sum((x - confidence) ** 2 for x in p) / len(p))
    correctness = sum(correct) / len(correct)
    forgetting = sum(1 for a, b in zip(correct, correct[1:]) if a == 1 and b == 0)
    return confidence, variability, correctness, forgetting


def _write_epoch(path: Path, records, *, raw_lines=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        if raw_lines is not None:
            fh.write("".join(line + "\n" for line in raw_lines))
        else:
            for rec in records:
                fh.write(json.dumps(rec) + "\n")
    return path


def _hand_records(n, guid=lambda g: g, logits=HAND_LOGITS, gold=HAND_GOLD):
    return [{"guid": guid(g), f"logits_epoch_{n}": rows[n], "gold": gold[g]} for g, rows in logits.items()]


def make_cartography(root: Path, *, subdir=True, guid=lambda g: g, epochs=(0, 1, 2)) -> Path:
    folder = root / "training_dynamics" if subdir else root
    for i, n in enumerate(epochs):
        recs = _hand_records(i, guid)
        recs = [{**{k: v for k, v in r.items() if not k.startswith("logits")}, f"logits_epoch_{n}": r[f"logits_epoch_{i}"]}
                for r in recs]  # fmt: skip
        _write_epoch(folder / f"dynamics_epoch_{n}.jsonl", recs[::-1] if i % 2 else recs)  # line order varies
    return root


# -- Cartography ----------------------------------------------------------------------------
def test_cartography_profile_matches_the_formulas(tmp_path):
    root = make_cartography(tmp_path / "run")
    prof = soicurate.profile(root).sort("example_id")
    assert prof["example_id"].to_list() == [10, 11, 12, 13]
    assert prof["label"].to_list() == [HAND_GOLD[g] for g in (10, 11, 12, 13)]
    for row in prof.iter_rows(named=True):
        conf, var, corr, forg = _hand_stats(HAND_LOGITS[row["example_id"]], HAND_GOLD[row["example_id"]])
        assert row["confidence"] == pytest.approx(conf, abs=1e-6)
        assert row["variability"] == pytest.approx(var, abs=1e-6)
        assert row["correctness"] == pytest.approx(corr)
        assert row["forgetting_events"] == forg
    assert prof["forgetting_events"].to_list() == [0, 1, 1, 0]
    assert prof["correctness"].to_list() == pytest.approx([1.0, 1 / 3, 2 / 3, 0.0])
    assert prof["category"].cast(pl.String).to_list() == ["always_correct", "forgotten", "forgettable", "unlearned"]
    # pointing at training_dynamics/ itself gives the same profile
    again = soicurate.profile(root / "training_dynamics").sort("example_id")
    assert again["confidence"].to_list() == prof["confidence"].to_list()


def test_import_cartography_writes_a_native_run(tmp_path):
    root = make_cartography(tmp_path / "logs", subdir=False, epochs=(0, 2, 5))
    out = import_cartography(root, tmp_path / "native", label_names=["a", "b", "c"])
    m = Manifest.load(out)
    assert m.epochs == [1, 2, 3] and m.num_examples == 4 and m.label_names == ["a", "b", "c"]
    assert m.recorded_by == "import" and m.has_margin and m.has_probs
    assert m.extra["imported_from"] == "cartography" and m.extra["source"] == str(root)
    assert m.extra["source_epochs"] == [0, 2, 5]
    assert not (out / "examples.parquet").exists()  # integer guids: no examples file needed
    dyn = soicurate.read_dynamics(out)
    for row in dyn.iter_rows(named=True):
        logits = HAND_LOGITS[row["example_id"]][row["epoch"] - 1]
        probs = _softmax(logits)
        gold = HAND_GOLD[row["example_id"]]
        assert row["gold"] == gold
        assert row["pred"] == int(np.argmax(logits))
        assert row["p_gold"] == pytest.approx(probs[gold], rel=1e-6)
        assert row["loss"] == pytest.approx(-math.log(probs[gold]), rel=1e-5)
        assert row["margin"] == pytest.approx(logits[gold] - max(x for j, x in enumerate(logits) if j != gold), abs=1e-6)
        assert list(row["probs"]) == pytest.approx(probs, rel=1e-6)
    assert sorted(os.listdir(tmp_path)) == ["logs", "native"]


def test_find_cartography_files(tmp_path):
    assert find_cartography_files(tmp_path / "nope", required=False) == {}
    assert find_cartography_files(tmp_path, required=False) == {}
    with pytest.raises(LogFormatError, match="no Cartography logs found"):
        find_cartography_files(tmp_path)
    with pytest.raises(LogFormatError, match="does not exist"):
        find_cartography_files(tmp_path / "nope")
    make_cartography(tmp_path / "a", epochs=(0, 1, 10))
    (tmp_path / "a" / "training_dynamics" / "notes.txt").write_text("x")
    found = find_cartography_files(tmp_path / "a")
    assert list(found) == [0, 1, 10]
    assert found[10].name == "dynamics_epoch_10.jsonl"
    assert find_cartography_files(tmp_path / "a" / "training_dynamics") == found
    assert detect_format(tmp_path / "a") == "cartography"
    # epoch 1 written twice under different spellings
    _write_epoch(tmp_path / "a" / "training_dynamics" / "dynamics_epoch_01.jsonl", _hand_records(0))
    with pytest.raises(LogFormatError, match="two files hold epoch 1"):
        find_cartography_files(tmp_path / "a", required=False)


def test_string_guids_are_hashed_and_kept(tmp_path):
    root = make_cartography(tmp_path / "run", guid=lambda g: f"snli-{g}")
    out = import_cartography(root, tmp_path / "native")
    ex = pl.read_parquet(out / "examples.parquet")
    expected = {f"snli-{g}": int.from_bytes(hashlib.blake2b(f"snli-{g}".encode(), digest_size=8).digest(), "big") & (2**63 - 1)
                for g in HAND_GOLD}  # fmt: skip
    assert dict(zip(ex["guid"], ex["example_id"])) == expected
    assert all(stable_example_id(g) == i for g, i in expected.items())
    assert ex["example_id"].to_list() == sorted(expected.values())
    assert Manifest.load(out).group_columns == []
    prof = soicurate.profile(out)
    by_guid = {g: i for i, g in zip(ex["example_id"], ex["guid"])}
    row = prof.filter(pl.col("example_id") == by_guid["snli-11"]).row(0, named=True)
    assert row["forgetting_events"] == 1 and row["label"] == 1


def test_integer_string_guids_become_ids_and_odd_ones_are_hashed(tmp_path):
    out = import_cartography(make_cartography(tmp_path / "a", guid=str), tmp_path / "na")
    assert soicurate.read_dynamics(out)["example_id"].unique().sort().to_list() == [10, 11, 12, 13]
    assert not (out / "examples.parquet").exists()
    out = import_cartography(make_cartography(tmp_path / "b", guid=lambda g: f"0{g}"), tmp_path / "nb")
    assert pl.read_parquet(out / "examples.parquet")["guid"].sort().to_list() == ["010", "011", "012", "013"]


def test_mixed_guid_types_and_blank_lines_use_the_line_parser(tmp_path):
    folder = tmp_path / "run" / "training_dynamics"
    for n in range(2):
        lines = [json.dumps({"guid": g if g % 2 else f"x{g}", f"logits_epoch_{n}": HAND_LOGITS[g][n], "gold": HAND_GOLD[g]})
                 for g in HAND_GOLD]  # fmt: skip
        _write_epoch(folder / f"dynamics_epoch_{n}.jsonl", None, raw_lines=[lines[0], "", *lines[1:]])
    out = import_cartography(tmp_path / "run", tmp_path / "native")
    assert sorted(pl.read_parquet(out / "examples.parquet")["guid"].to_list()) == ["11", "13", "x10", "x12"]


def test_hash_collisions_are_reported(tmp_path, monkeypatch):
    root = make_cartography(tmp_path / "run", guid=lambda g: f"g{g}")
    monkeypatch.setattr(carto_mod, "stable_ids", lambda guids: np.full(len(guids), 7, np.int64))
    with pytest.raises(LogFormatError, match="hash to the same example id 7"):
        import_cartography(root, tmp_path / "native")
    assert not (tmp_path / "native").exists()


def test_output_directory_rules(tmp_path):
    root = make_cartography(tmp_path / "run")
    out = tmp_path / "native"
    out.mkdir()
    with pytest.raises(UsageError, match="already exists"):
        import_cartography(root, out)
    import_cartography(root, out, overwrite=True)
    assert Manifest.load(out).num_examples == 4
    with pytest.raises(UsageError, match="at least two labels"):
        import_cartography(root, tmp_path / "x", label_names=["only"])
    with pytest.raises(LogFormatError, match="3 values but 2 label names"):
        import_cartography(root, tmp_path / "x", label_names=["a", "b"])
    assert not (tmp_path / "x").exists()


def _rec(n, guid, logits, gold, **extra):
    return json.dumps({"guid": guid, f"logits_epoch_{n}": logits, "gold": gold, **extra})


def _good_lines(n):
    return [_rec(n, g, HAND_LOGITS[g][n], HAND_GOLD[g]) for g in HAND_GOLD]


# Each case: (epoch file to spoil, its lines, expected message fragments, expected row).
BAD_CASES = {
    "invalid_json": (1, lambda L: L[:2] + [L[2][:25]] + L[3:], ["invalid JSON"], 3),
    "truncated_last_line": (2, lambda L: L[:3] + [L[3][:-7]], ["invalid JSON"], 4),
    "not_an_object": (0, lambda L: L[:1] + ["[1, 2]"] + L[2:], ["expected a JSON object"], 2),
    "missing_guid": (0, lambda L: L[:1] + [json.dumps({"logits_epoch_0": [0, 1, 2], "gold": 1})] + L[2:], ["missing key 'guid'"], 2),
    "missing_gold": (1, lambda L: L[:3] + [json.dumps({"guid": 13, "logits_epoch_1": [0, 1, 2]})], ["missing key 'gold'", "guid '13'"], 4),
    "missing_logits": (1, lambda L: [json.dumps({"guid": 10, "gold": 0})] + L[1:], ["missing key 'logits_epoch_1'", "guid '10'"], 1),
    "wrong_epoch_key": (2, lambda L: L[:1] + [_rec(1, 11, [0, 1, 2], 1)] + L[2:], ["'logits_epoch_1'", "expected 'logits_epoch_2'", "guid '11'"], 2),
    "width_within_file": (1, lambda L: L[:2] + [_rec(1, 12, [0.0, 1.0], 2)] + L[3:], ["has 2 values but the logs have 3 labels", "guid '12'"], 3),
    "width_across_epochs": (2, lambda L: [_rec(2, g, [0.1, 0.2, 0.3, 0.4], HAND_GOLD[g]) for g in HAND_GOLD], ["has 4 values but the logs have 3 labels", "guid '10'"], 1),
    "nan_logit": (1, lambda L: L[:1] + [_rec(1, 11, [0.0, float("nan"), 1.0], 1)] + L[2:], ["NaN or infinite", "guid '11'"], 2),
    "inf_logit": (0, lambda L: L[:3] + [_rec(0, 13, [0.0, float("inf"), 1.0], 1)], ["NaN or infinite", "guid '13'"], 4),
    "gold_out_of_range": (0, lambda L: L[:2] + [_rec(0, 12, [0, 1, 2], 3)] + L[3:], ["gold label 3 out of range", "guid '12'"], 3),
    "gold_negative": (1, lambda L: L[:2] + [_rec(1, 12, [0, 1, 2], -1)] + L[3:], ["gold label -1 out of range"], 3),
    "gold_not_int": (1, lambda L: L[:2] + [_rec(1, 12, [0, 1, 2], 1.5)] + L[3:], ["gold must be an integer"], 3),
    "guid_null": (1, lambda L: L[:2] + [_rec(1, None, [0, 1, 2], 2)] + L[3:], ["guid must be a string or an integer"], 3),
    "duplicate_guid": (1, lambda L: L + [L[1]], ["duplicate guid '11'", "first on line 2"], 5),
    "extra_guid_later": (2, lambda L: L[:3] + [_rec(2, 99, [0, 1, 2], 1)], ["guids differ between epochs", "guid '99'", "dynamics_epoch_0.jsonl"], 4),
    "gold_changes": (2, lambda L: L[:1] + [_rec(2, 11, [0, 1, 2], 2)] + L[2:], ["gold label changes between epochs", "guid '11'", "1 in dynamics_epoch_0.jsonl, 2 here"], 2),
    "gold_changes_after_blank_line": (1, lambda L: ["", *L[:3], _rec(1, 13, [0, 1, 2], 0)], ["gold label changes", "guid '13'"], 5),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_cartography_input_names_file_row_and_guid(tmp_path, case):
    n, spoil, fragments, row = BAD_CASES[case]
    root = make_cartography(tmp_path / "run")
    path = root / "training_dynamics" / f"dynamics_epoch_{n}.jsonl"
    _write_epoch(path, None, raw_lines=spoil(_good_lines(n)))
    out = tmp_path / "native"
    with pytest.raises(LogFormatError) as info:
        import_cartography(root, out)
    msg = str(info.value)
    assert msg.startswith(str(path) + ": "), msg
    assert f"(row {row})" in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    assert "\n" not in msg
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["run"]  # no temporary directory left behind


def test_bad_cartography_file_level_problems(tmp_path):
    root = make_cartography(tmp_path / "run")
    folder = root / "training_dynamics"
    _write_epoch(folder / "dynamics_epoch_1.jsonl", None, raw_lines=["", "  "])
    with pytest.raises(LogFormatError, match=r"dynamics_epoch_1\.jsonl: file is empty"):
        import_cartography(root, tmp_path / "native")
    _write_epoch(folder / "dynamics_epoch_1.jsonl", _hand_records(1)[:3])  # guid 13 missing
    with pytest.raises(LogFormatError) as info:
        import_cartography(root, tmp_path / "native")
    msg = str(info.value)
    assert "dynamics_epoch_1.jsonl" in msg and "guid '13'" in msg and "missing here" in msg
    assert not (tmp_path / "native").exists()


def test_string_guids_that_differ_between_epochs(tmp_path):
    root = make_cartography(tmp_path / "run", guid=lambda g: f"s{g}")
    path = root / "training_dynamics" / "dynamics_epoch_2.jsonl"
    lines = path.read_text().splitlines()
    _write_epoch(path, None, raw_lines=[*lines[:2], "", _rec(2, "zzz", [0, 1, 2], 1), *lines[3:]])
    with pytest.raises(LogFormatError) as info:
        import_cartography(root, tmp_path / "native")
    assert str(info.value) == f"{path}: guids differ between epochs: guid 'zzz' is not in dynamics_epoch_0.jsonl (row 4)"
    _write_epoch(path, None, raw_lines=lines[:3])
    with pytest.raises(LogFormatError, match="guid 's1[0-3]' of dynamics_epoch_0.jsonl is missing here"):
        import_cartography(root, tmp_path / "native")
    assert sorted(os.listdir(tmp_path)) == ["run"]


# -- long tables ----------------------------------------------------------------------------
BIN_GOLD = {3: 1, 5: 0, 8: 1, 9: 0, 20: 1}
BIN_P1 = {  # probability of label 1 at epochs 0.5, 1.0, 2.0
    3: [0.6, 0.4, 0.9],
    5: [0.3, 0.7, 0.2],
    8: [0.2, 0.3, 0.45],
    9: [0.1, 0.05, 0.2],
    20: [0.55, 0.8, 0.95],
}
BIN_EPOCHS = [0.5, 1.0, 2.0]
BIN_SOURCE = {3: "news", 5: "reviews", 8: "news", 9: "forums", 20: "reviews"}


def binary_long_table(shuffle_seed=0) -> pl.DataFrame:
    rows = []
    for ex, gold in BIN_GOLD.items():
        for e, p1 in zip(BIN_EPOCHS, BIN_P1[ex]):
            p_gold = p1 if gold == 1 else 1 - p1
            rows.append({"id": ex, "ep": e, "label": gold, "probs": [1 - p1, p1],
                         "logits": [0.0, math.log(p1 / (1 - p1))], "pred": int(p1 >= 0.5), "p_gold": p_gold,
                         "p1": p1, "source": BIN_SOURCE[ex]})  # fmt: skip
    df = pl.DataFrame(rows)
    return df.sample(fraction=1.0, shuffle=True, seed=shuffle_seed)


def write_table(df: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        lists = [c for c, t in df.schema.items() if isinstance(t, pl.List)]
        df = df.with_columns(
            ("[" + pl.col(c).cast(pl.List(pl.String)).list.join(", ") + "]").alias(c) for c in lists
        )
        df.write_csv(path)
    elif path.suffix in (".jsonl", ".ndjson"):
        df.write_ndjson(path)
    else:
        df.write_parquet(path)
    return path


MAPPINGS = {
    "probs": dict(probs="probs"),
    "logits": dict(logits="logits"),
    "pred+p_gold": dict(pred="pred", p_gold="p_gold"),
    "prob": dict(prob="p1"),
}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("source", sorted(MAPPINGS))
def test_long_table_all_formats_and_sources(tmp_path, suffix, source):
    path = write_table(binary_long_table(), tmp_path / f"dyn{suffix}")
    mapping = TableMapping(id="id", epoch="ep", gold="label", groups=("source",), **MAPPINGS[source])
    out = import_table(path, tmp_path / "native", mapping)
    m = Manifest.load(out)
    assert m.epochs == [1, 2, 3] and m.extra["source_epochs"] == BIN_EPOCHS
    assert m.extra["imported_from"] == "table" and m.recorded_by == "import"
    assert m.label_names == ["0", "1"] and m.group_columns == ["source"]
    dyn = soicurate.read_dynamics(out)
    assert dyn.height == 15
    for row in dyn.iter_rows(named=True):
        ex, e = row["example_id"], row["epoch"]
        p1 = BIN_P1[ex][e - 1]
        p_gold = p1 if BIN_GOLD[ex] == 1 else 1 - p1
        assert row["gold"] == BIN_GOLD[ex]
        assert row["pred"] == int(p1 >= 0.5)
        assert row["p_gold"] == pytest.approx(p_gold, rel=1e-6)
        assert row["loss"] == pytest.approx(-math.log(p_gold), rel=1e-5)
        if source != "pred+p_gold":
            assert row["margin"] == pytest.approx(math.log(p_gold / (1 - p_gold)), abs=1e-5)
    assert ("margin" in dyn.columns) == (source != "pred+p_gold")
    prof = soicurate.profile(out).sort("example_id")
    assert prof["source"].to_list() == [BIN_SOURCE[i] for i in sorted(BIN_GOLD)]
    for row in prof.iter_rows(named=True):
        ex = row["example_id"]
        p = [p1 if BIN_GOLD[ex] == 1 else 1 - p1 for p1 in BIN_P1[ex]]
        correct = [int((p1 >= 0.5) == BIN_GOLD[ex]) for p1 in BIN_P1[ex]]
        assert row["confidence"] == pytest.approx(np.mean(p), abs=1e-6)
        assert row["variability"] == pytest.approx(np.std(p, ddof=0), abs=1e-6)
        assert row["correctness"] == pytest.approx(np.mean(correct))
        assert row["forgetting_events"] == sum(a == 1 and b == 0 for a, b in zip(correct, correct[1:]))


def test_long_table_three_labels_from_logits_matches_cartography(tmp_path):
    rows = [{"example_id": g, "epoch": e, "gold": HAND_GOLD[g], "logits": HAND_LOGITS[g][e]}
            for g in HAND_GOLD for e in range(3)]  # fmt: skip
    path = write_table(pl.DataFrame(rows), tmp_path / "t.parquet")
    from_table = soicurate.profile([open_run(path, TableMapping(logits="logits"))])
    from_carto = soicurate.profile(make_cartography(tmp_path / "c"))
    cols = ["example_id", "confidence", "variability", "correctness", "forgetting_events", "category"]
    assert from_table.select(cols).sort("example_id").equals(from_carto.select(cols).sort("example_id"))


def test_table_string_ids_label_names_and_groups(tmp_path):
    df = binary_long_table().with_columns(
        ("doc-" + pl.col("id").cast(pl.String)).alias("id"),
        pl.when(pl.col("label") == 1).then(pl.lit("pos")).otherwise(pl.lit("neg")).alias("label"),
        pl.lit("en").alias("language"),
    )
    path = write_table(df, tmp_path / "t.jsonl")
    mapping = TableMapping(id="id", epoch="ep", gold="label", probs="probs", groups=["source", "language"],
                           label_names=["neg", "pos"])  # fmt: skip
    out = import_table(path, tmp_path / "native", mapping)
    ex = pl.read_parquet(out / "examples.parquet")
    assert set(ex.columns) == {"example_id", "source", "language", "guid"}
    assert Manifest.load(out).group_columns == ["source", "language"]
    assert dict(zip(ex["guid"], ex["example_id"])) == {f"doc-{i}": stable_example_id(f"doc-{i}") for i in BIN_GOLD}
    assert dict(zip(ex["guid"], ex["source"])) == {f"doc-{i}": s for i, s in BIN_SOURCE.items()}
    prof = soicurate.profile(out)
    assert set(prof["label_name"]) == {"neg", "pos"}
    assert {"source", "language"} <= set(prof.columns)
    # a string id that the first epoch does not have
    df = df.sort("ep", "id").with_columns(
        pl.when((pl.col("ep") == 2.0) & (pl.col("id") == "doc-5")).then(pl.lit("doc-55")).otherwise(pl.col("id")).alias("id")
    )
    path = write_table(df, tmp_path / "t2.csv")
    with pytest.raises(LogFormatError) as info:
        import_table(path, tmp_path / "native2", mapping)
    assert str(info.value) == (
        f"{path}: epoch 2.0: example ids differ between epochs: id 'doc-55' is not in epoch 0.5 (row 13)"  # doc-20, doc-3, doc-5, ...
    )
    assert not (tmp_path / "native2").exists()


def _spoil(df: pl.DataFrame, where, **values) -> pl.DataFrame:
    return df.with_columns(pl.when(where).then(pl.lit(v)).otherwise(pl.col(c)).alias(c) for c, v in values.items())


def _sorted_table() -> pl.DataFrame:
    return binary_long_table().sort("ep", "id")  # row r (1-based) = index r - 1


TABLE_BAD = {
    # name: (suffix, spoil(df) -> df, mapping kwargs, fragments, row)
    "nan_p_gold": (".parquet", lambda d: _spoil(d, pl.col("id") == 8, p_gold=float("nan")), MAPPINGS["pred+p_gold"],
                   ["p_gold is NaN", "example_id 8", "epoch 0.5"], 3),
    "p_gold_above_one": (".csv", lambda d: _spoil(d, (pl.col("id") == 9) & (pl.col("ep") == 1.0), p_gold=1.5),
                         MAPPINGS["pred+p_gold"], ["p_gold 1.5 is outside [0, 1]", "example_id 9", "epoch 1.0"], 9),
    "prob_negative": (".jsonl", lambda d: _spoil(d, (pl.col("id") == 20) & (pl.col("ep") == 2.0), p1=-0.2),
                      MAPPINGS["prob"], ["prob -0.2 is outside [0, 1]", "example_id 20"], 15),
    "probs_out_of_range": (".parquet", lambda d: d.with_columns(
        pl.when(pl.col("id") == 5).then(pl.lit([1.5, -0.5])).otherwise(pl.col("probs")).alias("probs")),
        MAPPINGS["probs"], ["outside [0, 1]", "example_id 5"], 2),
    "probs_do_not_sum_to_one": (".csv", lambda d: d.with_columns(
        pl.when((pl.col("id") == 3) & (pl.col("ep") == 2.0)).then(pl.lit([0.5, 0.9])).otherwise(pl.col("probs")).alias("probs")),
        MAPPINGS["probs"], ["probs sum to 1.4, not 1", "example_id 3", "epoch 2.0"], 11),
    "probs_wrong_width": (".jsonl", lambda d: d.with_columns(
        pl.when(pl.col("id") == 9).then(pl.lit([0.2, 0.3, 0.5])).otherwise(pl.col("probs")).alias("probs")),
        MAPPINGS["probs"], ["has 3 values, expected 2", "example_id 9"], 4),
    "logits_nan": (".parquet", lambda d: d.with_columns(
        pl.when((pl.col("id") == 8) & (pl.col("ep") == 1.0)).then(pl.lit([0.0, float("nan")])).otherwise(pl.col("logits")).alias("logits")),
        MAPPINGS["logits"], ["NaN, infinite or missing", "example_id 8"], 8),
    "csv_list_unparsable": (".csv", None, MAPPINGS["probs"], ["not a list of numbers", "'[0.5, oops]'"], 7),
    "duplicate_id_epoch": (".parquet", lambda d: _spoil(d, (pl.col("id") == 9) & (pl.col("ep") == 1.0), id=8),
                           MAPPINGS["probs"], ["duplicate row for this example and epoch", "first at row 8", "example_id 8"], 9),
    "gold_out_of_range": (".parquet", lambda d: _spoil(d, pl.col("id") == 5, label=2), MAPPINGS["prob"],
                          ["gold label 2 out of range", "example_id 5"], 2),
    "gold_changes": (".csv", lambda d: _spoil(d, (pl.col("id") == 20) & (pl.col("ep") == 1.0), label=0),
                     MAPPINGS["probs"], ["gold label changes between epochs", "example_id 20", "1 in epoch 0.5, 0 here"], 10),
    "group_changes": (".parquet", lambda d: _spoil(d, (pl.col("id") == 3) & (pl.col("ep") == 2.0), source="forums"),
                      MAPPINGS["probs"], ["group column 'source' changes", "'news' in epoch 0.5, 'forums' here", "example_id 3"], 11),
    "id_missing_value": (".jsonl", lambda d: d.with_columns(
        pl.when(pl.col("id") == 9).then(None).otherwise(pl.col("id")).alias("id")), MAPPINGS["probs"],
        ["column 'id' (id) has a missing value"], 4),
    "extra_id_in_later_epoch": (".parquet", lambda d: _spoil(d, (pl.col("id") == 9) & (pl.col("ep") == 2.0), id=77),
                                MAPPINGS["probs"], ["example ids differ between epochs", "not in epoch 0.5", "example_id 77"], 14),
}


@pytest.mark.parametrize("case", sorted(TABLE_BAD))
def test_bad_table_input_names_file_row_and_example(tmp_path, case):
    suffix, spoil, kwargs, fragments, row = TABLE_BAD[case]
    df = _sorted_table()
    path = tmp_path / f"t{suffix}"
    if spoil is None:  # a CSV cell that is not a list
        write_table(df, path)
        lines = path.read_text().splitlines()
        lines[row] = lines[row].replace(lines[row][lines[row].index('"[') : lines[row].index(']"') + 2], '"[0.5, oops]"', 1)
        path.write_text("\n".join(lines) + "\n")
    else:
        write_table(spoil(df), path)
    mapping = TableMapping(id="id", epoch="ep", gold="label", groups=("source",), **kwargs)
    out = tmp_path / "native"
    with pytest.raises(LogFormatError) as info:
        import_table(path, out, mapping)
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    assert f"row {row}" in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_table_file_level_problems(tmp_path):
    df = _sorted_table()
    path = write_table(df, tmp_path / "t.parquet")
    mapping = TableMapping(id="id", epoch="ep", gold="label", probs="probabilities")
    with pytest.raises(LogFormatError) as info:
        import_table(path, tmp_path / "o", mapping)
    msg = str(info.value)
    assert "column 'probabilities' (mapped as probs) not found" in msg and "available columns: id, ep, label" in msg
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(LogFormatError, match=r"broken\.parquet: cannot read PARQUET file"):
        import_table(bad, tmp_path / "o", TableMapping(probs="probs"))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(LogFormatError, match=r"empty\.csv: file is empty"):
        import_table(empty, tmp_path / "o", TableMapping(probs="probs"))
    with pytest.raises(LogFormatError, match="does not exist"):
        import_table(tmp_path / "missing.csv", tmp_path / "o", TableMapping(probs="probs"))
    # an example missing from a later epoch is caught before the native reader sees it
    short = write_table(df.filter(~((pl.col("id") == 5) & (pl.col("ep") == 2.0))), tmp_path / "short.csv")
    with pytest.raises(LogFormatError) as info:
        import_table(short, tmp_path / "o", TableMapping(id="id", epoch="ep", gold="label", probs="probs"))
    msg = str(info.value)
    assert "short.csv" in msg and "epoch 2.0 has no row for an example of epoch 0.5" in msg and "example_id 5" in msg
    strings = write_table(df.with_columns(pl.col("ep").cast(pl.String) + "x"), tmp_path / "s.parquet")
    with pytest.raises(LogFormatError, match="epoch column 'ep' must hold numbers"):
        import_table(strings, tmp_path / "o", TableMapping(id="id", epoch="ep", gold="label", probs="probs"))
    assert sorted(os.listdir(tmp_path)) == sorted(["t.parquet", "broken.parquet", "empty.csv", "short.csv", "s.parquet"])


def test_table_mapping_validation():
    with pytest.raises(UsageError, match="name one probability source"):
        TableMapping()
    with pytest.raises(UsageError, match="exactly one probability source, not probs and logits"):
        TableMapping(probs="p", logits="l")
    with pytest.raises(UsageError, match="not logits and prob"):
        TableMapping(logits="l", prob="p")
    with pytest.raises(UsageError, match="pred needs p_gold"):
        TableMapping(pred="yhat")
    with pytest.raises(UsageError, match="p_gold needs pred"):
        TableMapping(p_gold="p", probs="v")
    with pytest.raises(UsageError, match="binary tasks only"):
        TableMapping(prob="p", num_labels=3)
    with pytest.raises(UsageError, match="num_labels is 3 but 2 label_names"):
        TableMapping(probs="p", num_labels=3, label_names=["a", "b"])
    with pytest.raises(UsageError, match="at least two labels"):
        TableMapping(probs="p", label_names=["a"])
    with pytest.raises(UsageError, match="must be a column name"):
        TableMapping(probs="")
    m = TableMapping(pred="yhat", p_gold="pg", groups="source")
    assert m.groups == ("source",) and m.source == "pred+p_gold"
    assert ("group", "source") in m.columns()


def test_open_run_reads_tables_with_a_mapping(tmp_path):
    path = write_table(binary_long_table(), tmp_path / "t.csv")
    with pytest.raises(LogFormatError, match="needs a column mapping"):
        open_run(path)
    reader = open_run(path, TableMapping(id="id", epoch="ep", gold="label", prob="p1", groups=("source",)))
    assert reader.num_examples == 5 and reader.epochs == [1, 2, 3] and reader.group_columns == ["source"]


def test_csv_list_spellings_and_label_names(tmp_path, monkeypatch):
    path = tmp_path / "a.csv"
    path.write_text(
        "idx,epoch,label,probs,yhat,pg\n"
        "0,1,b,[0.1 0.9],b,0.9\n"
        "1,1,a,0.6;0.4,a,0.6\n"
        '0,2,b,"[0.3, 0.7]",b,0.7\n'
        "1,2,a,(0.2 0.8),b,0.2\n"
    )
    out = import_table(path, tmp_path / "o1", TableMapping(id="idx", gold="label", probs="probs", label_names=["a", "b"]))
    dyn = soicurate.read_dynamics(out)
    assert dyn["p_gold"].to_list() == pytest.approx([0.9, 0.6, 0.7, 0.2])
    assert dyn["pred"].to_list() == [1, 0, 1, 1]
    assert Manifest.load(out).label_names == ["a", "b"]
    mapping = TableMapping(id="idx", gold="label", pred="yhat", p_gold="pg", label_names=["a", "b"])
    dyn = soicurate.read_dynamics(import_table(path, tmp_path / "o2", mapping))
    assert dyn["pred"].to_list() == [1, 0, 1, 1] and "margin" not in dyn.columns
    with pytest.raises(LogFormatError, match="holds names .* give label_names"):
        import_table(path, tmp_path / "o3", TableMapping(id="idx", gold="label", pred="yhat", p_gold="pg"))
    bad = TableMapping(id="idx", gold="label", probs="probs", label_names=["a", "c"])
    with pytest.raises(LogFormatError, match=r"gold label 'b' is not one of the label names \['a', 'c'\] \(row 1, example_id 0\)"):
        import_table(path, tmp_path / "o3", bad)
    # string ids whose hashes collide
    ids = write_table(binary_long_table().with_columns(("x" + pl.col("id").cast(pl.String)).alias("id")), tmp_path / "s.parquet")
    monkeypatch.setattr(carto_mod, "stable_ids", lambda guids: np.full(len(guids), 42, np.int64))
    with pytest.raises(LogFormatError, match="hash to the same example id 42"):
        import_table(ids, tmp_path / "o3", TableMapping(id="id", epoch="ep", gold="label", prob="p1"))
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "o1", "o2", "s.parquet"]
