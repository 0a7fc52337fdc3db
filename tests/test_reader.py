"""Property tests for the streaming reader and the profile built on it: runs written with
DynamicsWriter (random ids, shuffled logging order, several batches, one or several ranks)
read back block by block must equal what was logged, sorted by example id; profiles must
equal the reference computed from the raw logged arrays."""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import soicurate
from soicurate.errors import LogFormatError
from soicurate.profiling import pipeline
from soicurate.profiling.pipeline import read_profile, write_profile
from soicurate.profiling.reader import RunReader, read_dynamics
from soicurate.profiling.regions import RegionRule
from soicurate.profiling.soi import CATEGORIES
from soicurate.recording.manifest import Manifest, epoch_filename
from soicurate.recording.writer import DynamicsWriter

try:
    import reference as ref
except ImportError:  # tests/ imported as a package
    from tests import reference as ref

SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
CODE = {name: i for i, name in enumerate(CATEGORIES)}


# -- logged data -------------------------------------------------------------------------------
@dataclass
class Logged:
    """What was logged, sorted by example id: ids/gold (n,), pred/p_gold/loss/margin (E, n)."""

    ids: np.ndarray
    gold: np.ndarray
    pred: np.ndarray
    p_gold: np.ndarray
    loss: np.ndarray
    margin: np.ndarray | None
    epochs: list[int]
    num_labels: int

    @property
    def n(self) -> int:
        return len(self.ids)

    def label_names(self):
        return [f"label_{k}" for k in range(self.num_labels)]


def random_ids(rng, n, negative=False):
    lo = -(2**62) if negative else 0
    ids = np.unique(rng.integers(lo, 2**62, size=2 * n + 8, dtype=np.int64))
    rng.shuffle(ids)
    return ids[:n]


def make_logged(rng, n, E, k=3, margin=True, ids=None, gold=None, negative_ids=False) -> Logged:
    ids = np.sort(random_ids(rng, n, negative_ids) if ids is None else ids)
    gold = rng.integers(0, k, n).astype(np.int32) if gold is None else gold
    skill = rng.choice([0.0, 1.0, 0.5, 0.2, 0.8], n) if n else np.zeros(0)
    correct = rng.random((E, n)) < skill
    pred = np.where(correct, gold, (gold + 1 + rng.integers(0, k - 1, (E, n))) % k).astype(np.int32)
    p = rng.random((E, n)).astype(np.float32)
    p[rng.random((E, n)) < 0.05] = 1.0
    p[rng.random((E, n)) < 0.05] = 0.0
    loss = (rng.random((E, n)) * 5).astype(np.float32)
    mg = (rng.normal(0, 3, (E, n))).astype(np.float32) if margin else None
    return Logged(ids, gold, pred, p, loss, mg, list(range(1, E + 1)), k)


def log_epoch(writer: DynamicsWriter, data: Logged, e: int, columns: np.ndarray, rng) -> None:
    """Log the examples at positions `columns` for epoch row e, shuffled, in several batches."""
    order = rng.permutation(columns)
    cuts = np.sort(rng.integers(0, len(order) + 1, rng.integers(0, 5)))
    for part in np.split(order, cuts):
        if len(part) == 0:
            continue
        writer.log(
            data.ids[part], data.gold[part], data.pred[e, part], data.p_gold[e, part], data.loss[e, part],
            None if data.margin is None else data.margin[e, part],
        )  # fmt: skip


def write_run(run_dir: Path, data: Logged, rng, **kwargs) -> Path:
    writer = DynamicsWriter(run_dir, data.label_names(), store_margin=data.margin is not None, **kwargs)
    for e in range(len(data.epochs)):
        log_epoch(writer, data, e, np.arange(data.n), rng)
        writer.end_epoch()
    return run_dir


