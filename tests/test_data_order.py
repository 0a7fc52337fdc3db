"""The bundled trainer's data order: governed by the data seed alone, per epoch, resumable."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from soicurate.training.config import TrainConfig
from soicurate.training.sampler import EpochSeededSampler


def test_sampler_orders_are_permutations_seeded_by_data_seed_and_epoch():
    s = EpochSeededSampler(100, 3)
    a0, a1 = s.order(0), s.order(1)
    assert sorted(a0) == list(range(100)) and sorted(a1) == list(range(100))
    assert a0 != a1  # a new order every epoch
    assert EpochSeededSampler(100, 3).order(1) == a1  # the same (seed, epoch): the same order
    assert EpochSeededSampler(100, 4).order(0) != a0
    assert EpochSeededSampler(100, 4).order(0) != a1  # not seed + epoch
    # set_epoch picks the epoch; without it each new iteration moves on
    s.set_epoch(1)
    assert list(s) == a1
    t = EpochSeededSampler(100, 3)
    assert list(t) == a0 and list(t) == a1


def test_length_grouped_order_keeps_batches_of_similar_length():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, 400).tolist()
    s = EpochSeededSampler(400, 1, lengths=lengths, batch_size=8)
    order = s.order(0)
    assert sorted(order) == list(range(400)) and order != s.order(1)
    assert EpochSeededSampler(400, 2, lengths=lengths, batch_size=8).order(0) != order
    # transformers' grouping: megabatches of min(400 // 32, 50) = 12 batches, each sorted by
    # length, longest first (only the first element of a megabatch may be swapped)
    for k in range(0, 400, 96):
        mega = [lengths[i] for i in order[k + 1 : k + 96]]
        assert mega == sorted(mega, reverse=True)
    spread = np.mean([np.ptp([lengths[i] for i in order[k : k + 8]]) for k in range(0, 400, 8)])
    shuffled = np.mean([np.ptp([lengths[i] for i in EpochSeededSampler(400, 1).order(0)[k : k + 8]])
                        for k in range(0, 400, 8)])  # fmt: skip
    assert spread < 0.3 * shuffled  # batches are far more uniform than random ones
    with pytest.raises(ValueError):
        EpochSeededSampler(3, 0, lengths=[1, 2])


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from tiny_model import save_assets

    root = tmp_path_factory.mktemp("order")
    return root, save_assets(root, splits=(("train", 48, 0), ("test", 16, 1)))


def config(assets, out, **kw):
    root, model_dir = assets
    base = dict(model=str(model_dir), train=str(root / "train.csv"), text_column="sentence", epochs=3,
                learning_rate=5e-3, batch_size=8, eval={"test": str(root / "test.csv")}, output_dir=str(out))  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("group_by_length", [True, False])
def test_trainer_order_depends_on_the_data_seed_only(assets, tmp_path, group_by_length):
    from soicurate.training.trainer import build_trainer

    def order(seed, data_seed, epoch=0):
        cfg = config(assets, tmp_path / "x", seed=seed, data_seed=data_seed, group_by_length=group_by_length)
        trainer = build_trainer(cfg, progress=False)[0]
        return trainer._get_train_sampler().order(epoch)

    assert order(0, 5) == order(1, 5)  # the init seed does not change the order
    assert order(0, 5) != order(0, 6)  # the data seed does (with and without length grouping)
    assert order(0, 5, 0) != order(0, 5, 1)


def test_data_seed_changes_the_dynamics_and_a_stopped_run_resumes_exactly(assets, tmp_path):
    """Two runs that differ only in the data seed record different dynamics; a run stopped
    after epoch 2 (inside its 3-epoch schedule) and resumed records what an uninterrupted
    run records, so early stopping in a seed sweep ranks and continues the very same runs."""
    from soicurate.profiling.reader import read_dynamics
    from soicurate.training.trainer import train

    full = train(config(assets, tmp_path / "full", seed=0, data_seed=0), progress=False)
    other = train(config(assets, tmp_path / "other", seed=0, data_seed=1), progress=False)
    a, b = read_dynamics(tmp_path / "full" / "dynamics"), read_dynamics(tmp_path / "other" / "dynamics")
    assert not np.array_equal(a["p_gold"].to_numpy(), b["p_gold"].to_numpy())

    cut = config(assets, tmp_path / "cut", seed=0, data_seed=0)
    stopped = train(dataclasses.replace(cut, stop_after_epoch=2), progress=False)
    assert stopped["epochs_run"] == 2 and stopped["stopped_early"]
    resumed = train(dataclasses.replace(cut, resume=True), progress=False)
    assert resumed["epochs_run"] == 3 and not resumed["stopped_early"]
    c = read_dynamics(tmp_path / "cut" / "dynamics")
    assert c.columns == a.columns and c.height == a.height
    for col in ("epoch", "example_id", "pred", "p_gold", "loss"):
        np.testing.assert_allclose(c[col].to_numpy(), a[col].to_numpy(), rtol=1e-5, atol=1e-6, err_msg=col)
    assert resumed["final"]["test"]["accuracy"] == pytest.approx(full["final"]["test"]["accuracy"])
