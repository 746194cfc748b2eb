"""dictopt's own folder format, laid out like a SAELens SAE so other tools can read it.

A folder holds ``cfg.json`` and ``sae_weights.safetensors`` with

- ``W_dec [K, d]``: the *raw* decoder (canonical atoms times ``code_scale``), as SAELens stores it;
- ``b_dec [d]``: the decoder bias;
- the encoder's own tensors (``W_enc``, ``b_enc``, ``threshold``, ...) when there is an encoder.

``cfg.json`` records ``architecture`` (the encoder's registered name, or ``"lasso"`` for
dictionaries whose codes are optimal lasso codes), ``d_in``, ``d_sae``, ``lam`` with its
convention, ``has_bias``, the encoder's config and dictopt's provenance ``meta``. Loading
canonicalises exactly as :meth:`Dictionary.from_decoder` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

# the modules that define encoders register them on import (get_encoder_class looks them up)
import dictopt.io.encoders  # noqa: F401
import dictopt.solvers.sae  # noqa: F401
from dictopt.atomic import atomic_folder
from dictopt.problem import Dictionary, get_encoder_class
from dictopt.validation import DictoptInputError

CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
FORMAT_VERSION = 1
LAM_CONVENTION = "(1/N) sum_n [ 1/2 ||x_n - b - D^T a_n||^2 + lam * sum_k a_kn ], unit-norm atoms"
LASSO = "lasso"
#: Files of every dictionary layout dictopt reads or writes: an existing output folder holding
#: only these is replaced as a whole; anything else there makes the write an error.
DICTIONARY_FILES = frozenset(
    {"cfg.json", "sae_weights.safetensors", "sae.safetensors", "ae.pt", "config.json"}
)


def save_dictionary(dictionary: Dictionary, folder: str | Path) -> Path:
    """Write ``dictionary`` to ``folder`` atomically as a whole; returns the folder.

    The folder is built in a hidden sibling and swapped into place (:mod:`dictopt.atomic`):
    a kill or a full disk leaves the previous folder, never new weights with an old config.

    Parameters
    ----------
    dictionary:
        The dictionary (its encoder, if any, is saved too).
    folder:
        The output folder.

    Returns
    -------
    Path
        The folder.
    """
    out = Path(folder)
    tensors: dict[str, torch.Tensor] = {
        "W_dec": dictionary.decoder.contiguous(),
        "b_dec": dictionary.bias.contiguous(),
    }
    encoder_cfg: dict[str, Any] = {}
    architecture = LASSO
    if dictionary.encoder is not None:
        architecture = dictionary.encoder.architecture
        encoder_cfg = dictionary.encoder.config()
        for name, tensor in dictionary.encoder.tensors().items():
            if name in tensors:
                raise ValueError(f"encoder tensor {name!r} clashes with a decoder tensor")
            tensors[name] = tensor.detach().contiguous()
    cfg = {
        "architecture": architecture,
        "d_in": dictionary.d,
        "d_sae": dictionary.K,
        "dtype": str(dictionary.dtype).removeprefix("torch."),
        "lam": dictionary.lam,
        "lam_convention": LAM_CONVENTION,
        "has_bias": dictionary.has_bias,
        "encoder": encoder_cfg,
        "dictopt_format_version": FORMAT_VERSION,
        "meta": dictionary.meta,
    }
    with atomic_folder(out, owned=DICTIONARY_FILES) as tmp:
        save_file({k: v.detach().cpu() for k, v in tensors.items()}, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg, indent=2, default=str) + "\n")
    return out


def read_config(folder: str | Path) -> dict[str, Any]:
    """Parse ``cfg.json`` with clear errors for a missing or corrupt file.

    Parameters
    ----------
    folder:
        A dictionary folder.

    Returns
    -------
    dict[str, Any]
        The parsed ``cfg.json``.
    """
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise DictoptInputError(f"{path}: no such file (is {folder} a dictopt/SAELens folder?)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DictoptInputError(f"{path}: not valid JSON (UTF-8) ({err})") from err
    except OSError as err:
        raise DictoptInputError(f"{path}: unreadable ({err.strerror or err})") from err
    if not isinstance(cfg, dict):
        raise DictoptInputError(f"{path}: expected a JSON object")
    return cfg


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file with a clear error when it is missing or corrupt.

    Parameters
    ----------
    path:
        A ``.safetensors`` file.

    Returns
    -------
    dict[str, torch.Tensor]
        Its tensors by name.
    """
    path = Path(path)
    if not path.is_file():
        raise DictoptInputError(f"{path}: no such file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise DictoptInputError(f"{path}: corrupt or unreadable safetensors file ({err})") from err


def load_dictionary(folder: str | Path) -> Dictionary:
    """Read a folder written by :func:`save_dictionary` into a canonical :class:`Dictionary`.

    Parameters
    ----------
    folder:
        The folder holding the config and weights.

    Returns
    -------
    Dictionary
        The dictionary with its λ, bias flag, meta and (if saved) encoder.

    Raises
    ------
    DictoptInputError
        For missing or mis-shaped tensors or config keys.
    """
    folder = Path(folder)
    cfg = read_config(folder)
    weights_path = folder / WEIGHTS_FILE
    tensors = read_weights(weights_path)
    for key in ("W_dec", "b_dec"):
        if key not in tensors:
            raise DictoptInputError(f"{weights_path}: missing tensor {key!r}")
    W_dec, b_dec = tensors["W_dec"], tensors["b_dec"]
    for key, expected, actual in (
        ("d_sae", cfg.get("d_sae"), W_dec.shape[0]),
        ("d_in", cfg.get("d_in"), W_dec.shape[1] if W_dec.ndim == 2 else None),
    ):
        if expected is not None and expected != actual:
            raise DictoptInputError(
                f"{folder / CONFIG_FILE}: {key} = {expected} disagrees with W_dec of shape "
                f"{tuple(W_dec.shape)} in {weights_path.name}"
            )
    if "architecture" not in cfg:
        # Without it the SAE's own encoder would silently be replaced by optimal codes.
        raise DictoptInputError(
            f"{folder / CONFIG_FILE}: has no 'architecture'; dictopt always records it. Add "
            f'"architecture": "{LASSO}" if the codes are optimal lasso codes, else the '
            "encoder's registered name (relu, topk, ...)"
        )
    architecture = cfg["architecture"]
    if not isinstance(architecture, str):
        raise DictoptInputError(
            f"{folder / CONFIG_FILE}: 'architecture' must be a name, got {architecture!r}"
        )
    where = folder / CONFIG_FILE
    for key, kind in (("encoder", dict), ("meta", dict), ("has_bias", bool)):
        if key in cfg and cfg[key] is not None and not isinstance(cfg[key], kind):
            raise DictoptInputError(
                f"{where}: {key!r} must be a {kind.__name__}, got {str(cfg[key])[:80]!r}"
            )
    encoder = None
    if architecture != LASSO:
        cls = get_encoder_class(architecture)
        # The encoder sees every tensor: SAEs that subtract b_dec from the input, or encode by
        # pursuit over the decoder, need the decoder tensors too.
        try:
            encoder = cls.from_saved(cfg.get("encoder") or {}, tensors)
        except DictoptInputError as err:
            raise DictoptInputError(f"{where}: {err}") from err
        except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as err:
            # the encoder's config is untrusted input: any failure to build from it is bad input
            raise DictoptInputError(
                f"{where}: the {architecture!r} encoder cannot be built from its 'encoder' "
                f"config and tensors ({type(err).__name__}: {str(err)[:200]})"
            ) from err
    lam = cfg.get("lam")
    return Dictionary.from_decoder(
        W_dec,
        b_dec,
        lam=lam,
        encoder=encoder,
        has_bias=cfg.get("has_bias", True) is not False,
        meta=dict(cfg.get("meta") or {}),
    )