def write_distributed(run_dir: Path, data: Logged, rng, world_size: int) -> list[np.ndarray]:
    """Each rank writes a disjoint, interleaved subset of the examples; rank 0 starts first."""
    owner = rng.integers(0, world_size, data.n)
    owner[rng.permutation(data.n)[:world_size]] = np.arange(world_size)  # no rank is empty
    subsets = [np.flatnonzero(owner == r) for r in range(world_size)]
    writers = [
        DynamicsWriter(run_dir, data.label_names(), num_examples=data.n, rank=r, world_size=world_size,
                       store_margin=data.margin is not None, seed=7)  # fmt: skip
        for r in range(world_size)
    ]
    for e in range(len(data.epochs)):
        for r in rng.permutation(world_size):
            log_epoch(writers[r], data, e, subsets[r], rng)
            writers[r].end_epoch()  # every rank numbers its epochs itself
    return subsets


def read_all(reader: RunReader, block_rows: int, epochs=None):
    blocks = list(reader.iter_blocks(block_rows, epochs=epochs))
    n = reader.num_examples
    assert sum(b.n for b in blocks) == n
    row = 0
    for j, b in enumerate(blocks):
        assert b.row_start == row
        assert b.n == min(block_rows, n - row), (j, b.n, block_rows)
        row += b.n
        assert b.example_id.dtype == np.int64 and b.gold.dtype == np.int32
        assert b.pred.dtype == np.int32 and b.p_gold.dtype == np.float32 and b.loss.dtype == np.float32
        assert b.pred.shape == (len(epochs or reader.epochs), b.n)
    cat = lambda f: np.concatenate([f(b) for b in blocks], axis=-1)  # noqa: E731
    margin = None if blocks[0].margin is None else cat(lambda b: b.margin)
    return cat(lambda b: b.example_id), cat(lambda b: b.gold), cat(lambda b: b.pred), cat(lambda b: b.p_gold), \
        cat(lambda b: b.loss), margin  # fmt: skip


def assert_blocks_equal_logged(reader: RunReader, data: Logged, block_rows: int, epochs=None):
    rows = [data.epochs.index(e) for e in (epochs or data.epochs)]
    ids, gold, pred, p, loss, margin = read_all(reader, block_rows, epochs)
    np.testing.assert_array_equal(ids, data.ids)
    np.testing.assert_array_equal(gold, data.gold)
    np.testing.assert_array_equal(pred, data.pred[rows])
    np.testing.assert_array_equal(p, data.p_gold[rows])
    np.testing.assert_array_equal(loss, data.loss[rows])
    if data.margin is None:
        assert margin is None
    else:
        np.testing.assert_array_equal(margin, data.margin[rows])


# -- streaming reader ------------------------------------------------------------------------
@SETTINGS
@given(
    st.integers(1, 60), st.integers(2, 5), st.booleans(), st.booleans(), st.integers(1, 20), st.integers(0, 2**32 - 1)
)  # fmt: skip
def test_iter_blocks_equals_logged_data(n, E, margin, negative_ids, extra_block, seed):
    rng = np.random.default_rng(seed)
    data = make_logged(rng, n, E, margin=margin, negative_ids=negative_ids)
    with tempfile.TemporaryDirectory() as tmp:
        run = write_run(Path(tmp) / "run", data, rng)
        reader = RunReader(run)
        assert reader.num_examples == n and reader.epochs == data.epochs and reader.has_margin == margin
        for block_rows in (1, 7, 1000, n + 1, extra_block):
            assert_blocks_equal_logged(reader, data, block_rows)
        subset = sorted(rng.choice(data.epochs, rng.integers(1, E + 1), replace=False).tolist())
        assert_blocks_equal_logged(reader, data, 7, epochs=subset)


