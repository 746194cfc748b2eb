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
from collections.abc import Iterator
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
    context, batch_size:
        Tokens per model input (longer documents are split into consecutive windows); windows
        per forward pass (padded on the right, padding dropped).
    shard_rows, dtype:
        Rows per ``.npy`` shard (the last may be shorter); ``"float32"`` or ``"float16"`` on
        disk (computation is float32).
    normalisation:
        ``"mean_squared_norm"`` (default): multiply every row by one factor ``c`` so that the
        mean squared norm is ``d`` (``c`` estimated on the first ``norm_rows`` rows and recorded
        in the manifest; divide by it to get raw activations). ``"none"``: raw activations.
    drop_first:
        Drop position 0 of every window: BOS/CLS, or the first text token, which in causal
        models is an attention sink whose norm is ~10x the others.
    keep_special, seed:
        Keep special tokens (BOS, EOS, CLS, SEP...; dropped by default); the seed shuffling
        the document order (``None``: file order).

    Returns
    -------
    ExtractionResult
        The folder and the manifest written to ``manifest.json``.
    """
    tokens, context, batch_size, shard_rows, norm_rows = _check_sizes(
        tokens, context, batch_size, shard_rows, norm_rows, normalisation, dtype)
    folder = _check_folder(Path(out), overwrite)
    corpus = text if isinstance(text, TextCorpus) else load_corpus(text, seed=seed)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device=device)
    layer = check_layer(loaded, layer)
    _check_context(loaded, context)
    _clear_folder(folder)
    run = _Extraction(_ShardWriter(folder, shard_rows, DTYPES[dtype], []), tokens, shard_rows,
                      norm_rows, None if normalisation != "none" else 1.0)
    batches = _batches(_windows(corpus, loaded.tokenizer, context, drop_first, keep_special),
                       batch_size)
    seconds = run.run(loaded, layer, batches, progress)
    run.check_written()
    run.write_sources(folder, corpus)
    manifest = _manifest(run, loaded, layer, corpus, seconds, dict(
        tokens=tokens, shard_rows=shard_rows, dtype=dtype, normalisation=normalisation,
        norm_rows=norm_rows, context=context, batch_size=batch_size, drop_first=drop_first,
        keep_special=keep_special, seed=seed))
    return ExtractionResult(folder, _write_manifest(folder, manifest))


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` whole or not at all (it marks the folder complete); returns
    ``manifest``."""
    write_text(folder / "manifest.json", json.dumps(manifest, indent=1, default=str))
    return manifest


def _check_sizes(tokens: Any, context: Any, batch_size: Any, shard_rows: Any, norm_rows: Any,
                 normalisation: str, dtype: str) -> tuple[int, int, int, int, int]:
    """The sizes of an extraction, validated (bad input names the command-line option)."""
    sizes = (check_positive_int(tokens, "--tokens"), check_positive_int(context, "--context"),
             check_positive_int(batch_size, "--batch-size"),
             check_positive_int(shard_rows, "--shard-rows"),
             check_positive_int(norm_rows, "norm_rows"))
    if normalisation not in NORMALISATIONS:
        raise DictoptInputError(
            f"--normalise: expected one of {NORMALISATIONS}, got {normalisation!r}"
        )
    if dtype not in DTYPES:
        raise DictoptInputError(f"--dtype: expected one of {tuple(DTYPES)}, got {dtype!r}")
    return sizes


def _check_folder(folder: Path, overwrite: bool) -> Path:
    """``folder``; one that already holds activations is kept unless ``overwrite``."""
    if (folder / "manifest.json").exists() and not overwrite:
        raise DictoptInputError(
            f"--out: {folder} already holds activations (manifest.json); use --overwrite"
        )
    return folder


