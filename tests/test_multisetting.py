"""Multi-setting stage one on the tiny model: multi-source variants and multi-task heads."""

from __future__ import annotations

import json

import polars as pl
import pytest

from tiny_model import save_assets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    model_dir = save_assets(root, splits=(("rt", 40, 0), ("imdb", 40, 1)))
    return root, model_dir


def _config(tmp_path, root, model_dir, kind="source", extra=""):
    cfg = tmp_path / "multi.yaml"
    cfg.write_text(
        f"model: {model_dir}\ntext_column: sentence\nepochs: 2\nlearning_rate: 0.005\nbatch_size: 16\n"
        f"group_by_length: false\noutput_dir: {tmp_path / 'out'}\n"
        f"settings:\n  kind: {kind}\n  datasets:\n    rt: {root / 'rt.csv'}\n    imdb: {root / 'imdb.csv'}\n{extra}"
    )
    return cfg


def test_multi_source_ids_profiles_and_transitions(tmp_path, assets):
    from click.testing import CliRunner

    from soicurate.cli import main
    from soicurate.training.data import DataSpec, load_split, with_example_ids

    root, model_dir = assets
    cfg = _config(tmp_path, root, model_dir)
    result = CliRunner().invoke(main, ["multi", "--config", str(cfg), "--quiet"])
    assert result.exit_code == 0, result.output + result.stderr
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "source" and summary["label_names"] == ["neg", "pos"]
    multi = pl.read_parquet(out / "profiles" / "multi.parquet")
    assert multi.height == 80 and multi["example_id"].n_unique() == 80
    assert sorted(multi["source"].unique().to_list()) == ["imdb", "rt"]
    for name in ("rt", "imdb"):
        single = pl.read_parquet(out / "profiles" / f"single-{name}.parquet")
        # ids: exactly those a plain single-setting run on the file gets (source = file stem)
        spec = DataSpec.parse(str(root / f"{name}.csv"))
        expected = sorted(with_example_ids(load_split(spec), spec.name, spec.split)["example_id"])
        assert sorted(single["example_id"].to_list()) == expected
        assert set(expected) == set(multi.filter(pl.col("source") == name)["example_id"].to_list())
        t = json.loads((out / "transitions" / f"{name}.json").read_text())
        assert t["joined"] == 40 and t["only_in_a"] == 0 and t["label_mismatches"] == 0
        assert sum(sum(row.values()) for row in t["counts"].values()) == 40
        assert (out / "transitions" / f"{name}.txt").exists()


def test_multi_source_ids_match_plain_train_run(tmp_path, assets):
    """A `soicurate train` run on rt.csv alone records the same ids as the multi-setting data."""
    import soicurate
    from soicurate.training.config import TrainConfig
    from soicurate.training.multisetting import build_frames, load_multi_config
    from soicurate.training.trainer import train

    root, model_dir = assets
    cfg = load_multi_config(_config(tmp_path, root, model_dir))
    frames, _ = build_frames(cfg)
    train(TrainConfig(model=str(model_dir), train=str(root / "rt.csv"), text_column="sentence", epochs=2,
                      batch_size=40, output_dir=str(tmp_path / "plain")), progress=False)  # fmt: skip
    plain = soicurate.profile(tmp_path / "plain" / "dynamics")
    assert sorted(plain["example_id"].to_list()) == sorted(frames["rt"]["example_id"].to_list())
    assert not set(frames["rt"]["example_id"].to_list()) & set(frames["imdb"]["example_id"].to_list())


