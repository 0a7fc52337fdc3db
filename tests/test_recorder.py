"""DynamicsRecorder: plain PyTorch loops, epochs as context managers, partial epochs, and real
distributed training (2 CPU processes, gloo) whose rank files the reader merges."""

from __future__ import annotations

import json
import os
import socket
import warnings

import numpy as np
import pytest
import torch

import soicurate
from soicurate.errors import UsageError
from soicurate.profiling.reader import RunReader, read_dynamics
from soicurate.recording.manifest import Manifest, epoch_filename
from soicurate.recording.recorder import DynamicsRecorder, partial_filename
from soicurate.recording.writer import softmax_stats

LABELS = ["a", "b", "c"]


def fake_logits(ids, epoch: int, k: int = 3) -> np.ndarray:
    """Deterministic logits of (example id, epoch): what any rank computes for an example."""
    ids = np.asarray(ids, dtype=np.float64)[:, None]
    cols = np.arange(k, dtype=np.float64)[None, :]
    return (3.0 * np.sin(0.37 * ids * (cols + 1) + epoch) + 0.5 * epoch * (cols == ids % k)).astype(np.float32)


def gold_of(ids, k: int = 3) -> np.ndarray:
    return (np.asarray(ids) * 7 % k).astype(np.int64)


# -- a plain PyTorch training loop ---------------------------------------------------------
def test_plain_pytorch_loop_records_every_example_every_epoch(tmp_path):
    torch.manual_seed(0)
    n, k, dim = 120, 3, 8
    ids = torch.arange(5000, 5000 + 2 * n, 2)  # ids are not positions
    x = torch.randn(n, dim)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, x, y), batch_size=16, shuffle=True)
    model = torch.nn.Linear(dim, k)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    rec = DynamicsRecorder(tmp_path / "run", LABELS, num_examples=n, seed=0, model="linear")
    seen = []  # what the loop saw, to recompute the statistics independently
    for epoch in range(1, 4):
        with rec.epoch():
            for b_ids, b_x, b_y in loader:
                logits = model(b_x)
                loss = torch.nn.functional.cross_entropy(logits, b_y)
                rec.log_batch(b_ids, logits, b_y)
                seen.append((epoch, b_ids.numpy(), logits.detach().numpy().copy(), b_y.numpy()))
                opt.zero_grad()
                loss.backward()
                opt.step()
    m = Manifest.load(tmp_path / "run")
    assert m.epochs == [1, 2, 3] and m.num_examples == n and m.recorded_by == "train"
    reader = RunReader(tmp_path / "run")
    assert sum(b.n for b in reader.iter_blocks(block_rows=50)) == n
    df = read_dynamics(tmp_path / "run")
    for epoch in (1, 2, 3):
        parts = [s for s in seen if s[0] == epoch]
        e_ids = np.concatenate([p[1] for p in parts])
        stats = softmax_stats(np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]))
        order = np.argsort(e_ids)
        got = df.filter(df["epoch"] == epoch)
        assert got["example_id"].to_list() == sorted(e_ids.tolist())
        for col in ("p_gold", "loss", "margin"):
            np.testing.assert_allclose(got[col].to_numpy(), stats[col][order], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got["pred"].to_numpy(), stats["pred"][order])
    prof = soicurate.profile(tmp_path / "run")
    assert prof.height == n and sorted(prof["example_id"].to_list()) == ids.tolist()


def test_epoch_context_discards_the_partial_epoch_on_error(tmp_path):
    rec = DynamicsRecorder(tmp_path / "run", LABELS)
    ids = np.arange(10)
    with rec.epoch():
        rec.log_batch(ids, fake_logits(ids, 1), gold_of(ids))
    with pytest.raises(RuntimeError, match="boom"):
        with rec.epoch():
            rec.log_batch(ids[:5], fake_logits(ids[:5], 2), gold_of(ids[:5]))
            raise RuntimeError("boom")
    assert rec.pending_rows == 0 and rec.epochs == [1]
    assert not (tmp_path / "run" / epoch_filename(2)).exists()
    assert Manifest.load(tmp_path / "run").epochs == [1]
    with rec.epoch():  # the next epoch is number 2 again, complete
        rec.log_batch(ids, fake_logits(ids, 2), gold_of(ids))
    assert Manifest.load(tmp_path / "run").epochs == [1, 2]
    assert RunReader(tmp_path / "run").num_examples == 10


