"""The whole pipeline on a tiny model: stage one, profile, SOI selection, stage two against
a random subset and the full data, evaluation table (in- and out-of-distribution)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from soicurate.cli import main
from soicurate.training.twostage import CONDITIONS, aggregate, format_table
from tiny_model import save_assets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    return root, save_assets(root, splits=(("train", 96, 0), ("test", 40, 1), ("ood", 30, 2)))


def write_config(path, root, model_dir, out, **two_stage):
    section = {"stage_two_epochs": 1, "stage_two_learning_rate": 0.003, "seeds": [0, 1], **two_stage}
    lines = [
        f"model: {model_dir}", f"train: {root / 'train.csv'}", "text_column: sentence",
        f"eval:\n  test: {root / 'test.csv'}\n  ood: {root / 'ood.csv'}",
        "epochs: 3", "learning_rate: 0.005", "batch_size: 16", f"output_dir: {out}",
        "two_stage:", *[f"  {k}: {json.dumps(v)}" for k, v in section.items()],
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def test_two_stage_pipeline_end_to_end(tmp_path, assets):
    root, model_dir = assets
    out = tmp_path / "exp"
    cfg = write_config(tmp_path / "exp.yaml", root, model_dir, out)
    result = CliRunner().invoke(main, ["two-stage", "--config", str(cfg), "--quiet"])
    assert result.exit_code == 0, result.output + result.stderr
    res = json.loads((out / "results.json").read_text())
    # One stage-one row per eval set, then one row per condition, seed and eval set.
    assert {(r["condition"], r["eval"]) for r in res["runs"]} == {(c, e) for c in CONDITIONS for e in ("test", "ood")}
    assert sum(r["condition"] == "soi" for r in res["runs"]) == 2 * 2
    table = res["table"]
    assert {r["condition"] for r in table} == set(CONDITIONS)
    for row in table:
        assert 0 <= row["accuracy_mean"] <= 1 and row["accuracy_std"] >= 0
        assert row["seeds"] == (1 if row["condition"] == "stage_one" else 2)
    # The SOI subset is what the selection says, and the random subset has the same size.
    import polars as pl

    profile = pl.read_parquet(res["profile"])
    chosen = profile.filter(pl.col("category").is_in(["forgettable", "forgotten"]) | (pl.col("region") == "ambiguous"))
    assert res["selection"]["size"] == chosen.height > 0
    soi = pl.read_parquet(out / "subsets" / "soi.parquet")
    assert sorted(soi["example_id"].to_list()) == sorted(chosen["example_id"].to_list())
    assert pl.read_parquet(out / "subsets" / "random-s0.parquet").height == chosen.height
    # The full-data baseline ran exactly as many steps as the SOI condition.
    steps = res["stage_two"]["steps_soi"]
    state = json.loads(next((out / "stage_two" / "full-s0" / "checkpoints").glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["global_step"] == steps
    # Re-running reuses stage one rather than training it again.
    again = CliRunner().invoke(main, ["two-stage", "--config", str(cfg), "--seeds", "0"])
    assert again.exit_code == 0 and "reusing" in again.stderr


def test_bad_two_stage_configs(tmp_path, assets):
    root, model_dir = assets
    cfg = write_config(tmp_path / "a.yaml", root, model_dir, tmp_path / "a", bogus=1)
    r = CliRunner().invoke(main, ["two-stage", "--config", str(cfg)])
    assert r.exit_code == 2 and "unknown two_stage setting(s) bogus" in r.stderr
    cfg = write_config(tmp_path / "b.yaml", root, model_dir, tmp_path / "b", categories=["nonsense"])
    r = CliRunner().invoke(main, ["two-stage", "--config", str(cfg)])
    assert r.exit_code == 2 and "nonsense" in r.stderr


def test_aggregate_and_table():
    rows = [
        {"condition": "soi", "seed": 0, "eval": "test", "accuracy": 0.8, "macro_f1": 0.7},
        {"condition": "soi", "seed": 1, "eval": "test", "accuracy": 0.6, "macro_f1": 0.5},
        {"condition": "random", "seed": 0, "eval": "test", "accuracy": 0.5, "macro_f1": 0.5},
    ]
    table = aggregate(rows)
    soi = next(r for r in table if r["condition"] == "soi")
    assert soi["accuracy_mean"] == pytest.approx(0.7) and soi["accuracy_std"] == pytest.approx(0.1)
    text = format_table(table)
    assert "| soi | 0.7000 ± 0.1000 | 0.6000 ± 0.1000 | 2 |" in text
