"""A tiny text classifier for tests: no download, about a second to build, seconds to train.

    from tiny_model import tiny_setup
    tiny = tiny_setup(n=96)              # model, tokenizer, tokenized dataset, label names
    tiny.dataset.column_names            # example_id, text, label, source, input_ids, attention_mask

The task: a sentence of a few words is positive when it holds more positive than negative
words; ties get a random label and a share of labels is flipped, so some examples are easy,
some ambiguous and some never learned (all Subsets of Interest can occur). Example ids are
deliberately not row numbers (1000, 1003, 1006, ...) so that code mixing ids and positions is
caught.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LABEL_NAMES = ["negative", "positive"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["good", "great", "fine", "nice", "happy", "superb"]
NEGATIVE = ["bad", "awful", "poor", "sad", "ugly", "dull"]
NEUTRAL = ["the", "a", "movie", "plot", "cast", "it", "was", "and", "story", "very"]
VOCAB = SPECIAL_TOKENS + POSITIVE + NEGATIVE + NEUTRAL
SOURCES = ["reviews", "forums"]


def make_tokenizer():
    """A word-level fast tokenizer over VOCAB ([CLS] text [SEP]), built in memory."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=32,
    )


def make_texts(n: int, seed: int = 0, flip_rate: float = 0.1):
    """n sentences, their labels (0/1) and sources, reproducibly from `seed`."""
    rng = np.random.default_rng(seed)
    texts, labels, sources = [], [], []
    for _ in range(n):
        n_pos, n_neg = rng.integers(0, 3), rng.integers(0, 3)
        words = list(rng.choice(POSITIVE, n_pos)) + list(rng.choice(NEGATIVE, n_neg))
        words += list(rng.choice(NEUTRAL, rng.integers(2, 6)))
        rng.shuffle(words)
        label = int(n_pos > n_neg) if n_pos != n_neg else int(rng.integers(0, 2))
        if rng.random() < flip_rate:
            label = 1 - label
        texts.append(" ".join(words))
        labels.append(label)
        sources.append(SOURCES[int(rng.integers(0, len(SOURCES)))])
    return texts, labels, sources


def example_ids(n: int, offset: int = 1000, stride: int = 3) -> list[int]:
    return [offset + stride * i for i in range(n)]


def make_dataset(tokenizer, n: int = 96, seed: int = 0, *, tokenized: bool = True):
    """A datasets.Dataset: example_id, text, label (ClassLabel), source, and input_ids/attention_mask."""
    import datasets

    texts, labels, sources = make_texts(n, seed)
    features = datasets.Features(
        {
            "example_id": datasets.Value("int64"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=LABEL_NAMES),
            "source": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"example_id": example_ids(n), "text": texts, "label": labels, "source": sources}, features=features
    )
    if tokenized:
        ds = ds.map(lambda b: tokenizer(b["text"], truncation=True), batched=True)
    return ds


def make_model(vocab_size: int = len(VOCAB), seed: int = 0, num_labels: int = 2):
    """A 2-layer BERT classifier with hidden size 32 (a few thousand parameters), seeded."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        num_labels=num_labels,
        id2label=dict(enumerate(LABEL_NAMES[:num_labels])) if num_labels == 2 else None,
        label2id={name: i for i, name in enumerate(LABEL_NAMES[:num_labels])} if num_labels == 2 else None,
        pad_token_id=0,
        hidden_dropout_prob=0.0,  # no dropout: learns in a few dozen steps, and is deterministic
        attention_probs_dropout_prob=0.0,
        classifier_dropout=0.0,
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


def training_args(output_dir, **overrides):
    """TrainingArguments that make the tiny model learn in 3 short CPU epochs, quietly.

    (~80% training accuracy after 3 epochs of 96 examples; label noise keeps some unlearned.)
    """
    from transformers import TrainingArguments

    kwargs = dict(
        output_dir=str(output_dir),
        num_train_epochs=3,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=32,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        seed=0,
        use_cpu=True,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


@dataclass
class Tiny:
    model: object
    tokenizer: object
    dataset: object
    label_names: list[str]


def tiny_setup(n: int = 96, seed: int = 0, model_seed: int = 0) -> Tiny:
    """A fresh model, the tokenizer and a tokenized n-example dataset."""
    tokenizer = make_tokenizer()
    return Tiny(make_model(seed=model_seed), tokenizer, make_dataset(tokenizer, n, seed), list(LABEL_NAMES))


def predict(model, tokenizer, dataset, batch_size: int = 32):
    """(example_id, p_gold, pred) of `model` on `dataset` (eval mode, float32), in dataset order."""
    import torch

    model.eval()
    ids, p_gold, pred = [], [], []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            rows = dataset[start : start + batch_size]
            enc = tokenizer(rows["text"], truncation=True, padding=True, return_tensors="pt")
            logits = model(**enc).logits.float()
            probs = torch.softmax(logits, dim=-1)
            gold = torch.tensor(rows["label"])
            ids.extend(rows["example_id"])
            p_gold.append(probs.gather(1, gold[:, None]).squeeze(1).numpy())
            pred.append(logits.argmax(-1).numpy())
    return np.asarray(ids, np.int64), np.concatenate(p_gold), np.concatenate(pred)


def save_assets(root, splits=(("train", 80, 0), ("test", 40, 1), ("ood", 30, 2))):
    """A tiny model + tokenizer directory and CSV files (sentence, label names, source) on disk,
    for tests that drive `soicurate train` the way a user would. Returns the model directory."""
    from pathlib import Path

    import polars as pl

    root = Path(root)
    model_dir = root / "tiny-bert"
    make_model().save_pretrained(model_dir)
    make_tokenizer().save_pretrained(model_dir)
    for name, n, seed in splits:
        texts, labels, sources = make_texts(n, seed)
        names = ["neg" if y == 0 else "pos" for y in labels]
        pl.DataFrame({"sentence": texts, "label": names, "source": sources}).write_csv(root / f"{name}.csv")
    return model_dir