def test_repeated_example_in_an_epoch_keeps_the_first_row(tmp_path):
    rec = DynamicsRecorder(tmp_path / "run", LABELS)
    ids = np.array([3, 1, 2])
    first = fake_logits(ids, 1)
    rec.log_batch(ids, first, gold_of(ids))
    rec.log_batch(ids[:2], first[:2] + 5.0, gold_of(ids[:2]))  # padding repeats 3 and 1
    rec.end_epoch()
    df = read_dynamics(tmp_path / "run")
    expected = softmax_stats(first, gold_of(ids))
    order = np.argsort(ids)
    assert df["example_id"].to_list() == [1, 2, 3]
    np.testing.assert_allclose(df["p_gold"].to_numpy(), expected["p_gold"][order], rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_precision_logits_are_summarised_in_float32(tmp_path, dtype):
    ids = np.arange(40)
    logits = torch.tensor(fake_logits(ids, 1)).to(dtype)
    rec = DynamicsRecorder(tmp_path / "run", LABELS)
    rec.log_batch(torch.tensor(ids), logits, torch.tensor(gold_of(ids)))
    rec.end_epoch()
    df = read_dynamics(tmp_path / "run")
    assert str(df["p_gold"].dtype) == "Float32"
    ref = softmax_stats(logits.double().numpy(), gold_of(ids))  # the logits as given, exactly
    np.testing.assert_allclose(df["p_gold"].to_numpy(), ref["p_gold"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(df["loss"].to_numpy(), ref["loss"], rtol=1e-5, atol=1e-5)


def test_accelerator_path_packs_one_host_copy_and_matches(tmp_path, monkeypatch):
    """The path used on GPUs (statistics packed into one int64 tensor) gives the same rows."""
    ids = np.arange(100, 160)
    logits = torch.tensor(fake_logits(ids, 2))
    gold = torch.tensor(gold_of(ids))
    direct = DynamicsRecorder(tmp_path / "direct", LABELS, store_probs=True)
    direct.log_batch(torch.tensor(ids), logits, gold)
    direct.end_epoch()
    monkeypatch.setattr(DynamicsRecorder, "_pack_on_cpu", True)
    packed = DynamicsRecorder(tmp_path / "packed", LABELS, store_probs=True)
    packed.log_batch(torch.tensor(ids[:30]), logits[:30], gold[:30])  # ids travel in the pack
    packed.log_batch(ids[30:], logits[30:], gold[30:])  # ids already on the host
    packed.end_epoch()
    a, b = read_dynamics(tmp_path / "direct"), read_dynamics(tmp_path / "packed")
    assert a.equals(b)


def test_numpy_inputs_and_bad_inputs(tmp_path):
    rec = DynamicsRecorder(tmp_path / "run", LABELS)
    ids = np.arange(8)
    rec.log_batch(ids.tolist(), fake_logits(ids, 1), gold_of(ids).tolist())
    with pytest.raises(ValueError, match="example_id 5: label 3 is out of range"):
        rec.log_batch([5], fake_logits([5], 1), [3])
    with pytest.raises(ValueError, match="2 columns but the run has 3 labels"):
        rec.log_batch([1], np.zeros((1, 2), np.float32), [0])
    with pytest.raises(ValueError, match="has 2 labels and 1 example ids"):
        rec.log_batch([1], np.zeros((1, 3), np.float32), [0, 1])
    rec.end_epoch()
    assert read_dynamics(tmp_path / "run").height == 8


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    ids = np.arange(6)
    rec = DynamicsRecorder(tmp_path / "run", LABELS)
    rec.log_batch(ids, fake_logits(ids, 1), gold_of(ids))
    rec.end_epoch()
    with pytest.raises(UsageError, match="already holds a dynamics run"):
        DynamicsRecorder(tmp_path / "run", LABELS)
    resumed = DynamicsRecorder(tmp_path / "run", LABELS, resume=True)
    assert resumed.next_epoch == 2
    fresh = DynamicsRecorder(tmp_path / "run", LABELS, overwrite=True)
    assert fresh.epochs == [] and not (tmp_path / "run" / epoch_filename(1)).exists()


def test_partial_epoch_round_trip_and_rewind(tmp_path):
    ids = np.arange(20)
    rec = DynamicsRecorder(tmp_path / "run", LABELS)
    for epoch in (1, 2):
        rec.log_batch(ids, fake_logits(ids, epoch), gold_of(ids))
        rec.end_epoch()
    rec.log_batch(ids[:8], fake_logits(ids[:8], 3), gold_of(ids[:8]))  # epoch 3, first batches
    ckpt = tmp_path / "checkpoint-7"
    path = rec.save_partial(ckpt)
    assert path.name == partial_filename(0) and rec.pending_rows == 8  # still buffered

    # a restart: a new process, resumed from the checkpoint
    again = DynamicsRecorder(tmp_path / "run", LABELS, resume=True)
    assert again.load_partial(ckpt, 3) == 8
    again.log_batch(ids[8:], fake_logits(ids[8:], 3), gold_of(ids[8:]))
    again.end_epoch(3)
    df = read_dynamics(tmp_path / "run")
    assert df.filter(df["epoch"] == 3)["example_id"].to_list() == ids.tolist()
    ref = softmax_stats(fake_logits(ids, 3), gold_of(ids))
    np.testing.assert_allclose(df.filter(df["epoch"] == 3)["p_gold"].to_numpy(), ref["p_gold"], rtol=1e-5)

    with pytest.raises(UsageError, match="holds rows of epoch 3, but training resumes inside epoch 2"):
        again.load_partial(ckpt, 2)
    assert again.load_partial(ckpt, 2, strict=False) is None
    assert again.load_partial(tmp_path / "nowhere", 3) is None

    dropped = again.rewind(1)
    assert dropped == [2, 3] and again.epochs == [1] and again.next_epoch == 2
    assert Manifest.load(tmp_path / "run").epochs == [1]
    assert sorted(os.listdir(tmp_path / "run")) == [epoch_filename(1), "manifest.json"]


def test_warns_when_an_epoch_misses_examples(tmp_path):
    rec = DynamicsRecorder(tmp_path / "run", LABELS, num_examples=10)
    ids = np.arange(9)
    rec.log_batch(ids, fake_logits(ids, 1), gold_of(ids))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec.end_epoch()
    assert any("has 9 examples but the run has 10" in str(w.message) for w in caught)


# -- distributed: 2 real processes ---------------------------------------------------------
N_DIST = 37  # not a multiple of the world size: DistributedSampler pads with repeated examples
BATCH = 4
DELAYED_RANK = 1


def _dist_worker(rank: int, world: int, run_dir: str, port: int, report: str) -> None:
    import time

    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ids = np.arange(500, 500 + N_DIST)
        rec = DynamicsRecorder(run_dir, LABELS, num_examples=N_DIST, seed=0)
        assert (rec.rank, rec.world_size) == (rank, world)
        sampler = DistributedSampler(range(N_DIST), num_replicas=world, rank=rank, shuffle=True, seed=0)
        out = {"positions": {}, "files_at_commit": {}}
        for epoch in (1, 2, 3):
            sampler.set_epoch(epoch)
            positions = list(sampler)
            out["positions"][epoch] = positions
            with rec.epoch():
                for s in range(0, len(positions), BATCH):
                    b = ids[positions[s : s + BATCH]]
                    rec.log_batch(torch.tensor(b), torch.tensor(fake_logits(b, epoch)), torch.tensor(gold_of(b)))
                if epoch == 2 and rank == 1:  # the same examples again, other values: first row wins
                    b = ids[positions[:BATCH]]
                    rec.log_batch(b, fake_logits(b, epoch) + 4.0, gold_of(b))
                if rank == DELAYED_RANK:
                    time.sleep(0.5)  # rank 0 must not list the epoch before this rank's file exists
            m = Manifest.load(run_dir)
            files = [os.path.join(run_dir, epoch_filename(epoch, r)) for r in range(world)]
            out["files_at_commit"][epoch] = [os.path.exists(f) for f in files]
            out.setdefault("manifest_epochs", {})[epoch] = m.epochs
        with open(f"{report}.{rank}", "w") as fh:
            json.dump(out, fh)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_distributed_two_processes_write_rank_files_the_reader_merges(tmp_path):
    import torch.multiprocessing as mp

    run_dir = tmp_path / "run"
    report = str(tmp_path / "report")
    world = 2
    mp.spawn(_dist_worker, args=(world, str(run_dir), _free_port(), report), nprocs=world, join=True)

    reports = [json.load(open(f"{report}.{r}")) for r in range(world)]
    for r in reports:  # when end_epoch returned, every rank file existed and the manifest listed the epoch
        for epoch in ("1", "2", "3"):
            assert r["files_at_commit"][epoch] == [True, True]
            assert int(epoch) in r["manifest_epochs"][epoch]

    m = Manifest.load(run_dir)
    assert m.world_size == 2 and m.epochs == [1, 2, 3] and m.num_examples == N_DIST
    reader = RunReader(run_dir)
    assert all(len(paths) == 2 for paths in reader.files.values())
    assert sum(b.n for b in reader.iter_blocks(block_rows=10)) == N_DIST  # merged, validated, no duplicate

    ids = np.arange(500, 500 + N_DIST)
    df = read_dynamics(run_dir)
    for epoch in (1, 2, 3):
        got = df.filter(df["epoch"] == epoch)
        assert got["example_id"].to_list() == ids.tolist()  # every example exactly once
        ref = softmax_stats(fake_logits(ids, epoch), gold_of(ids))  # first rows only (no +4 copies)
        np.testing.assert_allclose(got["p_gold"].to_numpy(), ref["p_gold"], rtol=1e-5, atol=1e-6)
        # padding put some examples on both ranks: the lower rank keeps them
        on = [set(ids[reports[r]["positions"][str(epoch)]].tolist()) for r in range(world)]
        both = on[0] & on[1]
        assert both, "DistributedSampler should have padded with repeated examples"
        rank0 = set(read_rank(run_dir, epoch, 0))
        rank1 = set(read_rank(run_dir, epoch, 1))
        assert both <= rank0 and not (both & rank1)
        assert rank0 | rank1 == set(ids.tolist()) and not (rank0 & rank1)
    prof = soicurate.profile(run_dir)
    assert prof.height == N_DIST


def read_rank(run_dir, epoch: int, rank: int) -> list[int]:
    import pyarrow.parquet as pq

    return pq.read_table(run_dir / epoch_filename(epoch, rank), columns=["example_id"])["example_id"].to_pylist()
