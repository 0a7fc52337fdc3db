"""`soicurate push`: push a curated folder to the Hugging Face Hub."""

from __future__ import annotations

import click


@click.command("push")
@click.argument("curated_dir", type=click.Path(file_okay=False))
@click.argument("repo_id")
@click.option("--private/--public", "private", default=None,
              help="Visibility of a repository this creates (an existing one keeps its own; default: the Hub's).")
@click.option("--token-env", default=None, metavar="VAR",
              help="Read the token from this environment variable (default: HF_TOKEN, then `hf auth login`'s token).")
@click.option("-m", "--message", "commit_message", default=None, help="Commit message of the data commit.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout (for scripts).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars and no summary.")
def push(curated_dir, repo_id, private, token_env, commit_message, as_json, quiet):
    """Push CURATED_DIR (written by `soicurate curate`) to the Hub dataset repository REPO_ID.

    Uses huggingface_hub and datasets: the dataset card and the selection provenance
    (soicurate/ids.txt, soicurate/selection.parquet) in one commit, then
    DatasetDict.push_to_hub for the rows (Parquet under data/, card metadata updated).
    The endpoint is HF_ENDPOINT's (default https://huggingface.co). The token is never
    printed or written into the card.

    \b
    Examples:
      soicurate push curated/hard alice/sst2-forgettable
      soicurate push curated/hard my-org/sst2-forgettable --private --token-env HF_WRITE_TOKEN
    """
    import json

    from soicurate.curation.hub import push_curated

    info = push_curated(curated_dir, repo_id, private=private, token_env=token_env, commit_message=commit_message,
                        progress=not quiet and not as_json)  # fmt: skip
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
    elif not quiet:
        rows = ", ".join(f"{k} {v}" for k, v in info["splits"].items())
        click.echo(f"pushed {curated_dir} ({rows} rows) to {info['url']}\ncommit {info['commit']}")
