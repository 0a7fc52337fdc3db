"""Units of the bundled trainer that need no model: metrics, config files, data specs, ids."""

import numpy as np
import pytest

from soicurate.errors import UsageError
from soicurate.recording.ids import as_integer_ids, stable_id
from soicurate.training.config import TrainConfig
from soicurate.training.data import DataSpec, with_example_ids
from soicurate.training.metrics import accuracy, macro_f1


def reference_macro_f1(pred, gold):
    labels = sorted(set(pred) | set(gold))
    f1s = []
    for k in labels:
        tp = sum(p == k and g == k for p, g in zip(pred, gold))
        fp = sum(p == k and g != k for p, g in zip(pred, gold))
        fn = sum(p != k and g == k for p, g in zip(pred, gold))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return sum(f1s) / len(f1s)


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_matches_definition(seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 3, 50)
    pred = np.where(rng.random(50) < 0.6, gold, rng.integers(0, 3, 50))
    assert macro_f1(pred, gold) == pytest.approx(reference_macro_f1(list(pred), list(gold)))
    assert accuracy(pred, gold) == pytest.approx(np.mean(pred == gold))


def test_config_from_yaml_and_toml_with_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("model: m\ntrain: data.csv\nepochs: 4\neval:\n  test: t.csv\n  ood: o.csv\n")
    cfg = TrainConfig.from_file(y, epochs=5, learning_rate=None).validate()
    assert (cfg.model, cfg.epochs, cfg.eval) == ("m", 5, {"test": "t.csv", "ood": "o.csv"})
    t = tmp_path / "c.toml"
    t.write_text('model = "m"\ntrain = "d.csv"\nseed = 3\ndata_seed = 7\n')
    cfg = TrainConfig.from_file(t).validate()
    assert (cfg.seed, cfg.effective_data_seed) == (3, 7)


@pytest.mark.parametrize(
    "text,fragment",
    [("epochs: 2\nbogus: 1\n", "unknown setting(s) bogus"), ("[unclosed\n", "cannot parse config"), ("- a\n- b\n", "mapping")],
)
def test_bad_config_files(tmp_path, text, fragment):
    y = tmp_path / "c.yaml"
    y.write_text(text)
    with pytest.raises(UsageError, match=None) as info:
        TrainConfig.from_file(y)
    assert fragment in str(info.value) and str(y) in str(info.value)


def test_config_validation():
    with pytest.raises(UsageError, match="model"):
        TrainConfig(train="x").validate()
    with pytest.raises(UsageError, match="at least 2 epochs"):
        TrainConfig(model="m", train="x", epochs=1).validate()
    TrainConfig(model="m", train="x", epochs=1, record="none").validate()


def test_data_spec_parsing(tmp_path):
    assert DataSpec.parse("glue[sst2]:validation") == DataSpec("glue", "validation", "sst2")
    assert DataSpec.parse("imdb") == DataSpec("imdb", "train", None)
    f = tmp_path / "a:b.csv"
    f.write_text("x\n")
    assert DataSpec.parse(str(f)).path == str(f)


def test_home_directory_paths_expand(tmp_path, monkeypatch):
    """Config files are not expanded by a shell: ~ in a data or model path is the home directory."""
    from soicurate.errors import UsageError
    from soicurate.training.trainer import model_location

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    (tmp_path / "model").mkdir()
    assert DataSpec.parse("~/data/train.csv:test") == DataSpec(str(tmp_path / "data" / "train.csv"), "test", None)
    assert model_location("~/model") == str(tmp_path / "model")
    assert model_location("org/model") == "org/model"  # a Hub name stays as given
    with pytest.raises(UsageError, match="no-such: no such model directory"):
        model_location("~/no-such")


def test_stable_ids():
    assert stable_id("src", "train", 3) == stable_id("src", "train", 3)
    assert stable_id("src", "train", 3) != stable_id("src", "test", 3)
    assert 0 <= stable_id("x") < 2**63
    assert list(as_integer_ids([1, "2", np.int64(3)])) == [1, 2, 3]
    assert as_integer_ids(["a", 1]) is None


def test_example_ids_from_rows_and_columns():
    from datasets import Dataset

    ds = Dataset.from_dict({"text": ["a", "b", "c"]})
    a = with_example_ids(ds, "s", "train")["example_id"]
    assert a == with_example_ids(ds, "s", "train")["example_id"] and len(set(a)) == 3
    assert a != with_example_ids(ds, "other", "train")["example_id"]
    ds2 = Dataset.from_dict({"text": ["a", "b"], "idx": [10, 20]})
    assert with_example_ids(ds2, "s", "train")["example_id"] == [10, 20]
    with pytest.raises(UsageError, match="occurs 2 times"):
        with_example_ids(Dataset.from_dict({"idx": [1, 1]}), "s", "train")
