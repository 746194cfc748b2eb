"""The first-letter task of Chanin et al. ("A is for Absorption", arXiv 2409.14507) on a real model.

Words are single tokens of the model's vocabulary: a leading space then ASCII letters only
(``" cat"``, ``" Paris"``); the label is the first letter, case folded (26 classes). Each word is
read in an in-context prompt in the paper's style (SAEBench's template ``"{word} has the first
letter:"``, answer ``" C"``, one example per line)::

     dog has the first letter: D
     apple has the first letter: A
     cat

The activation is the residual stream at the word's token. The model is causal, so that
activation depends only on the examples before the word and the word itself; nothing after the
word (its own template and answer) is needed. One model input therefore holds several queries in
a row: ``warmup`` context-only examples, then ``per_sequence`` recorded words, each followed by
its template and answer, so every recorded word sees between ``warmup`` and
``warmup + per_sequence - 1`` complete examples before it (SAEBench uses up to 10). All inputs
have the same length, so batches need no padding. The prompts are built from token ids (the
template tokenised once), which for SmolLM2's tokenizer equals tokenising the whole string.
"""

from __future__ import annotations

import logging
import random
import string
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dictopt.data.lm.extract import check_layer, residual_stream
from dictopt.data.lm.models import LoadedModel
from dictopt.validation import DictoptInputError, check_positive_int

log = logging.getLogger(__name__)

LETTERS = tuple(string.ascii_lowercase)
TEMPLATE = " has the first letter:"
SEPARATOR = "\n"


@dataclass(frozen=True)
class Vocabulary:
    """Single-token words with their first letter."""

    ids: np.ndarray
    """``[W]`` token ids."""
    words: list[str]
    """``W`` decoded tokens (with their leading space)."""
    letters: np.ndarray
    """``[W]`` first letter as an index into :data:`LETTERS`."""


def first_letter_vocabulary(tokenizer: Any, *, min_letters: int = 2) -> Vocabulary:
    """Every token that decodes to a space followed by at least ``min_letters`` ASCII letters.

    Parameters
    ----------
    tokenizer:
        A Hugging Face tokenizer (anything with ``__len__`` and ``decode``).
    min_letters:
        Shortest word kept (2 drops the single letters, whose label is the word itself).

    Returns
    -------
    Vocabulary
        Words in token-id order.
    """
    min_letters = check_positive_int(min_letters, "min_letters")
    ids, words = [], []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        body = text[1:]
        if text.startswith(" ") and len(body) >= min_letters and body.isascii() and body.isalpha():
            ids.append(i)
            words.append(text)
    if not ids:
        raise DictoptInputError("the tokenizer has no single-token words (space + letters)")
    letters = np.array([LETTERS.index(w[1].lower()) for w in words], dtype=np.int64)
    return Vocabulary(np.array(ids, dtype=np.int64), words, letters)


def sample_words(vocab: Vocabulary, n: int, *, seed: int = 0) -> np.ndarray:
    """``n`` distinct word indices into ``vocab`` drawn uniformly (all of them if fewer)."""
    n = check_positive_int(n, "words")
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(len(vocab.words))[: min(n, len(vocab.words))])


@dataclass
class PromptBatch:
    """Model inputs holding the recorded words, and where each recorded word sits."""

    input_ids: torch.Tensor
    """``[S, T]`` token ids (every row the same length)."""
    word_rows: np.ndarray
    """``[n]`` index into the words passed to :func:`build_prompts` of each recorded query."""
    seq: np.ndarray
    """``[n]`` input row of each recorded query."""
    pos: np.ndarray
    """``[n]`` position of the word's token in that row."""
    info: dict[str, Any] = field(default_factory=dict)


