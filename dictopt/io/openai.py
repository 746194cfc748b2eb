"""OpenAI ``sparse_autoencoder`` state dicts (``Autoencoder.state_dict()`` saved with torch).

Keys::

    pre_bias [d]         subtracted before encoding, added back after decoding (b_dec)
    latent_bias [K]      encoder bias
    encoder.weight [K, d]   nn.Linear (transposed to W_enc on load)
    decoder.weight [d, K]   nn.Linear (transposed to atoms-as-rows on load)
    stats_last_nonzero, latents_activation_frequency, latents_mean_square   (statistics)
    activation           "ReLU" | "TopK" | "Identity" (a string)
    activation_state_dict  {"k": int, "postact_fn": "ReLU"} for TopK

``latents = act((x - pre_bias) W_encᵀ + latent_bias)``, ``recons = latents W_decᵀ + pre_bias``.
OpenAI's own ``from_state_dict`` turns on per-row layer normalisation of the *input* whenever
the activation is TopK (``x ← (x - mean(x)) / (std(x) + 1e-5)``, undone after decoding). That
is a per-point affine map, not part of a dictionary: the loaded Dictionary is the dictionary
of the **normalised** activations, ``meta["input_transform"]`` says so, and
:func:`layer_norm` produces the activations it must be checked on. No λ is stored (TopK has
none; the ReLU runs' L1 coefficient is not in the file): ``λ = None`` unless given.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from dictopt.io._common import as_int, build_sae, check_shape, require, torch_load
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError, to_tensor

LIBRARY = "openai/sparse_autoencoder"
REQUIRED = ("pre_bias", "latent_bias", "encoder.weight", "decoder.weight")
LN_EPS = 1e-5
logger = logging.getLogger(__name__)


def layer_norm(x_ND: Any, eps: float = LN_EPS) -> torch.Tensor:
    """OpenAI's input normalisation: each row centred and divided by (its std + eps).

    Parameters
    ----------
    x_ND:
        Data.
    eps:
        Added to each row's std.

    Returns
    -------
    torch.Tensor
        ``[N, d]``.
    """
    x = to_tensor(x_ND, "activations")
    mu = x.mean(dim=-1, keepdim=True)
    xc = x - mu
    return xc / (xc.std(dim=-1, keepdim=True) + eps)


def is_openai_state(state: Any) -> bool:
    """Whether ``state`` looks like an OpenAI autoencoder's state dict.

    Parameters
    ----------
    state:
        A loaded state dict.

    Returns
    -------
    bool
        Whether it has the keys of OpenAI's ``sparse_autoencoder``.
    """
    return isinstance(state, dict) and all(k in state for k in REQUIRED)


def load_openai(
    path: str | Path, *, lam: float | None = None, allow_input_transform: bool = False
) -> Dictionary:
    """Load an OpenAI ``sparse_autoencoder`` state dict file as a canonical Dictionary.

    A TopK autoencoder layer-normalises its input (see the module docstring): it is refused
    unless ``allow_input_transform=True``, and then applies to :func:`layer_norm` of the data.

    Parameters
    ----------
    path:
        The state dict file.
    lam:
        λ (the file records none).
    allow_input_transform:
        Accept a TopK autoencoder's per-row layer norm.

    Returns
    -------
    Dictionary
        The canonical dictionary with a ReLU or TopK encoder.
    """
    path = Path(path)
    state = torch_load(path)
    if not is_openai_state(state):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise DictoptInputError(
            f"{path}: not an OpenAI sparse_autoencoder state dict: needs {list(REQUIRED)}, "
            f"found {keys}"
        )
    enc_w = require(state, "encoder.weight", path)
    K, d = enc_w.shape
    W_dec = check_shape(require(state, "decoder.weight", path), (d, K), "decoder.weight", path,
                        "nn.Linear(n_latents, n_inputs) stores [n_inputs, n_latents]").T
    b_dec = check_shape(require(state, "pre_bias", path), (d,), "pre_bias", path)
    b_enc = check_shape(require(state, "latent_bias", path), (K,), "latent_bias", path)
    activation = state.get("activation", "ReLU")
    enc_t = {"W_enc": enc_w.T, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    meta: dict[str, Any] = {}
    encoder, normalize = _encoder_of(activation, state, enc_t, path, meta)
    if normalize and not allow_input_transform:
        raise DictoptInputError(
            f"{path}: an OpenAI TopK autoencoder layer-normalises every input row before "
            "encoding; that map is not part of a dictionary. Load with "
            "allow_input_transform=True and check dictopt.io.openai.layer_norm(x)"
        )
    if normalize:
        logger.info(
            "%s: OpenAI TopK autoencoders layer-normalise each input row; the dictionary "
            "applies to dictopt.io.openai.layer_norm(x), not to raw x", path
        )
    meta.update({
        "library": LIBRARY,
        "file": str(path),
        "architecture": "topk" if activation == "TopK" else "relu",
        "input_transform": "layer_norm" if normalize else None,
        "conventions": {
            "orientation": "nn.Linear: encoder.weight [K, d], decoder.weight [d, K] "
            "(both transposed on load)",
            "activation_normalisation": "per-row layer norm of the input (TopK); check on "
            "dictopt.io.openai.layer_norm(x)" if normalize else "none",
        },
        "lam_conversion": "not stored in the file: lam is None (supply it, or use an implied λ)",
        "lam_factor": None,
    })
    return Dictionary.from_decoder(W_dec, b_dec, lam=lam, encoder=encoder, meta=meta)


def _encoder_of(
    activation: Any, state: dict[str, Any], enc_t: dict[str, torch.Tensor], path: Path,
    meta: dict[str, Any],
) -> tuple[Any, bool]:
    """The ReLU or TopK encoder of an OpenAI state dict and whether its input is
    layer-normalised (TopK); records ``k`` in ``meta``."""
    if activation == "ReLU":
        encoder = build_sae("relu", enc_t, apply_b_dec_to_input=True, where=path)
        return encoder, False
    elif activation == "TopK":
        act_state = state.get("activation_state_dict") or {}
        if "k" not in act_state:
            raise DictoptInputError(f"{path}: activation 'TopK' without activation_state_dict.k")
        k = as_int(act_state["k"], "activation_state_dict.k", path)
        post = act_state.get("postact_fn", "ReLU")
        if post != "ReLU":
            raise DictoptInputError(
                f"{path}: TopK postact_fn {post!r} gives signed codes; dictopt needs "
                "nonnegative codes (postact_fn 'ReLU')"
            )
        encoder = build_sae("topk", enc_t, apply_b_dec_to_input=True, where=path, k=k)
        meta["k"] = k
        return encoder, True
    else:
        raise DictoptInputError(
            f"{path}: activation {activation!r} is not supported (signed or unknown codes); "
            "supported: 'ReLU', 'TopK'"
        )
