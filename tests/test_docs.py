"""The worked examples in docs/soi.md are what the kernel computes."""

from pathlib import Path

import numpy as np

from soicurate.profiling import kernels
from soicurate.profiling.soi import CATEGORIES, late_start

DOC = Path(__file__).resolve().parent.parent / "docs" / "soi.md"


def worked_examples():
    text = DOC.read_text()
    block = text.split("<!-- worked-examples: begin -->")[1].split("<!-- worked-examples: end -->")[0]
    rows = [line.strip("|").split("|") for line in block.strip().splitlines()[2:]]
    return [(cells[0].strip(), [int(x) for x in cells[1].split()]) for cells in rows]


def test_every_category_has_a_worked_example():
    assert sorted(name for name, _ in worked_examples()) == sorted(CATEGORIES)


def test_worked_examples_match_the_kernel():
    examples = worked_examples()
    E = len(examples[0][1])
    n = len(examples)
    correct = np.array([seq for _, seq in examples], dtype=np.int32).T  # (E, n)
    gold = np.zeros(n, np.int32)
    pred = np.where(correct == 1, 0, 1).astype(np.int32)
    p = np.where(correct == 1, 0.8, 0.2).astype(np.float32)
    outs = [np.empty(n, t) for t in (np.float64, np.float64, np.float64, np.int32, np.int32, np.int32, np.bool_, np.float64, np.float64, np.int8)]
    kernels.profile_block(gold, pred, p, p, np.empty((0, 0), np.float32), False, late_start(E), *outs)
    assert [CATEGORIES[c] for c in outs[-1]] == [name for name, _ in examples]