def build_prompts(
    tokenizer: Any,
    vocab: Vocabulary,
    words: np.ndarray,
    *,
    per_sequence: int = 12,
    warmup: int = 2,
    template: str = TEMPLATE,
    seed: int = 0,
) -> PromptBatch:
    """In-context prompts in which each of ``words`` (indices into ``vocab``) is read once.

    Parameters
    ----------
    tokenizer:
        The model's tokenizer (templates and answers are tokenised with it).
    vocab, words:
        The vocabulary and the indices of the words to record, in any order.
    per_sequence:
        Recorded words per model input.
    warmup:
        Context-only examples at the start of every input (drawn from the whole vocabulary),
        so that even the first recorded word has ``warmup`` examples before it.
    template:
        Text between a word and its answer letter.
    seed:
        Shuffles the words into inputs and draws the warm-up examples.

    Returns
    -------
    PromptBatch
        Inputs of length ``(warmup + per_sequence) * (len(template ids) + 3)``; the last input
        is completed with extra context-only examples.
    """
    per_sequence = check_positive_int(per_sequence, "per_sequence")
    if warmup < 0:
        raise DictoptInputError(f"warmup: must be >= 0, got {warmup}")
    tmpl = list(tokenizer(template, add_special_tokens=False)["input_ids"])
    sep = list(tokenizer(SEPARATOR, add_special_tokens=False)["input_ids"])
    answer = {}
    for li, letter in enumerate(LETTERS):
        ans = tokenizer(" " + letter.upper(), add_special_tokens=False)["input_ids"]
        if len(ans) != 1:
            raise DictoptInputError(f"the answer ' {letter.upper()}' is not one token")
        answer[li] = int(ans[0])
    rng = random.Random(seed)
    order = list(range(len(words)))
    rng.shuffle(order)

    def example(w: int) -> list[int]:
        return [int(vocab.ids[w])] + tmpl + [answer[int(vocab.letters[w])]] + sep

    rows, word_rows, seq, pos = [], [], [], []
    for s, lo in enumerate(range(0, len(order), per_sequence)):
        chunk = order[lo : lo + per_sequence]
        ids: list[int] = []
        slots = warmup + per_sequence
        fill = [rng.randrange(len(vocab.words)) for _ in range(slots)]
        for slot in range(slots):
            rec = slot - warmup
            if 0 <= rec < len(chunk):
                word_rows.append(chunk[rec])
                seq.append(s)
                pos.append(len(ids))
                ids += example(int(words[chunk[rec]]))
            else:
                ids += example(fill[slot])
        rows.append(ids)
    input_ids = torch.tensor(rows, dtype=torch.long)
    info = {"template": template, "per_sequence": per_sequence, "warmup": warmup, "seed": seed,
            "tokens_per_example": len(tmpl) + 3, "inputs": len(rows),
            "tokens": int(input_ids.numel())}
    return PromptBatch(input_ids, np.array(word_rows), np.array(seq), np.array(pos), info)


def word_activations(
    loaded: LoadedModel,
    layer: int,
    prompts: PromptBatch,
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> np.ndarray:
    """Residual stream after ``layer`` blocks at every recorded word, ``[n_words, d]`` float32.

    Row ``r`` belongs to word ``r`` of the ``words`` given to :func:`build_prompts` (the
    prompt order is undone).
    """
    layer = check_layer(loaded, layer)
    batch_size = check_positive_int(batch_size, "batch_size")
    dev = next(loaded.model.parameters()).device
    S = prompts.input_ids.shape[0]
    out_ND = np.zeros((len(prompts.word_rows), loaded.info["d_model"]), dtype=np.float32)
    for lo in tqdm(range(0, S, batch_size), desc=f"prompts, layer {layer}", disable=not progress):
        ids = prompts.input_ids[lo : lo + batch_size].to(dev)
        hidden = residual_stream(loaded, layer, ids, torch.ones_like(ids))
        sel = (prompts.seq >= lo) & (prompts.seq < lo + ids.shape[0])
        rows = hidden[prompts.seq[sel] - lo, prompts.pos[sel]].float().cpu().numpy()
        if not np.isfinite(rows).all():
            raise RuntimeError("the model produced non-finite activations")
        out_ND[prompts.word_rows[sel]] = rows
    return out_ND
