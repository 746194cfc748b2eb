"""Dictionaries and SAEs held in memory: the objects a notebook has, without saving them first.

:func:`as_dictionary` turns any of these into the canonical :class:`~dictopt.problem.Dictionary`
with the same conventions as the folder loaders (it calls the same conversion code):

=================================  ===========================================================
object                             converted by
=================================  ===========================================================
``Dictionary``                     returned as is (``lam`` applied when given)
a SAELens ``SAE`` (any v6 class)   its ``cfg.to_dict()`` and its state dict as ``save_model``
                                   writes them → :func:`dictopt.io.saelens.saelens_dictionary`
dictopt's own SAE modules          ``SAE.to_dictionary()`` (a frozen copy of the encoder)
a fitted scikit-learn estimator    :func:`dictopt.io.arrays.from_sklearn`
a torch state dict                 dictionary_learning or OpenAI ``sparse_autoencoder`` key
                                   sets → their loaders (as for a ``.pt`` file, so a
                                   ``W_enc, b_enc, W_dec, b_dec, threshold`` dict is
                                   dictionary_learning's JumpReLU); other SAELens tensor
                                   names → ``saelens_dictionary`` (standard, jumprelu with
                                   ``log_threshold``, gated)
a path (``str`` / ``Path``)        :func:`dictopt.io.load`
=================================  ===========================================================

So an in-memory SAELens SAE and the same SAE saved by SAELens and loaded from its folder give
the same atoms, bias, encoder and λ (the tests check it on the report).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError

#: What :func:`as_dictionary` accepts, for error messages.
ACCEPTED = (
    "a dictopt Dictionary, a SAELens SAE object, a dictopt SAE module, a fitted scikit-learn "
    "estimator (components_), a torch state dict, or the path of a saved SAE/dictionary"
)
SAELENS_KEYS = frozenset({"W_enc", "W_dec", "b_dec"})


def is_saelens_sae(obj: Any) -> bool:
    """Whether ``obj`` is a SAELens v6 ``SAE`` (checked by class, without importing SAELens).

    Parameters
    ----------
    obj:
        Any object.

    Returns
    -------
    bool
        True when a class in ``obj``'s MRO is ``sae_lens``'s ``SAE``.
    """
    return any(c.__module__.startswith("sae_lens") and c.__name__ == "SAE"
               for c in type(obj).__mro__)


def _is_dictopt_sae(obj: Any) -> bool:
    from dictopt.solvers.sae.base import SAE

    return isinstance(obj, SAE)


def from_saelens_sae(
    sae: Any,
    *,
    lam: float | None = None,
    allow_input_transform: bool = False,
    activation_scaling_factor: float | None = None,
) -> Dictionary:
    """A SAELens SAE object as a canonical Dictionary, exactly as its saved folder would load.

    Parameters
    ----------
    sae:
        Any SAELens v6 SAE (``StandardSAE``, ``TopKSAE``, ``JumpReLUSAE``, ``GatedSAE``, the
        ``*TrainingSAE`` classes including BatchTopK and Matryoshka).
    lam:
        Override λ (otherwise converted from the config, as for folders).
    allow_input_transform:
        Accept per-point input normalisations (``layer_norm``, ``constant_norm_rescale``).
    activation_scaling_factor:
        Needed only when ``normalize_activations = "expected_average_only_in"`` (SAELens keeps
        that factor in its trainer, not in the SAE object).

    Returns
    -------
    Dictionary
        The canonical dictionary with the SAE's encoder; ``meta["format"]`` is
        ``"saelens (in memory)"``.
    """
    from dictopt.io.saelens import saelens_dictionary

    state = {k: v.detach().cpu() for k, v in sae.state_dict().items()}
    sae.process_state_dict_for_saving(state)  # what SAE.save_model writes
    cfg = sae.cfg.to_dict()
    name = f"<in-memory {type(sae).__name__}>"

    def scaling() -> float:
        if activation_scaling_factor is None:
            raise DictoptInputError(
                f"{name}: normalize_activations = 'expected_average_only_in' but no activation "
                "scaling factor: pass activation_scaling_factor=... (SAELens's trainer holds it)"
            )
        s = float(activation_scaling_factor)
        if not s > 0 or s == float("inf"):
            raise DictoptInputError(f"activation_scaling_factor: must be finite and > 0, got {s}")
        return s

    dictionary = saelens_dictionary(
        cfg, state, cfg_path=f"{name}.cfg", w_path=f"{name}.state_dict", scaling_factor=scaling,
        lam=lam, allow_input_transform=allow_input_transform,
    )
    dictionary.meta["format"] = "saelens (in memory)"
    return dictionary


def _from_state_dict(
    state: dict[str, Any], *, lam: float | None, allow_input_transform: bool
) -> Dictionary:
    """A state dict: SAELens names directly; other libraries through their file loaders."""
    from dictopt.io.saelens import saelens_dictionary

    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor | str | int | float)]
    if bad:
        raise DictoptInputError(f"state dict: entries {bad[:5]} are not tensors")
    from dictopt.io.dictionary_learning import SIGNATURES
    from dictopt.io.openai import is_openai_state

    keys = {str(k).removeprefix("_orig_mod.") for k in state}
    other = is_openai_state(state) or any(sig <= keys for sig in SIGNATURES.values())
    if SAELENS_KEYS <= keys and not other:
        W_dec = state["W_dec"]
        arch = ("gated" if "b_gate" in keys else "jumprelu" if "threshold" in keys
                or "log_threshold" in keys else "standard")
        cfg = {"architecture": arch, "d_in": int(W_dec.shape[1]), "d_sae": int(W_dec.shape[0]),
               "metadata": {"sae_lens_version": "6"}}
        d = saelens_dictionary(cfg, dict(state), cfg_path="<state dict>",
                               w_path="<state dict>", scaling_factor=lambda: 1.0, lam=lam,
                               allow_input_transform=allow_input_transform)
        d.meta["format"] = "state dict (SAELens names)"
        return d
    # dictionary_learning / OpenAI: their loaders read a .pt file; one temporary file keeps a
    # single copy of their conventions.
    from dictopt.io.dispatch import load

    with tempfile.TemporaryDirectory(prefix="dictopt-state-") as tmp:
        path = Path(tmp) / "state.pt"
        torch.save(dict(state), path)
        d = load(path, lam=lam, allow_input_transform=allow_input_transform)
    d.meta["file"] = "<state dict>"
    return d


def as_dictionary(
    obj: Any,
    *,
    lam: float | None = None,
    allow_input_transform: bool = False,
    activation_scaling_factor: float | None = None,
) -> Dictionary:
    """Any supported dictionary or SAE, in memory or on disk, as a canonical Dictionary.

    Parameters
    ----------
    obj:
        See the module docstring for the accepted objects.
    lam:
        Override λ (THEORY §1 convention).
    allow_input_transform:
        Accept SAEs that normalise each input point (see :func:`dictopt.io.load`).
    activation_scaling_factor:
        For SAELens SAEs trained with ``normalize_activations = "expected_average_only_in"``.

    Returns
    -------
    Dictionary
    """
    if isinstance(obj, Dictionary):
        return obj.with_lam(lam) if lam is not None else obj
    if isinstance(obj, str | Path):
        from dictopt.io.dispatch import load

        return load(obj, lam=lam, allow_input_transform=allow_input_transform)
    if is_saelens_sae(obj):
        return from_saelens_sae(obj, lam=lam, allow_input_transform=allow_input_transform,
                                activation_scaling_factor=activation_scaling_factor)
    if _is_dictopt_sae(obj):
        d = obj.to_dictionary()
        return d.with_lam(lam) if lam is not None else d
    if hasattr(obj, "components_") or type(obj).__module__.startswith("sklearn"):
        from dictopt.io.arrays import from_sklearn

        return from_sklearn(obj, lam=lam)
    if isinstance(obj, dict) and obj:
        return _from_state_dict(obj, lam=lam, allow_input_transform=allow_input_transform)
    raise DictoptInputError(f"dictionary: got a {type(obj).__name__}; expected {ACCEPTED}")