@SETTINGS
@given(st.integers(2, 60), st.integers(2, 4), st.integers(2, 4), st.booleans(), st.integers(0, 2**32 - 1))
def test_distributed_ranks_are_merged_in_id_order(n, world_size, E, margin, seed):
    world_size = min(world_size, n)
    rng = np.random.default_rng(seed)
    data = make_logged(rng, n, E, margin=margin)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        subsets = write_distributed(run, data, rng, world_size)
        manifest = Manifest.load(run)
        assert manifest.world_size == world_size and manifest.epochs == data.epochs
        assert manifest.num_examples == n
        names = sorted(p for p in os.listdir(run) if p.endswith(".parquet"))
        assert names == sorted(epoch_filename(e, r) for e in data.epochs for r in range(world_size))
        reader = RunReader(run)
        assert len(reader.files[1]) == world_size
        for block_rows in (1, 7, 1000, n + 3):
            assert_blocks_equal_logged(reader, data, block_rows)
        # each rank's file holds exactly its own examples
        for r, subset in enumerate(subsets):
            got = pq.read_table(run / epoch_filename(1, r), columns=["example_id"]).column(0).to_numpy()
            np.testing.assert_array_equal(got, data.ids[subset])


@SETTINGS
@given(st.integers(1, 50), st.integers(2, 5), st.booleans(), st.integers(0, 2**32 - 1), st.data())
def test_read_dynamics_returns_exactly_the_slice(n, E, distributed, seed, draw):
    rng = np.random.default_rng(seed)
    data = make_logged(rng, n, E, margin=bool(seed % 2))
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        if distributed and n >= 2:
            write_distributed(run, data, rng, 2)
        else:
            write_run(run, data, rng)
        epochs = draw.draw(st.lists(st.sampled_from(data.epochs), min_size=1, unique=True))
        bounds = [int(x) for x in data.ids] + [int(data.ids[0]) - 1, int(data.ids[-1]) + 1]
        lo = draw.draw(st.sampled_from(bounds))
        hi = draw.draw(st.sampled_from(bounds))
        df = read_dynamics(run, epochs=epochs, example_ids=(lo, hi))
        expected = [(e, j) for e in sorted(epochs) for j in range(n) if lo <= data.ids[j] < hi]
        assert df.height == len(expected)
        assert df.columns[:6] == ["epoch", "example_id", "gold", "pred", "p_gold", "loss"]
        assert ("margin" in df.columns) == (data.margin is not None)
        if expected:
            rows = [data.epochs.index(e) for e, _ in expected]
            cols = [j for _, j in expected]
            assert df["epoch"].to_list() == [e for e, _ in expected]
            np.testing.assert_array_equal(df["example_id"].to_numpy(), data.ids[cols])
            np.testing.assert_array_equal(df["gold"].to_numpy(), data.gold[cols])
            np.testing.assert_array_equal(df["pred"].to_numpy(), data.pred[rows, cols])
            np.testing.assert_array_equal(df["p_gold"].to_numpy(), data.p_gold[rows, cols])
            np.testing.assert_array_equal(df["loss"].to_numpy(), data.loss[rows, cols])
            if data.margin is not None:
                np.testing.assert_array_equal(df["margin"].to_numpy(), data.margin[rows, cols])
        # the whole run when nothing is selected
        assert read_dynamics(run).height == n * E


# -- profiles ----------------------------------------------------------------------------------
def reference_profile(data: Logged, late_fraction: float):
    return ref.profile_examples(
        data.gold.tolist(), data.pred.tolist(), data.p_gold.tolist(), data.loss.tolist(),
        None if data.margin is None else data.margin.tolist(), late_fraction,
    )  # fmt: skip


def close(a, b, tol=1e-9):
    return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)


def assert_profile_matches(df, data: Logged, expected):
    assert df.height == data.n
    np.testing.assert_array_equal(df["example_id"].to_numpy(), data.ids)
    np.testing.assert_array_equal(df["label"].to_numpy(), data.gold)
    assert df["label_name"].to_list() == [data.label_names()[g] for g in data.gold]
    rows = df.to_dicts()
    for row, exp in zip(rows, expected):
        for key in ("confidence", "variability", "correctness", "mean_loss", "threshold_closeness"):
            assert close(row[key], exp[key]), (row["example_id"], key, row[key], exp[key])
        for key in ("forgetting_events", "learning_events", "first_learned_epoch", "final_correct", "never_learned",
                    "epochs_seen"):  # fmt: skip
            assert row[key] == exp[key], (row["example_id"], key, row[key], exp[key])
        if exp["mean_margin"] is None:
            assert row["mean_margin"] is None
        else:
            assert close(row["mean_margin"], exp["mean_margin"])
        assert row["category"] == exp["category"], (row["example_id"], row["category"], exp["category"])