def test_bad_multi_config(tmp_path, assets):
    from soicurate.errors import UsageError
    from soicurate.training.multisetting import load_multi_config

    root, model_dir = assets
    with pytest.raises(UsageError, match="kind must be one of"):
        load_multi_config(_config(tmp_path, root, model_dir, kind="domain"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model: {model_dir}\nsettings:\n  kind: source\n  datasets:\n    rt: {root / 'rt.csv'}\n")
    with pytest.raises(UsageError, match="at least two datasets"):
        load_multi_config(bad)


def _three_label_csv(path, n=30):
    """A second task with its own 3-label space: which word class the sentence starts with."""
    from tiny_model import NEGATIVE, POSITIVE, make_texts

    texts, _, _ = make_texts(n, seed=5)
    labels = ["pos_word" if t.split()[0] in POSITIVE else "neg_word" if t.split()[0] in NEGATIVE else "other"
              for t in texts]  # fmt: skip
    pl.DataFrame({"sentence": texts, "topic": labels}).write_csv(path)


def test_multi_task_heads_ids_and_profiles(tmp_path, assets):
    import torch
    import torch

    from soicurate.training.multisetting import load_multi_config, multitask_model_class, run_multisetting

    root, model_dir = assets
    _three_label_csv(root / "topic.csv")
    cfg = tmp_path / "mt.yaml"
    cfg.write_text(
        f"model: {model_dir}\ntext_column: sentence\nepochs: 2\nlearning_rate: 0.005\nbatch_size: 16\n"
        f"output_dir: {tmp_path / 'out'}\nsettings:\n  kind: task\n  datasets:\n    sentiment: {root / 'rt.csv'}\n"
        f"    topic: {{data: {root / 'topic.csv'}, label_column: topic}}\n"
    )
    summary = run_multisetting(load_multi_config(cfg))
    out = tmp_path / "out"
    assert summary["tasks"] == {"sentiment": ["neg", "pos"], "topic": ["neg_word", "other", "pos_word"]}
    import soicurate

    for task, k, n in (("sentiment", 2, 40), ("topic", 3, 30)):
        for variant in ("single", "multi"):
            run = out / variant / "dynamics" / task if variant == "multi" else out / "single" / task / "dynamics" / task
            manifest = json.loads((run / "manifest.json").read_text())
            assert manifest["label_names"] == summary["tasks"][task] and manifest["epochs"] == [1, 2]
            prof = pl.read_parquet(out / "profiles" / f"{variant}-{task}.parquet")
            assert prof.height == n and prof["task"].unique().to_list() == [task]
            epochs = pl.read_parquet(list(run.glob("epoch*.parquet")))
            assert epochs["pred"].max() < k and epochs["gold"].max() < k  # predictions in the task's own labels
        t = json.loads((out / "transitions" / f"{task}.json").read_text())
        assert t["joined"] == n and t["only_in_a"] == t["only_in_b"] == 0
    single = set(pl.read_parquet(out / "profiles" / "single-topic.parquet")["example_id"].to_list())
    assert single == set(pl.read_parquet(out / "profiles" / "multi-topic.parquet")["example_id"].to_list())

    # the model itself: a mixed batch's softmax puts no mass outside each row's own labels
    from tiny_model import make_tokenizer

    model = multitask_model_class()(str(model_dir), {"a": ["x", "y"], "b": ["p", "q", "r"]}, seed=0)
    enc = make_tokenizer()(["good movie", "bad plot", "the cast", "nice"], padding=True, return_tensors="pt")
    task_ids = torch.tensor([0, 1, 0, 1])
    loss, logits = model(enc["input_ids"], enc["attention_mask"], task_ids, torch.tensor([1, 2, 0, 1]))
    probs = torch.softmax(logits, -1)
    assert torch.isfinite(loss) and logits.shape == (4, 3)
    assert (probs[task_ids == 0, 2] == 0).all() and (logits[task_ids == 0].argmax(-1) < 2).all()
    assert torch.allclose(probs.sum(-1), torch.ones(4))
    loss.backward()
    assert model.heads["a"].weight.grad is not None and torch.isfinite(model.heads["b"].weight.grad).all()


def test_language_kind_frames_without_training(tmp_path, assets):
    from soicurate.training.multisetting import build_frames, load_multi_config

    root, model_dir = assets
    cfg = load_multi_config(_config(tmp_path, root, model_dir, kind="language"))
    frames, label_names = build_frames(cfg)
    assert label_names == ["neg", "pos"]
    assert frames["rt"]["language"].unique().to_list() == ["rt"] and "source" not in frames["rt"].columns
    again, _ = build_frames(load_multi_config(_config(tmp_path, root, model_dir, kind="source")))
    assert frames["imdb"]["example_id"].to_list() == again["imdb"]["example_id"].to_list()  # ids do not depend on kind


def test_overlapping_integer_ids_are_refused(tmp_path, assets):
    from soicurate.errors import UsageError
    from soicurate.training.multisetting import build_frames, load_multi_config

    root, model_dir = assets
    for name in ("rt", "imdb"):
        pl.read_csv(root / f"{name}.csv").with_row_index("id").write_csv(tmp_path / f"{name}.csv")
    cfg = tmp_path / "ids.yaml"
    cfg.write_text(f"model: {model_dir}\ntext_column: sentence\nsettings:\n  kind: source\n  datasets:\n"
                   f"    rt: {tmp_path / 'rt.csv'}\n    imdb: {tmp_path / 'imdb.csv'}\n")  # fmt: skip
    with pytest.raises(UsageError, match="occurs in both"):
        build_frames(load_multi_config(cfg))
