"""``load(path, format="auto")``: one entry point for every supported on-disk format.

Detection looks only at which files are present (and, for a bare ``.pt`` file, at its keys):

==========================  ===========================================================
format                      what identifies it
==========================  ===========================================================
``native``                  as ``saelens``, ``cfg.json`` has ``dictopt_format_version``
``saelens``                 ``cfg.json`` + ``sae_weights.safetensors``
``sparsify``                ``cfg.json`` + ``sae.safetensors``
``dictionary_learning``     ``ae.pt`` (+ ``config.json``), or a ``.pt`` with its key names
``openai``                  a ``.pt`` state dict with ``pre_bias``, ``latent_bias``, ...
``npz``                     a ``.npz`` file
==========================  ===========================================================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError

FORMATS = ("native", "saelens", "sparsify", "dictionary_learning", "openai", "npz")
LOOKED_FOR = (
    "cfg.json + sae_weights.safetensors (dictopt native / SAELens), cfg.json + sae.safetensors "
    "(sparsify), ae.pt [+ config.json] (dictionary_learning), a .pt state dict "
    "(dictionary_learning or OpenAI sparse_autoencoder), a .npz file"
)


def detect_format(path: str | Path) -> str:
    """The format of ``path`` from the files present (see the module docstring).

    Parameters
    ----------
    path:
        A folder or file.

    Returns
    -------
    str
        One of :data:`FORMATS`.
    """
    p = Path(path)
    if not p.exists():
        raise DictoptInputError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix == ".npz":
            return "npz"
        if p.name in ("cfg.json", "sae_weights.safetensors", "sae.safetensors", "config.json"):
            return detect_format(p.parent)
        if p.suffix in (".pt", ".pth", ".bin"):
            return _detect_pt(p)
        raise DictoptInputError(f"{p}: unrecognised file type; looked for {LOOKED_FOR}")
    has = {name for name in ("cfg.json", "sae_weights.safetensors", "sae.safetensors", "ae.pt")
           if (p / name).is_file()}
    if {"cfg.json", "sae_weights.safetensors"} <= has:
        from dictopt.io.native import read_config

        return "native" if "dictopt_format_version" in read_config(p) else "saelens"
    if {"cfg.json", "sae.safetensors"} <= has:
        return "sparsify"
    if "ae.pt" in has:
        return "dictionary_learning"
    present = sorted(x.name for x in p.iterdir())[:20]
    raise DictoptInputError(
        f"{p}: no supported dictionary/SAE layout; looked for {LOOKED_FOR}; found {present}"
    )


def _detect_pt(p: Path) -> str:
    from dictopt.io._common import torch_load
    from dictopt.io.dictionary_learning import BACKUP_KEYS, SIGNATURES
    from dictopt.io.openai import is_openai_state

    state = torch_load(p)
    if is_openai_state(state):
        return "openai"
    if isinstance(state, dict):
        keys = {str(k).removeprefix("_orig_mod.") for k in state}
        if BACKUP_KEYS <= keys or any(sig <= keys for sig in SIGNATURES.values()):
            return "dictionary_learning"
    keys = sorted(state)[:20] if isinstance(state, dict) else type(state).__name__
    raise DictoptInputError(f"{p}: a torch file with keys {keys} matches no known SAE layout")


def _loaders() -> dict[str, Callable[..., Dictionary]]:
    from dictopt.io.arrays import load_npz
    from dictopt.io.dictionary_learning import load_dictionary_learning
    from dictopt.io.native import load_dictionary
    from dictopt.io.openai import load_openai
    from dictopt.io.saelens import load_saelens
    from dictopt.io.sparsify import load_sparsify

    return {
        "native": lambda p, **kw: _native(load_dictionary, p, **kw),
        "saelens": load_saelens,
        "sparsify": load_sparsify,
        "dictionary_learning": load_dictionary_learning,
        "openai": load_openai,
        "npz": load_npz,
    }


def _native(load: Callable[[Any], Dictionary], path: Path, *, lam: float | None = None,
            **_: Any) -> Dictionary:
    d = load(path.parent if path.is_file() else path)
    return d.with_lam(lam) if lam is not None else d


def load(
    path: Any,
    format: str = "auto",  # noqa: A002 - the natural name for users
    *,
    lam: float | None = None,
    allow_input_transform: bool = False,
) -> Dictionary:
    """Load any supported dictionary or SAE into a canonical :class:`Dictionary`.

    Parameters
    ----------
    path:
        A folder (SAELens, sparsify, dictionary_learning, dictopt native) or a file
        (``.pt`` state dict, ``.npz``); or an object in memory (a SAELens SAE, a dictopt SAE
        module, a fitted scikit-learn estimator, a state dict: see
        :func:`dictopt.io.objects.as_dictionary`).
    format:
        ``"auto"`` (detect from the files present) or one of :data:`FORMATS`.
    lam:
        Override λ (THEORY §1 convention).
    allow_input_transform:
        Accept SAEs that normalise each input point (OpenAI TopK, SAELens ``layer_norm``).

    Returns
    -------
    Dictionary
        With the SAE's own encoder and provenance in ``meta`` (library, file, architecture,
        conventions, ``lam_conversion`` and ``lam_factor``).
    """
    if not isinstance(path, str | Path):
        from dictopt.io.objects import as_dictionary

        return as_dictionary(path, lam=lam, allow_input_transform=allow_input_transform)
    p = Path(path)
    fmt = detect_format(p) if format == "auto" else format
    loaders = _loaders()
    if fmt not in loaders:
        raise DictoptInputError(f"format: unknown {fmt!r}; known: auto, {', '.join(FORMATS)}")
    kwargs: dict[str, Any] = {"lam": lam}
    if fmt in ("saelens", "openai"):
        kwargs["allow_input_transform"] = allow_input_transform
    if fmt in ("saelens", "sparsify") and p.is_file():
        p = p.parent
    dictionary = loaders[fmt](p, **kwargs)
    dictionary.meta.setdefault("format", fmt)
    return dictionary