def _clear_folder(folder: Path) -> None:
    """Create ``folder`` and remove the shards of an earlier extraction."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("shard_*.npy"):
        old.unlink()


def _check_context(loaded: LoadedModel, context: int) -> None:
    """``context`` must fit the tokenizer's and the model's maximum length."""
    max_len = getattr(loaded.tokenizer, "model_max_length", None) or context
    max_pos = getattr(loaded.model.config, "max_position_embeddings", None) or context
    if context > min(max_len, max_pos):
        raise DictoptInputError(
            f"--context: {context} exceeds the model's maximum length {min(max_len, max_pos)}"
        )


def _batches(stream: Iterator[Window], batch_size: int) -> Iterator[list[Window]]:
    """Batches of windows from pools of ``8 × batch_size`` sorted by length (padding stays
    small)."""
    exhausted = False
    while not exhausted:
        pool: list[Window] = []
        for window in stream:
            pool.append(window)
            if len(pool) >= 8 * batch_size:
                break
        else:
            exhausted = True
        pool.sort(key=lambda w: len(w.ids))
        for lo in range(0, len(pool), batch_size):
            yield pool[lo : lo + batch_size]


class _Extraction:
    """The rows written so far, the rows waiting for a full shard, the normalisation factor
    (estimated on the first ``norm_rows`` rows) and where each row came from."""

    def __init__(self, writer: _ShardWriter, tokens: int, shard_rows: int, norm_rows: int,
                 factor: float | None) -> None:
        self.writer, self.tokens = writer, tokens
        self.shard_rows, self.norm_rows, self.factor = shard_rows, norm_rows, factor
        self.pending: list[np.ndarray] = []
        self.n_pending = self.written = self.docs_used = self.windows_used = 0
        self.raw_sq_sum = self.raw_norm_max = 0.0
        self.ids_rows: list[np.ndarray] = []
        self.doc_rows: list[np.ndarray] = []
        self.pos_rows: list[np.ndarray] = []

    def run(self, loaded: LoadedModel, layer: int, batches: Iterator[list[Window]],
            progress: bool) -> float:
        """Add batches until ``tokens`` rows are kept or the text runs out; flush the rest.
        Returns the seconds it took."""
        start = time.perf_counter()
        bar = tqdm(total=self.tokens, desc=f"layer {layer} of {loaded.info['name']}",
                   unit="tok", disable=not progress)
        try:
            while self.written < self.tokens and (batch := next(batches, None)) is not None:
                bar.update(self.add(loaded, layer, batch))
            self.flush(final=True)
        finally:
            bar.close()
        return time.perf_counter() - start

    def check_written(self) -> None:
        """Raise when no row was kept; warn when the text ran out early."""
        if self.written == 0:
            raise DictoptInputError("--text: no tokens were kept (is the text empty?)")
        if self.written < self.tokens:
            log.warning("the text ran out: wrote %d of the %d tokens asked for", self.written,
                        self.tokens)

    def write_sources(self, folder: Path, corpus: TextCorpus) -> None:
        """``tokens.npz`` (token id, document, position of every row) and ``documents.json``."""
        np.savez(folder / "tokens.npz", ids=np.concatenate(self.ids_rows),
                 doc=np.concatenate(self.doc_rows), pos=np.concatenate(self.pos_rows))
        (folder / "documents.json").write_text(
            json.dumps(corpus.titles[:self.docs_used], indent=0))

    def add(self, loaded: LoadedModel, layer: int, batch: list[Window]) -> int:
        """Run one batch of windows and keep its rows; returns how many were kept."""
        pad_id = loaded.tokenizer.pad_token_id
        pad_id = 0 if pad_id is None else int(pad_id)
        dev = next(loaded.model.parameters()).device
        width = max(len(w.ids) for w in batch)
        ids_BS = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask_BS = torch.zeros((len(batch), width), dtype=torch.long)
        keep_BS = torch.zeros((len(batch), width), dtype=torch.bool)
        for b, w in enumerate(batch):
            ids_BS[b, : len(w.ids)] = torch.tensor(w.ids)
            mask_BS[b, : len(w.ids)] = 1
            keep_BS[b, : len(w.ids)] = torch.tensor(w.keep)
        hidden = residual_stream(loaded, layer, ids_BS.to(dev), mask_BS.to(dev))
        need = self.tokens - self.written
        rows = hidden[keep_BS.to(dev)].float().cpu().numpy()[:need]
        if not np.isfinite(rows).all():
            raise RuntimeError(f"{loaded.info['name']} produced non-finite activations")
        # Where each kept row came from (same row-major order as the boolean index).
        b_idx, s_idx = keep_BS.nonzero(as_tuple=True)
        b_idx, s_idx = b_idx[:need].numpy(), s_idx[:need].numpy()
        self.ids_rows.append(ids_BS[b_idx, s_idx].numpy().astype(np.int32))
        self.doc_rows.append(np.array([batch[b].doc for b in b_idx], dtype=np.int32))
        self.pos_rows.append(np.array([batch[b].first_pos for b in b_idx], dtype=np.int32)
                             + s_idx.astype(np.int32))
        norms_sq = (rows.astype(np.float64) ** 2).sum(axis=1)
        self.raw_sq_sum += float(norms_sq.sum())
        if rows.shape[0]:
            self.raw_norm_max = max(self.raw_norm_max, float(np.sqrt(norms_sq.max())))
        self.docs_used = max(self.docs_used, max(w.doc for w in batch) + 1)
        self.windows_used += len(batch)
        self.pending.append(rows)
        self.n_pending += rows.shape[0]
        self.written += rows.shape[0]
        self.flush(final=False)
        return rows.shape[0]

    def flush(self, final: bool) -> None:
        """Write full shards (and, at the end, the rest), once the factor is known."""
        if self.factor is None:
            if self.n_pending < self.norm_rows and not final:
                return
            sample = np.concatenate(self.pending, axis=0)[:self.norm_rows].astype(np.float64)
            mean_sq = float((sample**2).sum(axis=1).mean())
            self.factor = math.sqrt(sample.shape[1] / mean_sq) if mean_sq > 0 else 1.0
        while self.n_pending >= self.shard_rows or (final and self.n_pending > 0):
            rows = np.concatenate(self.pending, axis=0)
            self.writer.write(rows[:self.shard_rows] * np.float32(self.factor))
            rest = rows[self.shard_rows:]
            self.pending = [rest] if rest.shape[0] else []
            self.n_pending = rest.shape[0]


def _manifest(run: _Extraction, loaded: LoadedModel, layer: int, corpus: TextCorpus,
              seconds: float, args: dict[str, Any]) -> dict[str, Any]:
    """The ``manifest.json`` of an extraction."""
    assert run.factor is not None
    written, factor = run.written, run.factor
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "shards": run.writer.names,
        "shard_rows": args["shard_rows"],
        "tokens": written,
        "tokens_requested": args["tokens"],
        "d": loaded.d_model,
        "dtype": args["dtype"],
        "model": loaded.info,
        "layer": layer,
        "hook": "residual stream after `layer` blocks (HF hidden_states[layer]; 0 = embeddings"
                "; the last layer is taken before the final norm)",
        "normalisation": {
            "method": args["normalisation"],
            "factor": factor,
            "estimated_on_rows": min(args["norm_rows"], written)
            if args["normalisation"] != "none" else 0,
            "meaning": "stored rows = factor × raw residual stream; divide by factor for raw "
                       "activations (λ fitted on stored rows is λ_raw × factor)",
            "raw_mean_squared_norm": run.raw_sq_sum / written,
            "raw_max_norm": run.raw_norm_max,
            "stored_mean_squared_norm": run.raw_sq_sum / written * factor**2,
        },
        "text": {"source": corpus.name, "path": corpus.path, "documents_used": run.docs_used,
                 **corpus.info},
        "tokenisation": {"context": args["context"], "batch_size": args["batch_size"],
                         "drop_first": args["drop_first"], "keep_special": args["keep_special"],
                         "padding": "dropped", "windows": run.windows_used},
        "token_ids": "tokens.npz",
        "seed": args["seed"],
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
    return manifest


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The ``manifest.json`` of an activation folder written by :func:`extract_activations`."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise DictoptInputError(f"{folder}: no manifest.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DictoptInputError(f"{path}: unreadable manifest ({err})") from err
