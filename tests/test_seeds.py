"""Seed sweeps: expected max, variance decomposition, agreement, early stopping, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soicurate.errors import UsageError
from soicurate.training.config import TrainConfig
from soicurate.profiling.agreement import agreement_stats
from soicurate.training.seed_stats import expected_max, expected_max_curve, expected_max_std, variance_decomposition
from soicurate.training.seeds import parse_early_stop, run_sweep, summarize_sweep


# ------------------------------------------------------------------ expected max
def test_expected_max_hand_cases():
    scores = [0.7, 0.9, 0.8, 0.6]
    assert expected_max(scores, 1) == pytest.approx(np.mean(scores))
    assert expected_max(scores, 500) == pytest.approx(0.9, abs=1e-12)
    # N = 2, n = 2: max is the larger unless both draws are the smaller (prob 1/4)
    assert expected_max([1.0, 3.0], 2) == pytest.approx(0.25 * 1 + 0.75 * 3)
    curve = expected_max_curve(scores)
    assert curve.shape == (4,) and np.all(np.diff(curve) >= 0)
    assert curve[1] == pytest.approx(expected_max(scores, 2))
    assert expected_max_curve([0.5] * 3).tolist() == pytest.approx([0.5] * 3)
    with pytest.raises(UsageError):
        expected_max([], 1)
    with pytest.raises(UsageError):
        expected_max(scores, 0)


def test_expected_max_matches_brute_force_sampling():
    rng = np.random.default_rng(0)
    scores = rng.normal(0.8, 0.05, size=7)
    draws = 200_000
    for n in (1, 2, 3, 5, 7):
        sample = rng.choice(scores, size=(draws, n), replace=True).max(axis=1)
        assert expected_max(scores, n) == pytest.approx(sample.mean(), abs=4 * sample.std() / np.sqrt(draws) + 1e-12)
        assert expected_max_std(scores)[n - 1] == pytest.approx(sample.std(), rel=0.02)


# ------------------------------------------------------------------ variance decomposition
def test_variance_decomposition_single_factor_grids():
    init_effect = np.array([0.0, 0.1, -0.05])[:, None]
    data_effect = np.array([0.02, -0.03, 0.0, 0.04])[None, :]
    only_init = 0.8 + init_effect + np.zeros((1, 4))
    v = variance_decomposition(only_init)
    assert v["share_init"] == pytest.approx(1.0) and v["share_data"] == pytest.approx(0.0, abs=1e-12)
    assert v["ss_residual"] == pytest.approx(0.0, abs=1e-12)
    only_data = 0.8 + data_effect + np.zeros((3, 1))
    v = variance_decomposition(only_data)
    assert v["share_data"] == pytest.approx(1.0) and v["share_init"] == pytest.approx(0.0, abs=1e-12)
    additive = 0.8 + init_effect + data_effect
    v = variance_decomposition(additive)
    assert v["ss_init"] + v["ss_data"] == pytest.approx(v["ss_total"]) and v["ss_residual"] == pytest.approx(0, abs=1e-12)
    assert v["ss_init"] == pytest.approx(4 * np.sum((init_effect - init_effect.mean()) ** 2))
    noisy = additive + np.random.default_rng(1).normal(0, 0.01, additive.shape)
    v = variance_decomposition(noisy)
    assert v["share_init"] + v["share_data"] + v["share_residual"] == pytest.approx(1.0)
    assert v["ss_residual"] > 0
    with pytest.raises(UsageError):
        variance_decomposition([[0.1, np.nan], [0.2, 0.3]])
    assert variance_decomposition(np.full((2, 2), 0.5))["share_init"] == 0.0


# ------------------------------------------------------------------ agreement
def test_agreement_stats_hand_made():
    rc = [
        ["always_correct", "always_correct", "always_correct"],
        ["forgotten", "forgotten", "unlearned"],
        ["learned_early", "learned_late", "forgettable"],
        ["unlearned", "unlearned", "unlearned"],
    ]
    s = agreement_stats(rc)
    assert (s["n_examples"], s["n_runs"]) == (4, 3)
    assert s["mean_agreement"] == pytest.approx((1 + 2 / 3 + 1 / 3 + 1) / 4)
    assert s["share_full_agreement"] == pytest.approx(0.5)
    m = s["matrix"]
    assert m["always_correct"]["always_correct"] == pytest.approx(1.0)
    # forgotten: row 2 gives ordered pairs from a 'forgotten' run: 2 runs x 2 others = 4,
    # of which 2 land on 'forgotten' and 2 on 'unlearned'
    assert s["pair_counts"]["forgotten"] == 4
    assert m["forgotten"]["forgotten"] == pytest.approx(0.5) and m["forgotten"]["unlearned"] == pytest.approx(0.5)
    # unlearned: row 2 (1 run x 2 others, both forgotten) + row 4 (3 x 2, all unlearned)
    assert s["pair_counts"]["unlearned"] == 8
    assert m["unlearned"]["unlearned"] == pytest.approx(6 / 8) and m["unlearned"]["forgotten"] == pytest.approx(2 / 8)
    assert m["learned_early"]["learned_early"] == 0.0
    for a, row in m.items():
        if s["pair_counts"][a]:
            assert sum(row.values()) == pytest.approx(1.0)
        else:
            assert all(v is None for v in row.values())


def test_agreement_stats_on_a_polars_profile_column():
    import polars as pl

    from soicurate.profiling.soi import CATEGORIES

    col = pl.Series("run_categories", [["unlearned", "unlearned"], ["forgotten", "forgettable"]],
                    dtype=pl.Array(pl.Enum(CATEGORIES), 2))  # fmt: skip
    s = agreement_stats(col)
    assert s["mean_agreement"] == pytest.approx(0.75) and s["share_full_agreement"] == pytest.approx(0.5)
    assert s["matrix"]["forgotten"]["forgettable"] == pytest.approx(1.0)
    with pytest.raises(UsageError):
        agreement_stats([["unlearned"], ["forgotten"]])
    with pytest.raises(UsageError, match="same number"):
        agreement_stats([["unlearned", "forgotten"], ["forgotten"]])


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 5).flatmap(lambda R: st.lists(st.lists(st.sampled_from(["a", "b", "c"]), min_size=R,
                                                             max_size=R), min_size=1, max_size=30)))  # fmt: skip
def test_agreement_stats_matches_a_loop_over_run_pairs(rows):
    s = agreement_stats(rows, categories=["a", "b", "c"])
    R = len(rows[0])
    pairs = {(x, y): 0 for x in "abc" for y in "abc"}
    for r in rows:
        for i in range(R):
            for j in range(R):
                if i != j:
                    pairs[(r[i], r[j])] += 1
    for x in "abc":
        tot = sum(pairs[(x, y)] for y in "abc")
        assert s["pair_counts"][x] == tot
        for y in "abc":
            assert s["matrix"][x][y] == (None if tot == 0 else pytest.approx(pairs[(x, y)] / tot))
        assert s["per_category"][x]["unanimous"] == sum(all(c == x for c in r) for r in rows)
        assert s["per_category"][x]["any_run"] == sum(x in r for r in rows)
    modal = [max(r.count(c) for c in "abc") / R for r in rows]
    assert s["mean_agreement"] == pytest.approx(np.mean(modal))
    assert s["share_full_agreement"] == pytest.approx(np.mean([m == 1 for m in modal]))


# ------------------------------------------------------------------ sweep with a fake trainer
def fake_trainer(calls):
    """A train_fn whose score depends on the seeds and grows with epochs."""

    def train_fn(config):
        config.validate()
        trained = config.epochs if config.stop_after_epoch is None else config.stop_after_epoch
        calls.append((config.seed, config.data_seed, trained, config.resume, config.output_dir, config.epochs,
                      config.effective_subset_seed))  # fmt: skip
        checkpoints = Path(config.output_dir) / "checkpoints"
        assert checkpoints.is_dir() or not config.resume, "resumed after its checkpoints were deleted"
        (checkpoints / f"checkpoint-{trained}").mkdir(parents=True, exist_ok=True)
        score = 0.5 + 0.1 * config.seed + 0.01 * config.data_seed + 0.001 * trained
        metrics = {"final": {"dev": {"accuracy": score, "macro_f1": score - 0.1}, "ood": {"accuracy": score / 2}},
                   "dynamics_dir": config.output_dir + "/dynamics", "epochs_run": trained,
                   "config": config.to_dict()}  # fmt: skip
        (Path(config.output_dir) / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    return train_fn


def base_config(**kw):
    return TrainConfig(model="m", train="t.csv", eval={"dev": "dev.csv", "ood": "ood.csv"}, epochs=4, **kw)


def test_full_grid_sweep(tmp_path):
    calls = []
    sweep = run_sweep(base_config(), [0, 1, 2], [0, 1], tmp_path, train_fn=fake_trainer(calls))
    assert [(c[0], c[1], c[2], c[3]) for c in calls] == [(i, d, 4, False) for i in (0, 1, 2) for d in (0, 1)]
    assert calls[0][4] == str(tmp_path / "run-i0-d0")
    assert sweep["compute"] == {"epochs_run": 24, "epochs_full_sweep": 24, "epochs_saved": 0, "fraction_saved": 0.0}
    summary = summarize_sweep(sweep)
    dev = summary["expected_max"]["dev"]["accuracy"]
    assert dev["n"] == [1, 2, 3, 4, 5, 6] and dev["expected_max"][0] == pytest.approx(np.mean(dev["scores"]))
    assert "ood" in summary["expected_max"]
    v = summary["variance_decomposition"]["dev"]
    assert v["share_init"] > 0.95 and v["share_residual"] == pytest.approx(0, abs=1e-9)


def test_early_stopping_bookkeeping(tmp_path):
    calls = []
    sweep = run_sweep(base_config(), [0, 1, 2], [0, 1], tmp_path, early_stop=(5, 0.5, 2), train_fn=fake_trainer(calls))
    # phase one: the first 5 pairs for ceil(0.5 * 4) = 2 epochs; then the best 2 resume to 4
    assert [(c[0], c[1], c[2], c[3]) for c in calls[:5]] == [(0, 0, 2, False), (0, 1, 2, False), (1, 0, 2, False),
                                                             (1, 1, 2, False), (2, 0, 2, False)]  # fmt: skip
    assert [(c[0], c[1], c[2], c[3]) for c in calls[5:]] == [(1, 1, 4, True), (2, 0, 4, True)]
    # the cut is a stop inside the full 4-epoch schedule, and every run sees the same subset
    assert {c[5] for c in calls} == {4} and {c[6] for c in calls} == {base_config().effective_subset_seed}
    early = sweep["early_stopping"]
    assert early["cut_epoch"] == 2 and early["continued"] == [[1, 1], [2, 0]]
    assert early["stopped"] == [[0, 0], [0, 1], [1, 0]]
    assert sweep["compute"] == {"epochs_run": 5 * 2 + 2 * 2, "epochs_full_sweep": 20, "epochs_saved": 6,
                                "fraction_saved": pytest.approx(0.3)}  # fmt: skip
    summary = summarize_sweep(sweep)
    assert len(summary["expected_max"]["dev"]["accuracy"]["scores"]) == 2  # completed runs only
    assert summary["variance_decomposition"] is None
    from soicurate.cli.seeds import format_sweep

    text = format_sweep({**sweep, **summary, "plot": str(tmp_path / "expected_max.png")})
    assert "continued i1-d1, i2-d0" in text and "14 of 20 epochs, 6 saved (30%)" in text
    # checkpoints of stopped runs go after the ranking, of continued runs after they finish
    assert not list(tmp_path.glob("run-*/checkpoints"))
    # the metric and eval set choose who continues
    calls = []
    sweep = run_sweep(base_config(), [0, 1], [0, 1], tmp_path / "b", early_stop=(4, 0.5, 1), eval_set="ood",
                      train_fn=fake_trainer(calls), keep_checkpoints=True)  # fmt: skip
    assert sweep["early_stopping"]["continued"] == [[1, 1]]
    assert len(list((tmp_path / "b").glob("run-*/checkpoints/checkpoint-*"))) == 4 + 1


def test_sweep_rejects_bad_settings(tmp_path):
    fake = fake_trainer([])
    out = tmp_path / "sweep"
    with pytest.raises(UsageError, match="saves nothing"):
        run_sweep(base_config(), [0], [0, 1], out, early_stop=(2, 0.9, 1), train_fn=fake)
    with pytest.raises(UsageError, match="at least 2 epochs"):
        run_sweep(base_config(), [0], [0, 1], out, early_stop=(2, 0.25, 1), train_fn=fake)
    with pytest.raises(UsageError, match="only 2 pairs"):
        run_sweep(base_config(), [0], [0, 1], out, early_stop=(3, 0.5, 1), train_fn=fake)
    with pytest.raises(UsageError, match="no evaluation set"):
        run_sweep(base_config(), [0], [0], out, eval_set="nope", train_fn=fake)
    with pytest.raises(UsageError, match="seeds must not repeat"):
        run_sweep(base_config(), [0, 0], [0], out, train_fn=fake)
    assert not out.exists()  # nothing half-written
    with pytest.raises(UsageError):
        parse_early_stop("8,0.5")
    assert parse_early_stop("8,0.5,2") == (8, 0.5, 2)


# ------------------------------------------------------------------ end to end with the tiny model
def test_seeds_cli_end_to_end(tmp_path):
    from click.testing import CliRunner

    from soicurate.cli import main
    from tiny_model import save_assets

    model_dir = save_assets(tmp_path / "assets")
    root = tmp_path / "assets"
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        f"model: {model_dir}\ntrain: {root / 'train.csv'}\ntext_column: sentence\nepochs: 2\nlearning_rate: 0.005\n"
        f"batch_size: 16\neval:\n  test: {root / 'test.csv'}\n  ood: {root / 'ood.csv'}\n"
    )
    out = tmp_path / "sweep"
    result = CliRunner().invoke(main, ["seeds", "--config", str(cfg), "--init-seeds", "0,1", "--data-seeds", "0",
                                       "-o", str(out), "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    sweep = json.loads((out / "sweep.json").read_text())
    assert [(r["init_seed"], r["data_seed"], r["completed"]) for r in sweep["runs"]] == [(0, 0, True), (1, 0, True)]
    for seed in (0, 1):
        metrics = json.loads((out / f"run-i{seed}-d0" / "metrics.json").read_text())
        assert metrics["seed"] == seed and metrics["data_seed"] == 0
        # finished runs keep the model and dynamics, not the resumable checkpoints (disk)
        run_dir = out / f"run-i{seed}-d0"
        assert (run_dir / "model" / "config.json").exists() and (run_dir / "dynamics" / "manifest.json").exists()
        assert not (run_dir / "checkpoints").exists() and not sweep["checkpoints_kept"]
        assert sweep["runs"][seed]["scores"]["test"]["accuracy"] == metrics["final"]["test"]["accuracy"]
    table = sweep["expected_max"]["test"]["accuracy"]
    scores = [r["scores"]["test"]["accuracy"] for r in sweep["runs"]]
    assert table["n"] == [1, 2] and table["expected_max"][0] == pytest.approx(np.mean(scores))
    assert table["expected_max"][1] == pytest.approx(0.25 * min(scores) + 0.75 * max(scores))
    assert set(sweep["expected_max"]) == {"test", "ood"}
    assert sweep["variance_decomposition"] is None  # one data seed: no grid
    assert sweep["compute"]["epochs_run"] == 4 and sweep["early_stopping"] is None
    assert (out / "expected_max.png").stat().st_size > 0
    agreement = sweep["agreement"]
    assert agreement["n_runs"] == 2 and agreement["n_examples"] == 80
    assert 0.5 <= agreement["mean_agreement"] <= 1 and 0 <= agreement["share_full_agreement"] <= 1
    from soicurate.profiling.pipeline import read_profile

    prof = read_profile(out / "profile.parquet")
    assert prof.height == 80 and prof.schema["run_categories"].size == 2
    again = CliRunner().invoke(main, ["seeds", "--config", str(cfg), "--init-seeds", "0", "-o", str(out), "--quiet"])
    assert again.exit_code == 2 and "already holds a seed sweep" in again.stderr


def test_seeds_cli_early_stopping_resumes_the_best(tmp_path):
    from click.testing import CliRunner

    from soicurate.cli import main
    from tiny_model import save_assets

    root = tmp_path / "assets"
    model_dir = save_assets(root, splits=(("train", 48, 0), ("test", 24, 1)))
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        f"model: {model_dir}\ntrain: {root / 'train.csv'}\ntext_column: sentence\nepochs: 3\nlearning_rate: 0.005\n"
        f"batch_size: 16\neval:\n  test: {root / 'test.csv'}\n"
    )
    out = tmp_path / "sweep"
    result = CliRunner().invoke(main, ["seeds", "--config", str(cfg), "--init-seeds", "0,1", "--early-stop", "2,0.5,1",
                                       "--keep-checkpoints", "-o", str(out), "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    sweep = json.loads((out / "sweep.json").read_text())
    early = sweep["early_stopping"]
    assert early["cut_epoch"] == 2 and len(early["continued"]) == 1 and len(early["stopped"]) == 1
    at_cut = {(s["init_seed"], s["data_seed"]): s["score"] for s in early["scores_at_cut"]}
    assert at_cut[tuple(early["continued"][0])] >= at_cut[tuple(early["stopped"][0])]
    assert sweep["compute"] == {"epochs_run": 2 * 2 + 1, "epochs_full_sweep": 6, "epochs_saved": 1,
                                "fraction_saved": pytest.approx(1 / 6)}  # fmt: skip
    i, d = early["continued"][0]
    manifest = json.loads((out / f"run-i{i}-d{d}" / "dynamics" / "manifest.json").read_text())
    assert manifest["epochs"] == [1, 2, 3]
    assert sweep["checkpoints_kept"] and any((out / f"run-i{i}-d{d}" / "checkpoints").glob("checkpoint-*"))
    i, d = early["stopped"][0]
    manifest = json.loads((out / f"run-i{i}-d{d}" / "dynamics" / "manifest.json").read_text())
    assert manifest["epochs"] == [1, 2]
    # the stopped run was cut inside the 3-epoch linear schedule: its learning rate had not
    # decayed towards zero at the cut
    stopped = json.loads((out / f"run-i{i}-d{d}" / "metrics.json").read_text())
    assert stopped["epochs_run"] == 2 and stopped["stopped_early"] and stopped["epochs"] == 3
    ckpt = max((out / f"run-i{i}-d{d}" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    lrs = [e["learning_rate"] for e in json.loads((ckpt / "trainer_state.json").read_text())["log_history"]
           if "learning_rate" in e]  # fmt: skip
    # 3 steps per epoch, 9 in the schedule: the last step before the cut runs at 0.005 * 4/9
    # (with epochs=2 it would run at 0.005 * 1/6)
    assert lrs[-1] == pytest.approx(0.005 * 4 / 9)
    assert sweep["agreement"] is None and (out / "profile.parquet").exists()
    assert len(sweep["expected_max"]["test"]["accuracy"]["scores"]) == 1


def test_paired_design_and_missing_scores(tmp_path):
    calls = []
    sweep = run_sweep(base_config(), [3, 4, 5], [3, 4, 5], tmp_path, paired=True, train_fn=fake_trainer(calls))
    assert [(c[0], c[1]) for c in calls] == [(3, 3), (4, 4), (5, 5)] and sweep["design"] == "paired"
    assert summarize_sweep(sweep)["variance_decomposition"] is None  # not a grid
    with pytest.raises(UsageError, match="as many init seeds"):
        run_sweep(base_config(), [0, 1], [0], tmp_path, paired=True, train_fn=fake_trainer([]))

    def no_ood(config):  # a run whose metrics lack one eval set: null, not NaN, and left out
        m = fake_trainer([])(config)
        del m["final"]["ood"]
        return m

    sweep = run_sweep(base_config(), [0, 1], [0], tmp_path / "m", train_fn=no_ood)
    assert sweep["runs"][0]["scores"]["ood"] == {"accuracy": None, "macro_f1": None}
    summary = summarize_sweep(sweep)
    assert "accuracy" not in summary["expected_max"]["ood"] and len(summary["expected_max"]["dev"]["accuracy"]["n"]) == 2
    json.dumps(sweep, allow_nan=False)
    with pytest.raises(UsageError, match="no run reported accuracy on 'ood'"):
        run_sweep(base_config(), [0, 1], [0], tmp_path / "e", early_stop=(2, 0.5, 1), eval_set="ood", train_fn=no_ood)


def test_train_seeds_cli_json(tmp_path):
    """`soicurate train --seeds N`: N paired runs as a sweep, --json is the sweep.json."""
    from click.testing import CliRunner

    from soicurate.cli import main
    from tiny_model import save_assets

    root = tmp_path / "assets"
    model_dir = save_assets(root, splits=(("train", 40, 0), ("test", 20, 1)))
    args = ["train", "--model", str(model_dir), "--train", str(root / "train.csv"), "--text-column", "sentence",
            "--eval", f"test={root / 'test.csv'}", "--epochs", "2", "--lr", "0.005", "--seed", "7", "--seeds", "3"]  # fmt: skip
    out = tmp_path / "sweep"
    result = CliRunner().invoke(main, [*args, "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    printed = json.loads(result.stdout)
    assert printed == json.loads((out / "sweep.json").read_text())
    assert printed["design"] == "paired"
    assert [(r["init_seed"], r["data_seed"]) for r in printed["runs"]] == [(7, 7), (8, 8), (9, 9)]
    assert printed["agreement"]["n_runs"] == 3 and printed["agreement"]["n_examples"] == 40
    assert len(printed["expected_max"]["test"]["accuracy"]["n"]) == 3
    # an interrupted sweep (here: killed in its last run, before any checkpoint) continues
    # with --resume: the finished runs are reused as they are, the last one starts over
    import shutil

    (out / "sweep.json").unlink()
    shutil.rmtree(out / "run-i9-d9" / "model")
    (out / "run-i9-d9" / "metrics.json").unlink()
    kept = (out / "run-i7-d7" / "metrics.json").read_text()
    result = CliRunner().invoke(main, [*args, "-o", str(out), "--resume", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    resumed = json.loads(result.stdout)
    assert (out / "run-i7-d7" / "metrics.json").read_text() == kept and resumed["resumed"]
    assert [r["scores"] for r in resumed["runs"]] == [r["scores"] for r in printed["runs"]]  # deterministic on CPU
    assert resumed["agreement"] == printed["agreement"]
    # --data-seed fixes the data order: only the initialisation changes
    out2 = tmp_path / "init-only"
    result = CliRunner().invoke(main, [*args[:-2], "--seeds", "2", "--data-seed", "1", "-o", str(out2), "--quiet"])
    assert result.exit_code == 0, result.output + result.stderr
    runs = json.loads((out2 / "sweep.json").read_text())["runs"]
    assert [(r["init_seed"], r["data_seed"]) for r in runs] == [(7, 1), (8, 1)]
    bad = CliRunner().invoke(main, [*args[:-2], "--seeds", "1", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--seeds" in bad.stderr


def test_seeds_cli_bad_model_leaves_nothing(tmp_path):
    from click.testing import CliRunner

    from soicurate.cli import main

    root = tmp_path / "data"
    root.mkdir()
    (root / "train.csv").write_text("text,label\ngood,pos\nbad,neg\n")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"model: {tmp_path / 'no-model'}\ntrain: {root / 'train.csv'}\neval:\n  test: {root / 'train.csv'}\n")
    out = tmp_path / "sweep"
    result = CliRunner().invoke(main, ["seeds", "--config", str(cfg), "--init-seeds", "0,1", "-o", str(out), "--quiet"])
    assert result.exit_code == 2 and "no-model" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


# ------------------------------------------------------------------ resuming an interrupted sweep
class Crash(Exception):
    pass


def crashing_trainer(calls, crash_at: int, *, after_checkpoint: bool):
    """fake_trainer that dies in call number `crash_at` (0-based), with or without a checkpoint."""
    inner = fake_trainer(calls)

    def train_fn(config):
        if len(calls) == crash_at:
            calls.append(("crash", config.seed, config.data_seed))
            run_dir = Path(config.output_dir)
            (run_dir / "dynamics").mkdir(parents=True, exist_ok=True)
            if after_checkpoint:
                (run_dir / "checkpoints" / "checkpoint-1").mkdir(parents=True, exist_ok=True)
            raise Crash
        return inner(config)

    return train_fn


def scores_of(sweep):
    return [(r["init_seed"], r["data_seed"], r["completed"], r["scores"]["dev"]["accuracy"]) for r in sweep["runs"]]


@pytest.mark.parametrize("after_checkpoint", [True, False])
def test_resume_continues_an_interrupted_grid(tmp_path, after_checkpoint):
    calls = []
    with pytest.raises(Crash):
        run_sweep(base_config(), [0, 1], [0, 1], tmp_path / "s",
                  train_fn=crashing_trainer(calls, 2, after_checkpoint=after_checkpoint))  # fmt: skip
    assert calls[2] == ("crash", 1, 0)
    resumed_calls = []
    sweep = run_sweep(base_config(), [0, 1], [0, 1], tmp_path / "s", train_fn=fake_trainer(resumed_calls), resume=True)
    # the two finished runs are reused; the crashed one resumes from its checkpoint, or starts
    # over when it died before one; the last one starts fresh
    assert [(c[0], c[1], c[3]) for c in resumed_calls] == [(1, 0, after_checkpoint), (1, 1, False)]
    reference = run_sweep(base_config(), [0, 1], [0, 1], tmp_path / "ref", train_fn=fake_trainer([]))
    assert scores_of(sweep) == scores_of(reference) and sweep["resumed"]
    assert not list((tmp_path / "s").glob("run-*/checkpoints"))


def test_resume_after_the_early_stopping_cut_ranks_as_before(tmp_path):
    calls = []
    # 4 runs to the cut, then the first continued run dies mid-way (call 4)
    with pytest.raises(Crash):
        run_sweep(base_config(), [0, 1], [0, 1], tmp_path / "s", early_stop=(4, 0.5, 2),
                  train_fn=crashing_trainer(calls, 4, after_checkpoint=True))  # fmt: skip
    assert (tmp_path / "s" / "early_stopping_cut.json").exists()
    resumed_calls = []
    sweep = run_sweep(base_config(), [0, 1], [0, 1], tmp_path / "s", early_stop=(4, 0.5, 2),
                      train_fn=fake_trainer(resumed_calls), resume=True)  # fmt: skip
    # no run trains to the cut again: the two continued runs resume to the end
    assert [(c[0], c[1], c[2], c[3]) for c in resumed_calls] == [(1, 0, 4, True), (1, 1, 4, True)]
    reference = run_sweep(base_config(), [0, 1], [0, 1], tmp_path / "ref", early_stop=(4, 0.5, 2),
                          train_fn=fake_trainer([]))  # fmt: skip
    assert scores_of(sweep) == scores_of(reference)
    assert sweep["early_stopping"] == reference["early_stopping"]
    assert sweep["compute"] == reference["compute"]


def test_resume_refuses_other_settings(tmp_path):
    calls = []
    with pytest.raises(Crash):
        run_sweep(base_config(), [0, 1], [0, 1], tmp_path / "s", early_stop=(4, 0.5, 2),
                  train_fn=crashing_trainer(calls, 4, after_checkpoint=True))  # fmt: skip
    with pytest.raises(UsageError, match="learning_rate=2e-05, the sweep now says 0.001"):
        run_sweep(base_config(learning_rate=1e-3), [0, 1], [0, 1], tmp_path / "s", early_stop=(4, 0.5, 2),
                  train_fn=fake_trainer([]), resume=True)  # fmt: skip
    with pytest.raises(UsageError, match="used t=4, now 3"):
        run_sweep(base_config(), [0, 1], [0, 1], tmp_path / "s", early_stop=(3, 0.5, 2), train_fn=fake_trainer([]),
                  resume=True)  # fmt: skip
