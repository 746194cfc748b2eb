"""Extract residual-stream activations of a language model into ``.npy`` shards + manifest.

Layer convention (the ``hidden_states`` convention of Hugging Face): layer ``L`` is the
residual stream *after* ``L`` transformer blocks, ``0`` being the embeddings. It is captured
by a hook on the input of block ``L`` (the output of the last block when ``L`` is the number of
blocks, taken *before* any final norm) and the forward pass stops there, so later blocks and the
LM head never run.

The output folder holds ``shard_00000.npy`` ... (``[rows, d]``, fixed row count except the
last), ``manifest.json`` (whose ``shards`` list :class:`~dictopt.data.sources.ShardFolderSource`
reads), ``tokens.npz`` (token id, document and position of every row) and ``documents.json``
(the titles of the documents read, in order).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from dictopt import __version__
from dictopt.atomic import write_text
from dictopt.data.lm.models import LoadedModel, load_model
from dictopt.data.lm.texts import TextCorpus, load_corpus
from dictopt.validation import DictoptInputError, check_positive_int

log = logging.getLogger(__name__)

NORMALISATIONS = ("mean_squared_norm", "none")
DTYPES = {"float32": np.float32, "float16": np.float16}
MANIFEST_FORMAT = "dictopt-activations/1"


class _StopForwardError(Exception):
    """Raised by the capture hook: the forward pass is not needed past layer L."""


def _block_list(model: torch.nn.Module, n_layers: int) -> torch.nn.ModuleList:
    """The model's list of transformer blocks (``layers``, ``encoder.layer``, ``h``...)."""
    for path in ("layers", "model.layers", "encoder.layer", "h", "transformer.h",
                 "decoder.layers", "gpt_neox.layers"):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.nn.ModuleList) and len(obj) == n_layers:
            return obj
    for module in model.modules():  # fall back: the first module list of the right length
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            return module
    raise DictoptInputError(
        f"{type(model).__name__}: cannot find its list of {n_layers} transformer blocks"
    )


def check_layer(loaded: LoadedModel, layer: Any) -> int:
    """``layer`` must be an integer in ``0 .. n_layers``."""
    n = loaded.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int | np.integer) or not 0 <= layer <= n:
        raise DictoptInputError(
            f"--layer: {layer!r} is out of range for {loaded.info['name']} "
            f"(0 = embeddings ... {n} = after the last block)"
        )
    return int(layer)


