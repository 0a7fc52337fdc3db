"""Every bad input of DESIGN.md gets one clear line naming the file and row/example, exit
status 2 from the CLI, and leaves no output (nor temporary files) behind."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from soicurate.cli import main
from soicurate.recording.writer import DynamicsWriter

N = 40
EPOCHS = 3


def make_run(path, n=N, epochs=EPOCHS, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64) * 2  # even ids, so an odd id is "new" but still sorted
    gold = rng.integers(0, 2, n)
    w = DynamicsWriter(path, ["neg", "pos"], seed=seed)
    for _ in range(epochs):
        w.log_logits(ids, rng.normal(size=(n, 2)), gold)
        w.end_epoch()
    return path


def read_epoch(run, epoch):
    table = pq.read_table(run / f"epoch_{epoch:04d}.parquet")
    return {name: table.column(name).to_numpy() for name in table.column_names}


def write_epoch(run, epoch, cols):
    pq.write_table(pa.table(cols), run / f"epoch_{epoch:04d}.parquet")


def edit(run, epoch, column, row, value):
    cols = read_epoch(run, epoch)
    cols[column] = cols[column].copy()
    cols[column][row] = value
    write_epoch(run, epoch, cols)


def profile_cli(tmp_path, *runs, existing=None):
    out = tmp_path / "out" / "profile.parquet"
    out.parent.mkdir(exist_ok=True)
    if existing is not None:
        out.write_bytes(existing)
    result = CliRunner().invoke(main, ["profile", *map(str, runs), "-o", str(out), "--quiet"])
    return result, out


def assert_clean_failure(result, out, *fragments, existing=None):
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output + result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    if existing is None:
        assert not out.exists()
    else:
        assert out.read_bytes() == existing
    assert sorted(p.name for p in out.parent.iterdir()) == ([out.name] if existing is not None else [])


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "run")


def test_valid_run_profiles(tmp_path, run):
    result, out = profile_cli(tmp_path, run)
    assert result.exit_code == 0, result.output + result.stderr
    assert out.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["profile.parquet"]


def test_missing_epoch(tmp_path, run):
    (run / "epoch_0002.parquet").unlink()
    result, out = profile_cli(tmp_path, run)
    assert_clean_failure(result, out, "epoch_0002.parquet", "missing epoch file", "epoch 2")


def test_extra_epoch(tmp_path, run):
    shutil.copy(run / "epoch_0001.parquet", run / "epoch_0007.parquet")
    result, out = profile_cli(tmp_path, run)
    assert_clean_failure(result, out, "epoch_0007.parquet", "extra epoch file", "epoch 7")


def test_duplicate_example_ids(tmp_path, run):
    edit(run, 2, "example_id", 5, 8)  # row 5 (id 10) becomes a second id 8
    result, out = profile_cli(tmp_path, run)
    assert_clean_failure(result, out, "epoch_0002.parquet", "duplicate example_id", "row 5", "example_id 8")


def test_unsorted_rows(tmp_path, run):
    edit(run, 1, "example_id", 3, 1000)
    result, out = profile_cli(tmp_path, run)
    assert_clean_failure(result, out, "epoch_0001.parquet", "not sorted", "row 4")


def test_ids_differ_between_epochs(tmp_path, run):
    edit(run, 3, "example_id", 7, 15)  # 14 -> 15: still sorted, but a different example
    result, out = profile_cli(tmp_path, run)
    assert_clean_failure(result, out, "epoch_0003.parquet", "example ids differ between epochs", "15", "14", "row 7")


def test_missing_rows(tmp_path, run):
    cols = {k: v[:-3] for k, v in read_epoch(run, 2).items()}
    write_epoch(run, 2, cols)
    result, out = profile_cli(tmp_path, run)
    assert_clean_failure(result, out, "epoch_0002.parquet", f"has {N - 3} rows", f"{N}")


@pytest.mark.parametrize(
    "column,value,fragments",
    [
        ("p_gold", np.nan, ["p_gold is NaN"]),
        ("p_gold", 1.5, ["p_gold 1.5 is outside [0, 1]"]),
        ("p_gold", -0.25, ["p_gold -0.25 is outside [0, 1]"]),
        ("gold", 7, ["gold label 7 out of range", "0..1"]),
        ("pred", -1, ["predicted label -1 out of range"]),
        ("loss", np.inf, ["loss is not finite"]),
        ("margin", np.nan, ["margin is not finite"]),
    ],
)
def test_bad_values(tmp_path, run, column, value, fragments):
    edit(run, 2, column, 11, value)
    result, out = profile_cli(tmp_path, run)
    assert_clean_failure(result, out, "epoch_0002.parquet", "row 11", "example_id 22", *fragments)


def test_label_changes_between_epochs(tmp_path, run):
    cols = read_epoch(run, 3)
    cols["gold"] = cols["gold"].copy()
    cols["gold"][4] = 1 - cols["gold"][4]
    write_epoch(run, 3, cols)
    result, out = profile_cli(tmp_path, run)
    assert_clean_failure(result, out, "epoch_0003.parquet", "gold label changes between epochs", "row 4", "example_id 8")


def test_empty_file(tmp_path, run):
    (run / "epoch_0002.parquet").write_bytes(b"")
    result, out = profile_cli(tmp_path, run)
    assert_clean_failure(result, out, "epoch_0002.parquet", "file is empty")


def test_truncated_file(tmp_path, run):
    path = run / "epoch_0003.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    result, out = profile_cli(tmp_path, run)
    assert_clean_failure(result, out, "epoch_0003.parquet", "truncated or not a Parquet file")


def test_file_with_no_rows(tmp_path, run):
    cols = {k: v[:0] for k, v in read_epoch(run, 1).items()}
    write_epoch(run, 1, cols)
    result, out = profile_cli(tmp_path, run)
    assert_clean_failure(result, out, "epoch_0001.parquet", "no rows")


def test_missing_column(tmp_path, run):
    cols = read_epoch(run, 2)
    del cols["loss"]
    write_epoch(run, 2, cols)
    result, out = profile_cli(tmp_path, run)
    assert_clean_failure(result, out, "epoch_0002.parquet", "missing column 'loss'")


def test_missing_manifest(tmp_path, run):
    (run / "manifest.json").unlink()
    result, out = profile_cli(tmp_path, run)
    assert_clean_failure(result, out, "manifest.json", "manifest missing")


def test_manifest_of_another_version(tmp_path, run):
    path = run / "manifest.json"
    data = json.loads(path.read_text())
    data["format_version"] = 99
    path.write_text(json.dumps(data))
    result, out = profile_cli(tmp_path, run)
    assert_clean_failure(result, out, "manifest.json", "format_version 99 is not supported")


def test_manifest_not_json(tmp_path, run):
    (run / "manifest.json").write_text("{not json")
    result, out = profile_cli(tmp_path, run)
    assert_clean_failure(result, out, "manifest.json", "not valid JSON")


def test_run_dir_does_not_exist(tmp_path):
    result, out = profile_cli(tmp_path, tmp_path / "nowhere")
    assert_clean_failure(result, out, "nowhere", "does not exist")


def test_runs_of_different_examples(tmp_path):
    a = make_run(tmp_path / "a", n=40)
    b = make_run(tmp_path / "b", n=30)
    result, out = profile_cli(tmp_path, a, b)
    assert_clean_failure(result, out, str(b), "30 examples", "same examples")


def test_runs_with_different_gold(tmp_path):
    a = make_run(tmp_path / "a", seed=0)
    b = make_run(tmp_path / "b", seed=1)  # same ids, other labels
    result, out = profile_cli(tmp_path, a, b)
    assert_clean_failure(result, out, str(b), "gold label differs")


def test_failure_keeps_previous_output(tmp_path, run):
    edit(run, 2, "p_gold", 3, np.nan)
    result, out = profile_cli(tmp_path, run, existing=b"previous profile")
    assert_clean_failure(result, out, "p_gold is NaN", existing=b"previous profile")


def test_error_in_a_later_block_leaves_nothing(tmp_path):
    run = make_run(tmp_path / "run", n=200)
    edit(run, 1, "p_gold", 190, 2.0)
    out = tmp_path / "out" / "profile.parquet"
    out.parent.mkdir()
    result = CliRunner().invoke(main, ["profile", str(run), "-o", str(out), "--quiet", "--block-rows", "16"])
    assert_clean_failure(result, out, "row 190", "example_id 380")
    assert os.listdir(out.parent) == []
