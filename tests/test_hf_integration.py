"""The transformers integration end to end, with a tiny BERT trained for 3 short CPU epochs.

Every run uses remove_unused_columns=True (the default: the dataset also has text and source
columns) and shuffled batches; the train-mode runs add gradient accumulation and eval/save
steps. Resumed runs must equal uninterrupted ones: same epochs, every example exactly once per
epoch, and (training on a CPU being deterministic) the same values.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from tiny_model import predict, tiny_setup, training_args  # noqa: E402
from transformers import BertForSequenceClassification, Trainer, TrainerCallback  # noqa: E402

import soicurate  # noqa: E402
from soicurate.errors import UsageError  # noqa: E402
from soicurate.profiling.reader import RunReader, read_dynamics  # noqa: E402
from soicurate.recording.hf import DynamicsCallback, DynamicsTrainer  # noqa: E402
from soicurate.recording.manifest import Manifest, epoch_filename  # noqa: E402
from soicurate.recording.recorder import partial_filename  # noqa: E402

N = 96  # 12 batches of 8 per epoch; with gradient_accumulation_steps=2, 6 optimizer steps per epoch
TRAIN_ARGS = dict(
    gradient_accumulation_steps=2, save_strategy="steps", save_steps=4, eval_strategy="steps", eval_steps=5
)
EVAL_ARGS = dict(save_strategy="epoch")


class StopAt(TrainerCallback):
    """Stops training after optimizer step `step` or at the end of epoch `epoch` (as a crash would)."""

    def __init__(self, step=None, epoch=None):
        self.step, self.epoch = step, epoch

    def on_step_end(self, args, state, control, **kwargs):
        if self.step is not None and state.global_step == self.step:
            control.should_training_stop = True

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.epoch is not None and round(state.epoch) == self.epoch:
            control.should_training_stop = True


def run_train_mode(out, *, callbacks=(), resume=None, **overrides):
    tiny = tiny_setup(N)
    args = training_args(out, **{**TRAIN_ARGS, **overrides})
    trainer = DynamicsTrainer(
        model=tiny.model,
        args=args,
        train_dataset=tiny.dataset,
        eval_dataset=tiny.dataset.select(range(16)),  # has example_id too: must not reach the model
        processing_class=tiny.tokenizer,
        callbacks=list(callbacks),
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, tiny


def run_eval_mode(out, *, callbacks=(), resume=None, **overrides):
    """A plain transformers Trainer plus the callback: no subclass needed in eval mode."""
    tiny = tiny_setup(N)
    args = training_args(out, **{**EVAL_ARGS, **overrides})
    trainer = Trainer(
        model=tiny.model,
        args=args,
        train_dataset=tiny.dataset,
        processing_class=tiny.tokenizer,
        callbacks=[DynamicsCallback(tiny.dataset, mode="eval"), *callbacks],
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, tiny


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory):
    """The uninterrupted reference runs, one per mode (shared by several tests)."""
    root = tmp_path_factory.mktemp("full")
    _, tiny = run_train_mode(root / "train")
    run_eval_mode(root / "eval")
    return {"train": root / "train", "eval": root / "eval", "tiny": tiny}


def assert_valid_run(run_dir, mode, tiny):
    m = Manifest.load(run_dir)
    assert m.recorded_by == mode and m.epochs == [1, 2, 3] and m.num_examples == N
    assert m.label_names == tiny.label_names and m.seed == 0 and m.group_columns == ["source"]
    reader = RunReader(run_dir)
    assert sum(b.n for b in reader.iter_blocks(block_rows=40)) == N
    df = read_dynamics(run_dir)
    ids = sorted(tiny.dataset["example_id"])
    for epoch in (1, 2, 3):
        assert df.filter(df["epoch"] == epoch)["example_id"].to_list() == ids
    gold = dict(zip(tiny.dataset["example_id"], tiny.dataset["label"]))
    assert df["gold"].to_list() == [gold[i] for i in df["example_id"].to_list()]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_three_epochs_validate_and_profile(full_runs, mode):
    tiny = full_runs["tiny"]
    run_dir = full_runs[mode] / "dynamics"
    assert_valid_run(run_dir, mode, tiny)
    prof = soicurate.profile(run_dir)
    assert prof.height == N
    assert sorted(prof["example_id"].to_list()) == sorted(tiny.dataset["example_id"])
    assert "source" in prof.columns
    assert prof["correctness"].mean() > 0.5  # the model does learn something


def test_eval_mode_last_epoch_equals_inference_with_the_final_checkpoint(full_runs):
    tiny = full_runs["tiny"]
    out = full_runs["eval"]
    final = out / "checkpoint-36"  # 3 epochs x 12 steps, saved at the end of epoch 3
    model = BertForSequenceClassification.from_pretrained(final)
    ids, p_gold, pred = predict(model, tiny.tokenizer, tiny.dataset)
    df = read_dynamics(out / "dynamics", epochs=[3])
    order = np.argsort(ids)
    assert df["example_id"].to_list() == ids[order].tolist()
    np.testing.assert_allclose(df["p_gold"].to_numpy(), p_gold[order], atol=1e-5)
    np.testing.assert_array_equal(df["pred"].to_numpy(), pred[order])


def test_train_mode_rows_belong_to_their_examples(tmp_path):
    """With a frozen model (lr 0) the training-pass rows equal an inference pass: each row of a
    shuffled batch is matched to its own example."""
    trainer, tiny = run_train_mode(
        tmp_path / "out", learning_rate=0.0, num_train_epochs=2, eval_strategy="no", save_strategy="no"
    )
    ids, p_gold, pred = predict(trainer.model, tiny.tokenizer, tiny.dataset)
    order = np.argsort(ids)
    df = read_dynamics(tmp_path / "out" / "dynamics")
    for epoch in (1, 2):
        got = df.filter(df["epoch"] == epoch)
        assert got["example_id"].to_list() == ids[order].tolist()
        np.testing.assert_allclose(got["p_gold"].to_numpy(), p_gold[order], atol=1e-5)


def assert_same_run(a, b):
    ma, mb = Manifest.load(a), Manifest.load(b)
    assert ma.epochs == mb.epochs == [1, 2, 3] and ma.recorded_by == mb.recorded_by
    da, db = read_dynamics(a), read_dynamics(b)
    assert da.height == db.height == 3 * N
    assert da.select("epoch", "example_id").equals(db.select("epoch", "example_id"))  # no duplicate, none missing
    np.testing.assert_allclose(da["p_gold"].to_numpy(), db["p_gold"].to_numpy(), atol=1e-6)
    files = [sorted(f for f in os.listdir(d) if f.endswith(".parquet")) for d in (a, b)]
    assert files[0] == files[1]


@pytest.mark.slow
def test_train_mode_resumes_mid_epoch_without_duplicates_or_gaps(full_runs, tmp_path):
    out = tmp_path / "out"
    run_train_mode(out, callbacks=[StopAt(step=8)])  # epoch 2 is 2/6 done; checkpoint-8 exists
    assert Manifest.load(out / "dynamics").epochs == [1]
    assert (out / "checkpoint-8" / partial_filename(0)).exists()

    broken = tmp_path / "broken"  # the same checkpoint without the saved rows cannot resume recording
    shutil.copytree(out, broken)
    (broken / "checkpoint-8" / partial_filename(0)).unlink()
    with pytest.raises(UsageError, match="partial-epoch file"):
        run_train_mode(broken, resume=str(broken / "checkpoint-8"))

    run_train_mode(out, resume=True)
    assert_same_run(full_runs["train"] / "dynamics", out / "dynamics")

    # resuming from an older checkpoint re-records the later epochs instead of appending to them
    run_train_mode(out, resume=str(out / "checkpoint-4"))
    assert_same_run(full_runs["train"] / "dynamics", out / "dynamics")


@pytest.mark.slow
def test_train_mode_writes_an_epoch_its_last_checkpoint_closed(full_runs, tmp_path):
    """A crash between the checkpoint of an epoch's last step and the epoch's end: the rows
    stored in the checkpoint are the whole epoch, written on resume."""
    out = tmp_path / "out"
    run_train_mode(out, callbacks=[StopAt(step=12)], save_steps=12)  # checkpoint-12 closes epoch 2
    run_dir = out / "dynamics"
    m = Manifest.load(run_dir)
    m.epochs = [1]  # as if the process died before writing epoch 2
    m.save(run_dir)
    (run_dir / epoch_filename(2)).unlink()
    run_train_mode(out, resume=str(out / "checkpoint-12"), save_steps=12)
    assert_same_run(full_runs["train"] / "dynamics", run_dir)


@pytest.mark.slow
def test_eval_mode_resumes_after_epoch_one(full_runs, tmp_path):
    out = tmp_path / "out"
    run_eval_mode(out, callbacks=[StopAt(epoch=1)])
    assert Manifest.load(out / "dynamics").epochs == [1]
    run_eval_mode(out, resume=True)
    assert_same_run(full_runs["eval"] / "dynamics", out / "dynamics")


@pytest.mark.slow
def test_eval_mode_resumes_mid_epoch(full_runs, tmp_path):
    out = tmp_path / "out"
    run_eval_mode(out, callbacks=[StopAt(step=16)], save_strategy="steps", save_steps=8)  # inside epoch 2
    assert Manifest.load(out / "dynamics").epochs == [1]
    run_eval_mode(out, resume=str(out / "checkpoint-16"), save_strategy="steps", save_steps=8)
    assert_same_run(full_runs["eval"] / "dynamics", out / "dynamics")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_does_not_break_recording(tmp_path, precision):
    """bf16 runs under CPU autocast; fp16 falls back to float32 on a CPU but takes the same path."""
    out = tmp_path / precision
    run_train_mode(out, num_train_epochs=2, eval_strategy="no", save_strategy="no", **{precision: True})
    df = read_dynamics(out / "dynamics")
    assert df.height == 2 * N and str(df["p_gold"].dtype) == "Float32"
    assert df["p_gold"].is_between(0, 1).all() and df["loss"].is_finite().all()


def test_train_mode_needs_the_trainer_subclass(tmp_path):
    tiny = tiny_setup(16)
    trainer = Trainer(
        model=tiny.model,
        args=training_args(tmp_path / "out", num_train_epochs=1),
        train_dataset=tiny.dataset,
        processing_class=tiny.tokenizer,
        callbacks=[DynamicsCallback(tiny.dataset, mode="train")],
    )
    with pytest.raises(UsageError, match="DynamicsTrainer"):
        trainer.train()


def test_missing_id_column_and_existing_run_are_clear_errors(tmp_path):
    tiny = tiny_setup(16)
    no_ids = tiny.dataset.remove_columns("example_id")
    trainer = DynamicsTrainer(
        model=tiny.model,
        args=training_args(tmp_path / "a", num_train_epochs=1),
        train_dataset=no_ids,
        processing_class=tiny.tokenizer,
    )
    with pytest.raises(UsageError, match="no 'example_id' column"):
        trainer.train()

    args = training_args(tmp_path / "b", num_train_epochs=2)
    DynamicsTrainer(model=tiny.model, args=args, train_dataset=tiny.dataset, processing_class=tiny.tokenizer).train()
    again = DynamicsTrainer(model=tiny.model, args=args, train_dataset=tiny.dataset, processing_class=tiny.tokenizer)
    with pytest.raises(UsageError, match="already holds a dynamics run"):
        again.train()
    replaced = DynamicsTrainer(
        model=tiny.model, args=args, train_dataset=tiny.dataset, processing_class=tiny.tokenizer,
        dynamics_dir=tmp_path / "b" / "dynamics", dynamics_options={"overwrite": True},
    )  # fmt: skip
    replaced.train()
    assert Manifest.load(tmp_path / "b" / "dynamics").epochs == [1, 2]


DDP_SCRIPT = '''
import sys
from tiny_model import tiny_setup, training_args
from transformers import TrainerCallback
from soicurate.recording.hf import DynamicsTrainer

class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True

def run(out, mode, callbacks=(), resume=None):
    tiny = tiny_setup(N)
    args = training_args(out, save_strategy="steps", save_steps=4, num_train_epochs=2)
    trainer = DynamicsTrainer(model=tiny.model, args=args, train_dataset=tiny.dataset,
                              processing_class=tiny.tokenizer, dynamics_mode=mode, callbacks=list(callbacks))
    assert args.world_size == 2
    trainer.train(resume_from_checkpoint=resume)

N = int(sys.argv[2])
root = sys.argv[1]
run(root + "/full", "train")
run(root + "/part", "train", callbacks=[StopAt(5)])  # epoch 1 has 6 steps per rank: stop inside it
run(root + "/part", "train", resume=root + "/part/checkpoint-4")
run(root + "/eval", "eval")
'''


@pytest.mark.slow
def test_distributed_trainer_two_processes(tmp_path):
    """torchrun with 2 CPU processes (gloo): rank files, padding duplicates, mid-epoch resume."""
    import subprocess
    import sys

    n = 93  # odd: the distributed sampler repeats an example to even out the ranks
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    cmd += [str(script), str(tmp_path), str(n)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, mode in (("full", "train"), ("part", "train"), ("eval", "eval")):
        run_dir = tmp_path / name / "dynamics"
        m = Manifest.load(run_dir)
        assert m.world_size == 2 and m.epochs == [1, 2] and m.recorded_by == mode and m.num_examples == n
        reader = RunReader(run_dir)
        assert all(len(paths) == 2 for paths in reader.files.values())
        assert sum(b.n for b in reader.iter_blocks(block_rows=30)) == n
        assert soicurate.profile(run_dir).height == n
    full, part = read_dynamics(tmp_path / "full" / "dynamics"), read_dynamics(tmp_path / "part" / "dynamics")
    assert full.select("epoch", "example_id").equals(part.select("epoch", "example_id"))
    np.testing.assert_allclose(full["p_gold"].to_numpy(), part["p_gold"].to_numpy(), atol=1e-6)
