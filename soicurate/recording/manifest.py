"""The run manifest: what a dynamics run directory holds and how it was recorded.

Layout of a run directory (format version 1)::

    RUN_DIR/
      manifest.json                  this file's JSON form
      epoch_0001.parquet             one file per recorded epoch (single process), or
      epoch_0001-rank_00.parquet     one file per epoch and rank (distributed training)
      examples.parquet               optional: example_id plus source/task/language/... columns

Every epoch file has the columns example_id (int64), gold (int32), pred (int32),
p_gold (float32), loss (float32), optionally margin (float32: gold logit minus the best other
logit) and probs (list<float32>: the full probability vector), rows sorted by example_id.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from soicurate.atomic import write_text_atomic
from soicurate.errors import LogFormatError

FORMAT_NAME = "soicurate-dynamics"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
EXAMPLES_NAME = "examples.parquet"
RECORDING_MODES = ("train", "eval", "import", "synthetic")
REQUIRED_COLUMNS = ("example_id", "gold", "pred", "p_gold", "loss")
OPTIONAL_COLUMNS = ("margin", "probs")

_EPOCH_RE = re.compile(r"^epoch_(\d+)(?:-rank_(\d+))?\.parquet$")


def epoch_filename(epoch: int, rank: int | None = None) -> str:
    """File name of one epoch's rows (and one rank's, in distributed training)."""
    if rank is None:
        return f"epoch_{epoch:04d}.parquet"
    return f"epoch_{epoch:04d}-rank_{rank:02d}.parquet"


def parse_epoch_filename(name: str) -> tuple[int, int | None] | None:
    """(epoch, rank) from an epoch file name, or None for any other file."""
    m = _EPOCH_RE.match(name)
    if not m:
        return None
    return int(m.group(1)), (int(m.group(2)) if m.group(2) is not None else None)


def new_run_id() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


@dataclass
class Manifest:
    """Describes one run's dynamics. Serialised as manifest.json next to the epoch files."""

    label_names: list[str]
    num_examples: int | None = None
    epochs: list[int] = field(default_factory=list)
    recorded_by: str = "train"
    run_id: str = field(default_factory=new_run_id)
    seed: int | None = None
    model: str | None = None
    dataset: str | None = None
    dataset_fingerprint: str | None = None
    world_size: int = 1
    has_margin: bool = False
    has_probs: bool = False
    group_columns: list[str] = field(default_factory=list)
    tool_version: str | None = None
    created_at: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def to_json(self) -> str:
        data = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **asdict(self)}
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    def save(self, run_dir: str | Path) -> Path:
        if self.tool_version is None:
            from soicurate import __version__

            self.tool_version = __version__
        if self.created_at is None:
            self.created_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        path = Path(run_dir) / MANIFEST_NAME
        write_text_atomic(path, self.to_json())
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> "Manifest":
        """Read and check manifest.json; every problem is a LogFormatError naming the file."""
        run_dir = Path(run_dir)
        path = run_dir / MANIFEST_NAME
        if not run_dir.exists():
            raise LogFormatError(run_dir, "run directory does not exist")
        if not run_dir.is_dir():
            raise LogFormatError(run_dir, "not a directory (expected a dynamics run directory)")
        if not path.exists():
            raise LogFormatError(path, "manifest missing: not a soicurate dynamics run directory")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise LogFormatError(path, f"cannot read manifest: {exc.strerror}") from None
        if not text.strip():
            raise LogFormatError(path, "manifest is empty")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LogFormatError(path, f"manifest is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(data, dict):
            raise LogFormatError(path, "manifest must be a JSON object")
        if data.get("format") != FORMAT_NAME:
            raise LogFormatError(path, f"not a soicurate dynamics manifest (format={data.get('format')!r})")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise LogFormatError(
                path, f"manifest format_version {version!r} is not supported (this soicurate reads {FORMAT_VERSION})"
            )
        fields = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in fields}
        unknown = sorted(set(data) - fields - {"format", "format_version"})
        if unknown:
            kwargs.setdefault("extra", {})
            kwargs["extra"] = {**kwargs["extra"], **{k: data[k] for k in unknown}}
        try:
            manifest = cls(**kwargs)
        except TypeError as exc:
            raise LogFormatError(path, f"manifest is missing a field: {exc}") from None
        manifest._check(path)
        return manifest

    def _check(self, path: Path) -> None:
        if not isinstance(self.label_names, list) or len(self.label_names) < 2:
            raise LogFormatError(path, "manifest label_names must list at least two labels")
        self.label_names = [str(x) for x in self.label_names]
        if not isinstance(self.epochs, list) or not all(isinstance(e, int) and e >= 1 for e in self.epochs):
            raise LogFormatError(path, "manifest epochs must be a list of positive integers")
        if len(set(self.epochs)) != len(self.epochs) or self.epochs != sorted(self.epochs):
            raise LogFormatError(path, "manifest epochs must be strictly increasing")
        if self.num_examples is not None and (not isinstance(self.num_examples, int) or self.num_examples < 0):
            raise LogFormatError(path, "manifest num_examples must be a non-negative integer")
        if not isinstance(self.world_size, int) or self.world_size < 1:
            raise LogFormatError(path, "manifest world_size must be a positive integer")
        if self.recorded_by not in RECORDING_MODES:
            raise LogFormatError(
                path, f"manifest recorded_by must be one of {', '.join(RECORDING_MODES)} (got {self.recorded_by!r})"
            )
