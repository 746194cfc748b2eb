"""EleutherAI sparsify folders: ``cfg.json`` + ``sae.safetensors``.

(Not PyPI's ``sparsify``, an unrelated Neural Magic package.) ``SparseCoder.save_to_disk``
writes ``cfg.json`` = the ``SparseCoderConfig`` fields (``activation`` ``"topk"`` or
``"groupmax"``, ``k``, ``num_latents``, ``expansion_factor``, ``normalize_decoder``,
``multi_topk``, ``skip_connection``, ``transcode``, ...) plus ``d_in``, and the module's
tensors::

    encoder.weight [num_latents, d_in]   (nn.Linear: the transpose of SAELens' W_enc)
    encoder.bias   [num_latents]
    W_dec          [num_latents, d_in]   (already atoms-as-rows: NOT transposed)
    b_dec          [d_in]
    W_skip         [d_in, d_in]          (only with skip_connection)

Encoder: ``TopK_k(ReLU((x - b_dec) W_encᵀ + b))`` (``groupmax``: the maximum of each of ``k``
equal groups); reconstruction ``f W_dec + b_dec``. Training minimises the fraction of
variance unexplained, with no L1 term: ``λ = None``. Transcoders (``transcode``) and skip
connections do not reconstruct their input from a dictionary alone and are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dictopt.io._common import as_int, build_sae, check_shape, read_json, require
from dictopt.io.encoders import GroupMaxEncoder
from dictopt.io.native import read_weights
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError

CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
LIBRARY = "sparsify"


def load_sparsify(folder: str | Path, *, lam: float | None = None) -> Dictionary:
    """Load a sparsify ``SparseCoder`` folder as a canonical Dictionary (its encoder kept).

    Parameters
    ----------
    folder:
        The sparsify folder.
    lam:
        λ (sparsify's TopK coders have none).

    Returns
    -------
    Dictionary
        Canonical, with sparsify's encoder.
    """
    folder = Path(folder)
    cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    cfg = read_json(cfg_path)
    tensors = read_weights(w_path)
    if cfg.get("transcode"):
        raise DictoptInputError(
            f"{cfg_path}: transcode = true: a transcoder predicts another module's output, "
            "it is not a dictionary of its input; dictopt checks autoencoders only"
        )
    if cfg.get("skip_connection") or "W_skip" in tensors:
        raise DictoptInputError(
            f"{cfg_path}: skip_connection: the reconstruction adds x W_skipᵀ, so it is not "
            "codes @ atoms + bias; dictopt cannot check it as a dictionary"
        )
    if "d_in" not in cfg:
        raise DictoptInputError(f"{cfg_path}: missing key 'd_in'")
    d_in = as_int(cfg["d_in"], "d_in", cfg_path)
    K = int(cfg.get("num_latents") or 0) or d_in * int(cfg.get("expansion_factor", 32))
    enc_w = require(tensors, "encoder.weight", w_path)
    W_dec = require(tensors, "W_dec", w_path)
    hint = f"cfg.json: d_in={d_in}, num_latents={K}"
    check_shape(enc_w, (K, d_in), "encoder.weight", w_path, hint)
    # sparsify stores W_dec as [num_latents, d_in] already; a transposed W_dec is an error.
    check_shape(W_dec, (K, d_in), "W_dec", w_path, hint)
    b_enc = check_shape(require(tensors, "encoder.bias", w_path), (K,), "encoder.bias", w_path)
    b_dec = check_shape(require(tensors, "b_dec", w_path), (d_in,), "b_dec", w_path)
    k = as_int(cfg.get("k", 32), "k", cfg_path)
    activation = cfg.get("activation", "topk")
    enc_t = {"W_enc": enc_w.T, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    encoder: Any
    if activation == "topk":
        if not 1 <= k <= K:
            raise DictoptInputError(f"{cfg_path}: k = {k} must be in [1, num_latents={K}]")
        encoder = build_sae("topk", enc_t, apply_b_dec_to_input=True, where=w_path, k=k)
    elif activation == "groupmax":
        try:
            encoder = GroupMaxEncoder(enc_w.T, b_enc, b_dec, k=k)
        except DictoptInputError as err:
            raise DictoptInputError(f"{cfg_path}: {err}") from err
    else:
        raise DictoptInputError(
            f"{cfg_path}: unknown activation {activation!r}; known: 'topk', 'groupmax'"
        )
    meta = {
        "library": LIBRARY,
        "file": str(w_path),
        "config_file": str(cfg_path),
        "architecture": "topk" if activation == "topk" else "groupmax",
        "conventions": {
            "orientation": "encoder.weight [num_latents, d_in] transposed to W_enc; W_dec "
            "[num_latents, d_in] kept (already atoms-as-rows)",
            "activation_normalisation": "none (sparsify trains on raw activations)",
        },
        "lam_conversion": "no L1 objective (FVU loss with TopK): lam is None; use an implied λ",
        "lam_factor": None,
        "sparsify_config": cfg,
        "k": k,
    }
    return Dictionary.from_decoder(W_dec, b_dec, lam=lam, encoder=encoder, meta=meta)
