"""Options shared by commands that read foreign logs (long tables need a column mapping)."""

from __future__ import annotations

import functools

import click

_TABLE_OPTIONS = [
    click.option("--id-col", default="example_id", show_default=True, help="Table: example id column."),
    click.option("--epoch-col", default="epoch", show_default=True, help="Table: epoch column."),
    click.option("--gold-col", default="gold", show_default=True, help="Table: gold label column."),
    click.option("--probs-col", default=None, help="Table: column holding the full probability vector."),
    click.option("--logits-col", default=None, help="Table: column holding the logits vector."),
    click.option("--pred-col", default=None, help="Table: predicted label column (with --p-gold-col)."),
    click.option("--p-gold-col", default=None, help="Table: gold-label probability column (with --pred-col)."),
    click.option("--prob-col", default=None, help="Table, binary tasks: probability of label 1."),
    click.option("--loss-col", default=None, help="Table: loss column (default: -log p_gold)."),
    click.option("--margin-col", default=None, help="Table: margin column (gold logit minus best other)."),
    click.option("--group-col", "group_cols", multiple=True, help="Table: source/task/language column to keep (repeatable)."),
    click.option("--label-names", default=None, help="Comma-separated label names, in label-index order."),
    click.option("--num-labels", type=click.IntRange(2), default=None, help="Table: number of labels (else from the data)."),
]


def table_mapping_options(func):
    """Add the long-table column-mapping options to a command."""
    for option in reversed(_TABLE_OPTIONS):
        func = option(func)
    return func


def mapping_from_options(opts: dict):
    """A TableMapping when any probability column was given, else None."""
    sources = [opts.get(k) for k in ("probs_col", "logits_col", "pred_col", "p_gold_col", "prob_col")]
    if not any(sources):
        return None
    from soicurate.errors import UsageError
    from soicurate.recording.adapters.table import TableMapping

    names = opts.get("label_names")
    try:
        return TableMapping(
            id=opts["id_col"],
            epoch=opts["epoch_col"],
            gold=opts["gold_col"],
            probs=opts.get("probs_col"),
            logits=opts.get("logits_col"),
            pred=opts.get("pred_col"),
            p_gold=opts.get("p_gold_col"),
            prob=opts.get("prob_col"),
            loss=opts.get("loss_col"),
            margin=opts.get("margin_col"),
            groups=tuple(opts.get("group_cols") or ()),
            label_names=[n.strip() for n in names.split(",")] if names else None,
            num_labels=opts.get("num_labels"),
        )
    except (ValueError, UsageError) as exc:
        raise click.UsageError(str(exc)) from None


def pop_table_options(kwargs: dict) -> dict:
    """Remove the table options from a command's kwargs and return them."""
    keys = ["id_col", "epoch_col", "gold_col", "probs_col", "logits_col", "pred_col", "p_gold_col", "prob_col",
            "loss_col", "margin_col", "group_cols", "label_names", "num_labels"]  # fmt: skip
    return {k: kwargs.pop(k) for k in keys if k in kwargs}


def common_output_options(func):
    """--json and --quiet, as every command that prints a summary has them."""

    @click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout (for scripts).")
    @click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper
