"""Configuration of a training run: every flag of `soicurate train`, also loadable from a
YAML or TOML file (flags given on the command line win over the file)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from soicurate.errors import UsageError

RECORD_MODES = ("train", "eval", "none")


@dataclass
class TrainConfig:
    """Stage-one fine-tuning of a sequence classifier, recording training dynamics."""

    model: str = ""
    train: str = ""
    eval: dict[str, str] = field(default_factory=dict)  # name -> data spec (in- and out-of-distribution)
    output_dir: str = "runs/train"
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    label_names: list[str] | None = None
    id_column: str | None = None
    max_length: int = 128
    epochs: int = 3
    learning_rate: float = 2e-5
    batch_size: int = 16
    eval_batch_size: int = 64
    warmup: float = 0.0  # a ratio of total steps in [0, 1), or a number of steps
    weight_decay: float = 0.0
    seed: int = 42  # weight initialisation (the classification head)
    data_seed: int | None = None  # data order; defaults to seed
    record: str = "train"
    group_by_length: bool = True
    gradient_accumulation_steps: int = 1
    fp16: bool = False
    bf16: bool = False
    max_train_examples: int | None = None
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs)
    stop_after_epoch: int | None = None  # stop (resumably) after this epoch, inside the full epochs' schedule
    subset_seed: int | None = None  # which max_train_examples subset; defaults to the data seed
    evaluate: str = "epoch"  # evaluate the eval sets after every epoch, or only at the "end"
    resume: bool = False

    def validate(self) -> "TrainConfig":
        if not self.model:
            raise UsageError("no model given (a Hub name or a local directory): --model")
        if not self.train:
            raise UsageError("no training data given (Hub name, save_to_disk directory or file): --train")
        if self.record not in RECORD_MODES:
            raise UsageError(f"record must be one of {', '.join(RECORD_MODES)}, got {self.record!r}")
        for name, value in (("epochs", self.epochs), ("batch_size", self.batch_size), ("max_length", self.max_length),
                            ("eval_batch_size", self.eval_batch_size),
                            ("gradient_accumulation_steps", self.gradient_accumulation_steps)):  # fmt: skip
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if self.record != "none" and self.epochs < 2:
            raise UsageError("recording dynamics needs at least 2 epochs")
        if self.learning_rate <= 0:
            raise UsageError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.warmup < 0:
            raise UsageError(f"warmup must be >= 0, got {self.warmup}")
        if self.evaluate not in ("epoch", "end"):
            raise UsageError(f"evaluate must be 'epoch' or 'end', got {self.evaluate!r}")
        if self.stop_after_epoch is not None and not (
            isinstance(self.stop_after_epoch, int) and 1 <= self.stop_after_epoch < self.epochs
        ):
            raise UsageError(f"stop_after_epoch must be an integer in [1, epochs={self.epochs}), got {self.stop_after_epoch!r}")
        if self.fp16 and self.bf16:
            raise UsageError("choose fp16 or bf16, not both")
        return self

    @property
    def effective_data_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    @property
    def effective_subset_seed(self) -> int:
        return self.effective_data_seed if self.subset_seed is None else self.subset_seed

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "TrainConfig":
        """Read a YAML (.yaml/.yml) or TOML (.toml) file; `overrides` (not None) win."""
        data = load_config_file(path)
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UsageError(f"{path}: unknown setting(s) {', '.join(unknown)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except TypeError as exc:
            raise UsageError(f"{path}: {exc}") from None


def load_config_file(path: str | Path) -> dict:
    """A YAML or TOML mapping, with a one-line error naming the file on any problem."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: config file does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise UsageError(f"{path}: config must be .yaml, .yml or .toml")
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"{path}: cannot parse config ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: config must be a mapping of settings")
    return data