def residual_stream(
    loaded: LoadedModel, layer: int, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Residual stream ``[batch, seq, d]`` after ``layer`` blocks (0: embeddings).

    Equals ``hidden_states[layer]`` of ``output_hidden_states=True`` for every layer below the
    number of blocks; for the last layer it is the stream before the final norm.
    """
    n = loaded.n_layers
    check_layer(loaded, layer)
    blocks = _block_list(loaded.model, n)
    captured: list[torch.Tensor] = []

    def pre_hook(module: Any, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        captured.append(hidden)
        raise _StopForwardError

    def post_hook(module: Any, args: tuple, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _StopForwardError

    if layer < n:
        handle = blocks[layer].register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:
        handle = blocks[n - 1].register_forward_hook(post_hook)
    try:
        with torch.no_grad():
            loaded.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForwardError:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("the capture hook never ran")  # a bug, not bad input
    return captured[0]


class Window(NamedTuple):
    """One model input: token ids (special tokens included) and where it came from."""

    ids: list[int]
    keep: list[bool]
    doc: int
    first_pos: int


def _special_wrap(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text (e.g. [CLS] ... [SEP])."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return list(full[:i]), list(full[i + len(plain) :])
    return [], []


def _windows(
    corpus: TextCorpus, tokenizer: Any, context: int, drop_first: bool, keep_special: bool
) -> Any:
    """Yield windows of at most ``context`` tokens, document by document."""
    prefix, suffix = _special_wrap(tokenizer)
    special = set(int(i) for i in getattr(tokenizer, "all_special_ids", []))
    special.discard(getattr(tokenizer, "unk_token_id", None))  # an unknown word is still text
    body = context - len(prefix) - len(suffix)
    if body < 1 + int(drop_first):
        raise DictoptInputError(f"--context: {context} is too short for this tokenizer")
    for doc, text in enumerate(corpus.texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for lo in range(0, len(ids), body):
            window = prefix + list(ids[lo : lo + body]) + suffix
            keep = [keep_special or int(t) not in special for t in window]
            if drop_first:
                keep[0] = False  # position 0 is an attention sink (norm ~10x in SmolLM2)
            yield Window(window, keep, doc, lo - len(prefix))


@dataclass
class _ShardWriter:
    folder: Path
    shard_rows: int
    dtype: Any
    names: list[str]

    def write(self, rows: np.ndarray) -> None:
        name = f"shard_{len(self.names):05d}.npy"
        np.save(self.folder / name, rows.astype(self.dtype, copy=False))
        self.names.append(name)


class ExtractionResult(NamedTuple):
    """What :func:`extract_activations` wrote."""

    folder: Path
    manifest: dict[str, Any]


def extract_activations(
    model: str | LoadedModel,
    layer: int,
    text: str | Path | TextCorpus,
    tokens: int,
    out: str | Path,
    *,
    context: int = 128,
    batch_size: int = 16,
    shard_rows: int = 16384,
    normalisation: str = "mean_squared_norm",
    norm_rows: int = 8192,
    dtype: str = "float32",
    drop_first: bool = True,
    keep_special: bool = False,
    seed: int | None = 0,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> ExtractionResult:
    """Run ``model`` on ``text`` and write ``tokens`` rows of its layer-``layer`` residual stream.

    Parameters
    ----------
    model:
        ``"smollm2"``, ``"minilm"``, a Hugging Face folder, a ``.gguf`` file or a
        :class:`LoadedModel`.
    layer:
        Residual stream after this many blocks (0: embeddings; ``hidden_states[layer]``).
    text:
        ``"wiki"`` (packaged Wikipedia summaries), a ``.txt`` (paragraphs) / ``.jsonl`` file,
        or a :class:`TextCorpus`.
    tokens:
        Rows to write (kept tokens, after dropping padding, special tokens and first positions).
        Fewer are written, with a warning, if the text runs out.
    out:
        Output folder (created; must not already hold a manifest unless ``overwrite``).
    context:
        Tokens per model input; longer documents are split into consecutive windows.
    batch_size:
        Windows per forward pass (padded on the right, padding dropped).
    shard_rows:
        Rows per ``.npy`` shard (the last may be shorter).
    normalisation:
        ``"mean_squared_norm"`` (default): multiply every row by one factor ``c`` so that the
        mean squared norm is ``d`` (``c`` estimated on the first ``norm_rows`` rows and recorded
        in the manifest; divide by it to get raw activations). ``"none"``: raw activations.
    dtype:
        ``"float32"`` or ``"float16"`` on disk (computation is float32).
    drop_first:
        Drop position 0 of every window: BOS/CLS, or the first text token, which in causal
        models is an attention sink whose norm is ~10x the others.
    keep_special:
        Keep special tokens (BOS, EOS, CLS, SEP...); dropped by default.
    seed:
        Shuffles the document order (``None``: file order).

    Returns
    -------
    ExtractionResult
        The folder and the manifest written to ``manifest.json``.
    """
    tokens = check_positive_int(tokens, "--tokens")
    context = check_positive_int(context, "--context")
    batch_size = check_positive_int(batch_size, "--batch-size")
    shard_rows = check_positive_int(shard_rows, "--shard-rows")
    norm_rows = check_positive_int(norm_rows, "norm_rows")
    if normalisation not in NORMALISATIONS:
        raise DictoptInputError(
            f"--normalise: expected one of {NORMALISATIONS}, got {normalisation!r}"
        )
    if dtype not in DTYPES:
        raise DictoptInputError(f"--dtype: expected one of {tuple(DTYPES)}, got {dtype!r}")
    folder = Path(out)
    if (folder / "manifest.json").exists() and not overwrite:
        raise DictoptInputError(
            f"--out: {folder} already holds activations (manifest.json); use --overwrite"
        )
    corpus = text if isinstance(text, TextCorpus) else load_corpus(text, seed=seed)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device=device)
    layer = check_layer(loaded, layer)
    max_len = getattr(loaded.tokenizer, "model_max_length", None) or context
    max_pos = getattr(loaded.model.config, "max_position_embeddings", None) or context
    if context > min(max_len, max_pos):
        raise DictoptInputError(
            f"--context: {context} exceeds the model's maximum length {min(max_len, max_pos)}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("shard_*.npy"):
        old.unlink()
    writer = _ShardWriter(folder, shard_rows, DTYPES[dtype], [])
    pad_id = loaded.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else int(pad_id)
    dev = next(loaded.model.parameters()).device

    pending: list[np.ndarray] = []
    n_pending = 0
    factor: float | None = 1.0 if normalisation == "none" else None
    raw_sq_sum = 0.0
    raw_norm_max = 0.0
    ids_rows: list[np.ndarray] = []
    doc_rows: list[np.ndarray] = []
    pos_rows: list[np.ndarray] = []
    written = 0
    docs_used = 0
    windows_used = 0

    def flush(final: bool) -> None:
        nonlocal pending, n_pending, factor
        if factor is None:
            if n_pending < norm_rows and not final:
                return
            sample = np.concatenate(pending, axis=0)[:norm_rows].astype(np.float64)
            mean_sq = float((sample**2).sum(axis=1).mean())
            factor = math.sqrt(sample.shape[1] / mean_sq) if mean_sq > 0 else 1.0
        while n_pending >= shard_rows or (final and n_pending > 0):
            rows = np.concatenate(pending, axis=0)
            take = rows[:shard_rows]
            writer.write(take * np.float32(factor))
            rest = rows[shard_rows:]
            pending = [rest] if rest.shape[0] else []
            n_pending = rest.shape[0]

    start = time.perf_counter()
    bar = tqdm(total=tokens, desc=f"layer {layer} of {loaded.info['name']}", unit="tok",
               disable=not progress)
    stream = _windows(corpus, loaded.tokenizer, context, drop_first, keep_special)
    exhausted = False
    try:
        while written < tokens and not exhausted:
            # A pool of batches, sorted by length so that padding stays small.
            pool: list[Window] = []
            for window in stream:
                pool.append(window)
                if len(pool) >= 8 * batch_size:
                    break
            else:
                exhausted = True
            pool.sort(key=lambda w: len(w.ids))
            for lo in range(0, len(pool), batch_size):
                if written >= tokens:
                    break
                batch = pool[lo : lo + batch_size]
                width = max(len(w.ids) for w in batch)
                ids_BS = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask_BS = torch.zeros((len(batch), width), dtype=torch.long)
                keep_BS = torch.zeros((len(batch), width), dtype=torch.bool)
                for b, w in enumerate(batch):
                    ids_BS[b, : len(w.ids)] = torch.tensor(w.ids)
                    mask_BS[b, : len(w.ids)] = 1
                    keep_BS[b, : len(w.ids)] = torch.tensor(w.keep)
                hidden = residual_stream(loaded, layer, ids_BS.to(dev), mask_BS.to(dev))
                rows = hidden[keep_BS.to(dev)].float().cpu().numpy()
                need = tokens - written
                rows = rows[:need]
                if not np.isfinite(rows).all():
                    raise RuntimeError(f"{loaded.info['name']} produced non-finite activations")
                # Where each kept row came from (same row-major order as the boolean index).
                b_idx, s_idx = keep_BS.nonzero(as_tuple=True)
                b_idx, s_idx = b_idx[:need].numpy(), s_idx[:need].numpy()
                ids_rows.append(ids_BS[b_idx, s_idx].numpy().astype(np.int32))
                doc_rows.append(np.array([batch[b].doc for b in b_idx], dtype=np.int32))
                pos_rows.append(np.array([batch[b].first_pos for b in b_idx], dtype=np.int32)
                                + s_idx.astype(np.int32))
                norms_sq = (rows.astype(np.float64) ** 2).sum(axis=1)
                raw_sq_sum += float(norms_sq.sum())
                if rows.shape[0]:
                    raw_norm_max = max(raw_norm_max, float(np.sqrt(norms_sq.max())))
                docs_used = max(docs_used, max(w.doc for w in batch) + 1)
                windows_used += len(batch)
                pending.append(rows)
                n_pending += rows.shape[0]
                written += rows.shape[0]
                bar.update(rows.shape[0])
                flush(final=False)
        flush(final=True)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if written == 0:
        raise DictoptInputError("--text: no tokens were kept (is the text empty?)")
    if written < tokens:
        log.warning("the text ran out: wrote %d of the %d tokens asked for", written, tokens)
    np.savez(folder / "tokens.npz", ids=np.concatenate(ids_rows), doc=np.concatenate(doc_rows),
             pos=np.concatenate(pos_rows))
    (folder / "documents.json").write_text(json.dumps(corpus.titles[:docs_used], indent=0))
    assert factor is not None
    d = loaded.d_model
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "shards": writer.names,
        "shard_rows": shard_rows,
        "tokens": written,
        "tokens_requested": tokens,
        "d": d,
        "dtype": dtype,
        "model": loaded.info,
        "layer": layer,
        "hook": "residual stream after `layer` blocks (HF hidden_states[layer]; 0 = embeddings"
                "; the last layer is taken before the final norm)",
        "normalisation": {
            "method": normalisation,
            "factor": factor,
            "estimated_on_rows": min(norm_rows, written) if normalisation != "none" else 0,
            "meaning": "stored rows = factor × raw residual stream; divide by factor for raw "
                       "activations (λ fitted on stored rows is λ_raw × factor)",
            "raw_mean_squared_norm": raw_sq_sum / written,
            "raw_max_norm": raw_norm_max,
            "stored_mean_squared_norm": raw_sq_sum / written * factor**2,
        },
        "text": {"source": corpus.name, "path": corpus.path, "documents_used": docs_used,
                 **corpus.info},
        "tokenisation": {"context": context, "batch_size": batch_size, "drop_first": drop_first,
                         "keep_special": keep_special, "padding": "dropped",
                         "windows": windows_used},
        "token_ids": "tokens.npz",
        "seed": seed,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(written / seconds, 1) if seconds > 0 else None,
        "dictopt_version": __version__,
        "torch_version": torch.__version__,
    }
    try:
        import transformers

        manifest["transformers_version"] = transformers.__version__
    except ImportError:  # a LoadedModel built without transformers (tests)
        pass
    write_text(folder / "manifest.json", json.dumps(manifest, indent=1, default=str))
    return ExtractionResult(folder, manifest)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The ``manifest.json`` of an activation folder written by :func:`extract_activations`."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise DictoptInputError(f"{folder}: no manifest.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DictoptInputError(f"{path}: unreadable manifest ({err})") from err