@SETTINGS
@given(
    st.integers(1, 60), st.integers(2, 8), st.booleans(),
    st.sampled_from([0.25, 0.5, 1.0, 0.1, 0.34]), st.sampled_from([3, 7, 1 << 18]), st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_profile_equals_reference(n, E, margin, late_fraction, block_rows, seed):
    rng = np.random.default_rng(seed)
    data = make_logged(rng, n, E, margin=margin)
    with tempfile.TemporaryDirectory() as tmp:
        run = write_run(Path(tmp) / "run", data, rng)
        v_thr, c_thr = float(rng.random() * 0.5), float(rng.random())
        rule = RegionRule(mode="absolute", variability_threshold=v_thr, confidence_threshold=c_thr)
        df = soicurate.profile(run, late_fraction=late_fraction, regions=rule, block_rows=block_rows)
        expected = reference_profile(data, late_fraction)
        assert_profile_matches(df, data, expected)
        regions = [ref.region(e["confidence"], e["variability"], v_thr, c_thr) for e in expected]
        assert df["region"].cast(str).to_list() == regions


@SETTINGS
@given(st.integers(1, 80), st.floats(0.05, 0.95), st.sampled_from([5, 1 << 18]), st.integers(0, 2**32 - 1))
def test_write_profile_summary_and_quantile_regions(n, q, block_rows, seed):
    rng = np.random.default_rng(seed)
    data = make_logged(rng, n, 6)
    with tempfile.TemporaryDirectory() as tmp:
        run = write_run(Path(tmp) / "run", data, rng)
        out = Path(tmp) / "out" / "profile.parquet"
        summary = write_profile(run, out, regions=RegionRule(fraction=q), block_rows=block_rows)
        df = read_profile(out)
        expected = reference_profile(data, 0.25)
        assert_profile_matches(df, data, expected)
        counts = [sum(1 for e in expected if e["category"] == c) for c in CATEGORIES]
        assert summary.category_counts.tolist() == counts
        assert summary.num_examples == n
        for g in range(data.num_labels):
            assert summary.label_counts[g].tolist() == [
                sum(1 for e, gg in zip(expected, data.gold) if gg == g and e["category"] == c) for c in CATEGORIES
            ]
        v_thr, c_thr = summary.thresholds["variability"], summary.thresholds["confidence"]
        regions = [ref.region(e["confidence"], e["variability"], v_thr, c_thr) for e in expected]
        assert df["region"].cast(str).to_list() == regions
        assert summary.region_counts.tolist() == [regions.count(r) for r in ref.REGION_NAMES]
        m = math.ceil(q * n)  # at least the q most variable examples are ambiguous
        assert sum(1 for e in expected if e["variability"] >= v_thr) >= m
        assert abs(v_thr - ref.kth_largest([e["variability"] for e in expected], m)) <= 0.5 / (1 << 16)
        meta = json.loads(pq.read_schema(out).metadata[pipeline.PROFILE_METADATA_KEY])
        assert meta["region_thresholds"]["variability"] == v_thr and meta["late_fraction"] == 0.25
        assert [p.name for p in out.parent.iterdir()] == ["profile.parquet"]  # no temporary files left


@SETTINGS
@given(st.integers(1, 40), st.lists(st.integers(2, 6), min_size=2, max_size=4), st.integers(0, 2**32 - 1))
def test_several_runs_profiled_together(n, epochs_per_run, seed):
    rng = np.random.default_rng(seed)
    first = make_logged(rng, n, epochs_per_run[0], margin=True)
    runs = [first] + [
        make_logged(rng, n, E, margin=bool(rng.integers(0, 2)), ids=first.ids, gold=first.gold)
        for E in epochs_per_run[1:]
    ]
    R = len(runs)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [write_run(Path(tmp) / f"run{r}", d, rng, seed=r) for r, d in enumerate(runs)]
        single = [soicurate.profile(d, block_rows=7) for d in dirs]
        df = soicurate.profile(dirs, block_rows=7)
        assert df.height == n
        np.testing.assert_array_equal(df["example_id"].to_numpy(), first.ids)
        conf = np.stack([s["confidence"].to_numpy() for s in single])
        var = np.stack([s["variability"].to_numpy() for s in single])
        np.testing.assert_allclose(df["confidence"].to_numpy(), conf.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(df["variability"].to_numpy(), var.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(df["confidence_std"].to_numpy(), conf.std(0), rtol=1e-9, atol=1e-12)
        per_run = [s["category"].cast(str).to_list() for s in single]
        assert df["n_runs"].to_list() == [R] * n
        assert df["epochs_seen"].to_list() == [sum(epochs_per_run)] * n
        rows = df.to_dicts()
        for i, row in enumerate(rows):
            cats = [per_run[r][i] for r in range(R)]
            assert [str(c) for c in row["run_categories"]] == cats
            code, share = ref.modal_category([CODE[c] for c in cats])
            assert row["category"] == CATEGORIES[code], (cats, row["category"])
            assert close(row["category_agreement"], share)
        # and every single-run profile equals the reference from the raw logged arrays
        for d, s in zip(runs, single):
            assert_profile_matches(s, d, reference_profile(d, 0.25))


# -- atomic output -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    rng = np.random.default_rng(3)
    data = make_logged(rng, 50, 4)
    return write_run(tmp_path_factory.mktemp("atomic") / "run", data, rng)


def _failing_on(n_call, real):
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n_call:
            raise RuntimeError("simulated failure")
        return real(*args, **kwargs)

    return wrapper, calls


@pytest.mark.parametrize("old_output", [False, True])
def test_write_profile_is_atomic_when_pass_one_fails(small_run, tmp_path, monkeypatch, old_output):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "profile.parquet"
    if old_output:
        out.write_bytes(b"previous profile")
    wrapper, calls = _failing_on(2, pipeline.compute_block)
    monkeypatch.setattr(pipeline, "compute_block", wrapper)
    with pytest.raises(RuntimeError, match="simulated failure"):
        write_profile(small_run, out, block_rows=10)
    assert calls["n"] == 2  # it did fail mid-way, on the second block
    assert sorted(p.name for p in out_dir.iterdir()) == (["profile.parquet"] if old_output else [])
    if old_output:
        assert out.read_bytes() == b"previous profile"


def test_write_profile_is_atomic_when_pass_two_fails(small_run, tmp_path, monkeypatch):
    out = tmp_path / "profile.parquet"
    wrapper, calls = _failing_on(1, pipeline.region_codes)
    monkeypatch.setattr(pipeline, "region_codes", wrapper)
    with pytest.raises(RuntimeError, match="simulated failure"):
        write_profile(small_run, out, block_rows=10)
    assert calls["n"] == 1
    assert list(tmp_path.iterdir()) == []


def test_write_profile_replaces_old_output_on_success(small_run, tmp_path):
    out = tmp_path / "profile.parquet"
    out.write_bytes(b"previous profile")
    write_profile(small_run, out, block_rows=10)
    assert read_profile(out).height == 50
    assert [p.name for p in tmp_path.iterdir()] == ["profile.parquet"]


# -- bad values are reported at the right file, row and example ----------------------------------
BAD_VALUES = {
    "p_nan": ("p_gold", float("nan"), "p_gold is NaN"),
    "p_out_of_range": ("p_gold", 1.5, "outside [0, 1]"),
    "gold_out_of_range": ("gold", 3, "gold label 3 out of range"),
    "pred_out_of_range": ("pred", -1, "predicted label -1 out of range"),
    "loss_not_finite": ("loss", float("inf"), "loss is not finite"),
    "margin_not_finite": ("margin", float("nan"), "margin is not finite"),
    "gold_changes": ("gold", None, "gold label changes between epochs"),
}


@pytest.mark.parametrize("kind", sorted(BAD_VALUES))
@pytest.mark.parametrize("distributed", [False, True])
def test_bad_value_names_file_row_and_example(kind, distributed, tmp_path):
    rng = np.random.default_rng(11)
    data = make_logged(rng, 30, 4, k=3)
    column, value, message = BAD_VALUES[kind]
    j, e = 17, 2  # sorted position and epoch row of the bad value
    arr = {"p_gold": data.p_gold, "pred": data.pred, "loss": data.loss, "margin": data.margin}.get(column)
    if column == "gold":
        # gold is per example in Logged: write the bad value through a per-epoch override
        golds = np.repeat(data.gold[None, :], 4, axis=0)
        golds[e, j] = value if value is not None else (data.gold[j] + 1) % 3
    else:
        golds = np.repeat(data.gold[None, :], 4, axis=0)
        arr[e, j] = value
    run = tmp_path / "run"
    world = 2 if distributed else 1
    owner = np.arange(30) % world
    writers = [DynamicsWriter(run, data.label_names(), num_examples=30, rank=r, world_size=world) for r in range(world)]
    for ep in range(4):
        for r, w in enumerate(writers):
            cols = rng.permutation(np.flatnonzero(owner == r))
            w.log(data.ids[cols], golds[ep, cols], data.pred[ep, cols], data.p_gold[ep, cols], data.loss[ep, cols],
                  data.margin[ep, cols])  # fmt: skip
            w.end_epoch()
    reader = RunReader(run)
    with pytest.raises(LogFormatError) as info:
        for _ in reader.iter_blocks(block_rows=8):
            pass
    err = info.value
    assert message in str(err)
    assert err.row == j and err.example_id == int(data.ids[j])
    expected_file = epoch_filename(3) if not distributed else "epoch_0003-rank_*.parquet"
    assert err.path.endswith(expected_file), err.path
    with pytest.raises(LogFormatError):
        soicurate.profile(run)


def test_duplicate_id_across_ranks_is_reported(tmp_path):
    rng = np.random.default_rng(5)
    data = make_logged(rng, 10, 2)
    run = tmp_path / "run"
    writers = [DynamicsWriter(run, data.label_names(), num_examples=12, rank=r, world_size=2) for r in range(2)]
    for ep in range(2):
        for r, w in enumerate(writers):
            cols = np.arange(10) if r == 0 else np.array([3, 4])  # ids 3 and 4 on both ranks
            w.log(data.ids[cols], data.gold[cols], data.pred[ep, cols], data.p_gold[ep, cols], data.loss[ep, cols],
                  data.margin[ep, cols])  # fmt: skip
            w.end_epoch()
    with pytest.raises(LogFormatError, match="duplicate example_id") as info:
        list(RunReader(run).iter_blocks(4))
    assert info.value.example_id == int(data.ids[3])


def test_non_main_rank_may_start_after_rank_zero_wrote_the_manifest(tmp_path):
    """Regression: rank 1 used to refuse a directory whose manifest rank 0 had just written,
    and numbered every epoch 1 when end_epoch() was called without an epoch."""
    run = tmp_path / "run"
    w0 = DynamicsWriter(run, ["a", "b"], num_examples=2, rank=0, world_size=2, store_margin=False)
    w1 = DynamicsWriter(run, ["a", "b"], num_examples=2, rank=1, world_size=2, store_margin=False)
    for _ in range(3):
        w0.log([0], [0], [0], [0.9], [0.1])
        w1.log([1], [1], [0], [0.2], [1.5])
        assert w0.end_epoch().name == w1.end_epoch().name.replace("rank_01", "rank_00")
    assert w1.epochs == [1, 2, 3]
    assert sorted(os.listdir(run)) == sorted(["manifest.json"] + [epoch_filename(e, r) for e in (1, 2, 3) for r in (0, 1)])
    # a directory left over from another run is still refused by the main rank
    from soicurate.errors import UsageError

    with pytest.raises(UsageError):
        DynamicsWriter(run, ["a", "b"], rank=0, world_size=2)
