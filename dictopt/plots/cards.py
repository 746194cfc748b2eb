"""Feature cards: what a latent fires on, in the convention of SAE dashboards.

For each latent in a reported finding, a card shows its firing density, the histogram of its
nonzero activations and its top-activating contexts: a window of text around the row where it
peaks, the peak token highlighted with its activation. Cards need the token of every row:
``tokens.npz`` beside the shards (written by ``dictopt activations``, decoded with the model's
tokenizer named in ``manifest.json``), or token strings passed in Python (:class:`RowTokens`).

Rows are tokens; the context of a row is the rows before and after it in the same document
(``doc``) at consecutive positions (``pos``), as ``dictopt activations`` writes them.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from dictopt.plots.figure import new_figure, set_margins, to_base64
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError

log = logging.getLogger(__name__)

#: Contexts per card, tokens shown before and after the peak.
TOP_CONTEXTS = 8
BEFORE, AFTER = 12, 4


class RowTokens(NamedTuple):
    """The token of every row of the activations (and where it sits in its document)."""

    text: list[str]
    """``[N]`` the token of each row, as text."""
    doc: np.ndarray | None = None
    """``[N]`` document index of each row (None: one document)."""
    pos: np.ndarray | None = None
    """``[N]`` position in the document (None: the row order)."""

    @classmethod
    def from_strings(cls, tokens: Sequence[str], doc: Any = None, pos: Any = None) -> RowTokens:
        """Token strings per row (e.g. ``tokenizer.convert_ids_to_tokens``) and, optionally,
        document and position arrays."""
        return cls(list(map(str, tokens)), None if doc is None else np.asarray(doc),
                   None if pos is None else np.asarray(pos))

    @classmethod
    def from_ids(cls, ids: Any, tokenizer: Any, doc: Any = None, pos: Any = None) -> RowTokens:
        """Token ids per row, decoded one by one with a Hugging Face ``tokenizer``."""
        ids = np.asarray(ids).astype(np.int64)
        uniq = np.unique(ids)
        texts = tokenizer.batch_decode([[int(i)] for i in uniq])
        lookup = dict(zip(uniq.tolist(), texts, strict=True))
        return cls([lookup[int(i)] for i in ids], None if doc is None else np.asarray(doc),
                   None if pos is None else np.asarray(pos))


def load_row_tokens(folder: str | Path) -> RowTokens | None:
    """The tokens of a ``dictopt activations`` folder (``tokens.npz`` + the tokenizer named in
    ``manifest.json``); None when the folder has no ``tokens.npz`` or the tokenizer cannot be
    loaded (logged)."""
    folder = Path(folder)
    path = folder / "tokens.npz"
    if not path.is_file():
        return None
    data = np.load(path)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        from dictopt.data.lm.models import require_transformers, resolve_model

        transformers = require_transformers()
        model_dir, _ = resolve_model(manifest["model"]["name"])
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as err:  # noqa: BLE001 - any failure means: no cards, say why
        log.warning("feature cards skipped: %s has tokens.npz but its tokenizer could not be "
                    "loaded (%s)", folder, err)
        return None
    return RowTokens.from_ids(data["ids"], tokenizer, data["doc"], data["pos"])


class FeatureCard(NamedTuple):
    """What one latent fires on."""

    k: int
    n: int
    """Rows streamed."""
    active: int
    """Rows where the latent is active (> 0)."""
    contexts: list[tuple[float, list[str], int]]
    """``(activation, tokens of the window, index of the peak token in it)``, best first."""
    histogram: Any
    """A matplotlib figure: histogram of the nonzero activations."""
    why: str
    """Which finding the latent is in."""


def feature_cards(
    dictionary: Dictionary,
    source: Any,
    tokens: RowTokens,
    latents: dict[int, str],
    *,
    codes: str = "own",
    top: int = TOP_CONTEXTS,
) -> list[FeatureCard]:
    """Stream ``source`` once and build a card for each latent of ``latents``.

    Parameters
    ----------
    dictionary:
        The checked dictionary.
    source:
        The activations checked (rows aligned with ``tokens``).
    tokens:
        The token of every row.
    latents:
        ``{latent: why it is shown}``.
    codes:
        ``"own"`` (the dictionary's encoder) or ``"optimal"``.

    Returns
    -------
    list[FeatureCard]
        In the order of ``latents``.
    """
    from dictopt.data.sources import as_source

    if not latents:
        return []
    src = as_source(source, dtype=dictionary.dtype)
    idx = torch.tensor(list(latents), dtype=torch.long)
    best_v = torch.full((len(idx), top), -1.0, dtype=torch.float64)
    best_r = torch.full((len(idx), top), -1, dtype=torch.long)
    values: list[list[np.ndarray]] = [[] for _ in latents]
    active = torch.zeros(len(idx), dtype=torch.long)
    n = 0
    for chunk in src.iter_chunks(desc="feature cards"):
        x = chunk.data.to(dictionary.device)
        a = dictionary.encode(x) if codes == "own" and dictionary.encoder is not None \
            else dictionary.optimal_codes(x)
        A = a[:, idx].to(device="cpu", dtype=torch.float64)
        on = A > 0
        active += on.sum(0)
        for c in range(len(idx)):
            values[c].append(A[on[:, c], c].numpy())
        rows = torch.arange(chunk.start, chunk.start + A.shape[0])
        cat_v = torch.cat([best_v, A.T], dim=1)
        cat_r = torch.cat([best_r, rows.expand(len(idx), -1)], dim=1)
        keep = cat_v.topk(min(top, cat_v.shape[1]), dim=1).indices
        best_v, best_r = cat_v.gather(1, keep), cat_r.gather(1, keep)
        n += A.shape[0]
    if n != len(tokens.text):
        raise DictoptInputError(
            f"tokens: {len(tokens.text)} token rows but the activations have {n} rows; "
            "pass the tokens of exactly the rows checked"
        )
    cards = []
    for c, (k, why) in enumerate(latents.items()):
        ctxs = []
        for v, r in zip(best_v[c].tolist(), best_r[c].tolist(), strict=True):
            if r < 0 or v <= 0:
                continue
            window, peak = _window(tokens, r)
            ctxs.append((v, window, peak))
        vals = np.concatenate(values[c]) if values[c] else np.zeros(0)
        cards.append(FeatureCard(k, n, int(active[c]), ctxs, _histogram(vals, k), why))
    return cards


def _window(tokens: RowTokens, r: int) -> tuple[list[str], int]:
    """The tokens around row ``r`` in its document (consecutive positions) and the peak's
    index in that window."""
    n = len(tokens.text)
    lo, hi = r, r
    while lo > 0 and r - lo < BEFORE and _next_to(tokens, lo - 1, lo):
        lo -= 1
    while hi < n - 1 and hi - r < AFTER and _next_to(tokens, hi, hi + 1):
        hi += 1
    return tokens.text[lo:hi + 1], r - lo


def _next_to(tokens: RowTokens, a: int, b: int) -> bool:
    if tokens.doc is not None and tokens.doc[a] != tokens.doc[b]:
        return False
    return tokens.pos is None or int(tokens.pos[b]) - int(tokens.pos[a]) == 1


def _histogram(vals: np.ndarray, k: int) -> Any:
    fig = new_figure(4.2, 1.6)
    ax = fig.add_subplot(1, 1, 1)
    set_margins(fig, left=0.55, right=0.15, bottom=0.4, top=0.1)  # labels at 6–7 pt
    if len(vals):
        ax.hist(vals, bins=40, color="tab:orange", gid="activations")
    ax.set_xlabel(f"activation of latent {k} (nonzero only)", fontsize=7)
    ax.set_ylabel("rows", fontsize=7)
    ax.tick_params(labelsize=6)
    return fig


def render_cards(cards: list[FeatureCard]) -> list[str]:
    """HTML for the feature cards section."""
    e = html.escape
    out = ["<h2 id='feature-cards'>Feature cards</h2>",
           "<p>The latents of the findings above: how often each fires, how strongly, and the "
           "contexts where it fires most (the highlighted token is where it peaks, with its "
           "activation).</p><div class='cards'>"]
    for c in cards:
        dens = c.active / c.n if c.n else 0.0
        out.append(f"<div class='card' id='card_{c.k}'><h3>latent {c.k}</h3>"
                   f"<p>{e(c.why)}<br>fires on {c.active} of {c.n} tokens "
                   f"(density {dens:.2%})</p>"
                   f"<img alt='activation histogram of latent {c.k}' "
                   f"src='data:image/png;base64,{to_base64(c.histogram)}'>")
        for v, window, peak in c.contexts:
            before = "".join(window[:peak])
            after = "".join(window[peak + 1:])
            out.append(f"<div class='ctx'>{e(before)}<mark>{e(window[peak])}</mark>"
                       f"{e(after)} <span class='val'>{v:.3g}</span></div>")
        if not c.contexts:
            out.append("<p>Never active on these rows.</p>")
        out.append("</div>")
    out.append("</div>")
    return out


def finding_latents(report: Any, limit: int = 6) -> dict[int, str]:
    """The latents of the triage's findings (at most ``limit``), each with its reason."""
    from dictopt.check.triage import triage

    out: dict[int, str] = {}
    for r, f in enumerate(triage(report).findings, 1):
        if f.condition == "C1":  # about the encoder of many atoms at once
            continue
        for k in f.atoms:
            if len(out) < limit:
                out.setdefault(int(k), f"in finding {r} ({f.condition})")
    return out
