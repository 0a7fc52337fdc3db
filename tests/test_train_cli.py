"""`soicurate train` end to end on a tiny model saved to disk and CSV data (no download)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from soicurate.cli import main
from tiny_model import save_assets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    return root, save_assets(root)


def run(args):
    return CliRunner().invoke(main, ["train", *map(str, args)])


def test_train_writes_model_dynamics_and_metrics(tmp_path, assets):
    root, model_dir = assets
    out = tmp_path / "run"
    result = run(["--model", model_dir, "--train", root / "train.csv", "--text-column", "sentence",
                  "--eval", f"test={root / 'test.csv'}", "--eval", f"ood={root / 'ood.csv'}",
                  "--epochs", 10, "--lr", 3e-3, "--batch-size", 8, "--seed", 1, "--data-seed", 2,
                  "-o", out, "--json"])  # fmt: skip
    # (a from-scratch 2-layer model on 80 noisy examples: 3 epochs at 5e-3, linearly decayed,
    # left it at the constant prediction for every seed we tried; 10 epochs at 3e-3 reached
    # 0.60-0.73 test accuracy for the 6 seed pairs we tried, this pair 0.65)
    assert result.exit_code == 0, result.output + result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(result.stdout) == metrics  # stdout is the JSON alone (no Trainer log lines)
    assert metrics["label_names"] == ["neg", "pos"]
    assert metrics["epochs_run"] == 10 and not metrics["stopped_early"]
    assert (metrics["seed"], metrics["data_seed"], metrics["num_train_examples"]) == (1, 2, 80)
    assert [row["epoch"] for row in metrics["per_epoch"]] == list(range(1, 11))
    assert metrics["per_epoch"][-1]["train_loss"] < metrics["per_epoch"][0]["train_loss"]
    for row in metrics["per_epoch"]:
        for name in ("test", "ood"):
            assert 0 <= row[name]["accuracy"] <= 1 and 0 <= row[name]["macro_f1"] <= 1
    assert metrics["final"]["test"]["accuracy"] > 0.6  # above the majority class (0.575): it learned
    assert (out / "model" / "config.json").exists()
    import soicurate

    profile = soicurate.profile(out / "dynamics")
    assert profile.height == 80
    assert profile["epochs_seen"].unique().to_list() == [10]
    assert set(profile["label_name"].unique()) <= {"neg", "pos"}


def test_train_refuses_to_overwrite_and_reports_bad_input(tmp_path, assets):
    root, model_dir = assets
    result = run(["--model", model_dir, "--train", root / "missing.csv", "-o", tmp_path / "x", "--quiet"])
    assert result.exit_code == 2 and "missing.csv" in result.stderr and "Traceback" not in result.stderr
    result = run(["--model", model_dir, "--train", root / "train.csv", "--text-column", "nope", "-o", tmp_path / "x", "--quiet"])
    assert result.exit_code == 2 and "no text column 'nope'" in result.stderr
    result = run(["--model", tmp_path / "no-model", "--train", root / "train.csv", "--text-column", "sentence", "-o", tmp_path / "x", "--quiet"])
    assert result.exit_code == 2 and "no-model: no such model directory" in result.stderr
    result = run(["--model", model_dir, "--train", root / "train.csv", "--eval", "bad-spec", "--quiet"])
    assert result.exit_code == 2 and "NAME=DATA" in result.output + result.stderr


def test_config_file_and_resume(tmp_path, assets):
    root, model_dir = assets
    out = tmp_path / "run"
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        f"model: {model_dir}\ntrain: {root / 'train.csv'}\ntext_column: sentence\nepochs: 2\nlearning_rate: 0.005\n"
        f"batch_size: 16\nrecord: eval\noutput_dir: {out}\n"
    )
    assert run(["--config", cfg, "--quiet"]).exit_code == 0
    again = run(["--config", cfg, "--quiet"])
    assert again.exit_code == 2 and "already holds a training run" in again.stderr
    # Resume with more epochs: continues from the last checkpoint, dynamics get epoch 3 only once.
    result = run(["--config", cfg, "--epochs", 3, "--resume", "--quiet"])
    assert result.exit_code == 0, result.output + result.stderr
    manifest = json.loads((out / "dynamics" / "manifest.json").read_text())
    assert manifest["epochs"] == [1, 2, 3] and manifest["recorded_by"] == "eval"
    import soicurate

    assert soicurate.profile(out / "dynamics").height == 80
