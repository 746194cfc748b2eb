"""SAELens folders: ``cfg.json`` + ``sae_weights.safetensors`` (v6 and pre-6.0 configs).

Tensors (SAELens orientation, atoms are rows of ``W_dec``)::

    W_enc [d_in, d_sae]   b_enc [d_sae]   W_dec [d_sae, d_in]   b_dec [d_in]
    threshold [d_sae]                  (jumprelu; ``log_threshold`` in old checkpoints)
    b_gate, b_mag, r_mag [d_sae]       (gated; no b_enc)
    topk_threshold []                  (batchtopk / matryoshka_batchtopk training checkpoints)
    scaling_factor [d_sae]             (pre-6.0 ``finetuning_scaling_factor``)

Configs: v6 *inference* configs carry ``architecture`` (``standard``, ``topk``, ``jumprelu``,
``gated``, ...), ``d_in``, ``d_sae``, ``apply_b_dec_to_input``, ``normalize_activations`` and
``metadata`` (with ``training_architecture_details`` such as ``l1_coefficient``); v6 *training*
checkpoints carry the training fields at top level (``batchtopk``/``matryoshka_batchtopk``
checkpoints hold ``topk_threshold``; SAELens exports them for inference as JumpReLU with that
threshold, which is what dictopt's BatchTopK inference computes). Pre-6.0 configs (no
``sae_lens_version`` ≥ 6, or ``metadata.sae_lens_version``) use ``activation_fn_str`` /
``activation_fn_kwargs.k`` for TopK and a boolean ``normalize_activations``.

Conventions converted on load:

- ``normalize_activations = "expected_average_only_in"``: the weights expect ``s·x``. The
  factor ``s`` is read from ``activation_scaler.json`` (``scaling_factor``) next to the weights
  and folded exactly as SAELens does (``W_enc·s``, ``W_dec/s``, ``b_dec/s``); a missing factor
  is an error naming the file and key. Final SAELens checkpoints are already folded.
- ``rescale_acts_by_decoder_norm``: decoder norms are folded into the encoder (exact).
- ``finetuning_scaling_factor`` (pre-6.0): ``scaling_factor`` multiplies the codes before the
  decoder; it is folded into ``W_dec`` (exact).
- ``layer_norm`` / ``constant_norm_rescale`` are per-point maps of the input, not part of a
  dictionary: refused unless ``allow_input_transform=True`` (then ``meta["input_transform"]``).

λ (THEORY §1): ``standard`` trains ``mean_n[Σ_i (x − x̂)_i² + l1_coefficient Σ_k f_k ‖W_dec[k]‖]``
= 2 × canonical, so ``λ = l1_coefficient / 2`` (``/ s`` when a scaling factor ``s`` was folded
here). With ``lp_norm ≠ 1``, a pre-6.0 ``mse_loss_normalization``, or a pre-6.0 L1 not weighted
by decoder norm on a non-unit decoder, there is no exact λ: ``None``. TopK, BatchTopK,
Matryoshka, JumpReLU and gated (whose L1 acts on the gate, not the codes) have no λ.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dictopt.atomic import atomic_folder
from dictopt.io._common import as_int, build_sae, check_shape, dtype_name, read_json, require
from dictopt.io.encoders import GatedEncoder
from dictopt.io.native import DICTIONARY_FILES, read_config, read_weights
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError

CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SCALER_FILE = "activation_scaler.json"
LIBRARY = "sae_lens"
SUPPORTED = ("standard", "topk", "batchtopk", "matryoshka_batchtopk", "jumprelu", "gated")
INPUT_TRANSFORMS = ("layer_norm", "constant_norm_rescale")
#: The SAELens config format written by :func:`export_saelens`.
EXPORT_VERSION = "6.0.0"


def _is_pre6(cfg: dict[str, Any]) -> bool:
    version = cfg.get("sae_lens_version")
    meta = cfg.get("metadata")
    if not version and isinstance(meta, dict):
        version = meta.get("sae_lens_version")
    if not version:
        return True
    try:
        return int(str(version).split(".")[0]) < 6
    except ValueError:
        return True


def normalise_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A flat config: pre-6.0 keys renamed, training details merged in (top level wins).

    Parameters
    ----------
    cfg:
        A SAELens ``cfg.json``.

    Returns
    -------
    dict[str, Any]
        The flat, current-version config.
    """
    out = dict(cfg)
    if _is_pre6(out):
        for old, new in (("activation_fn_str", "activation_fn"), ("hook_point", "hook_name")):
            if old in out and new not in out:
                out[new] = out.pop(old)
        out.setdefault("architecture", "standard")
        kwargs = out.get("activation_fn_kwargs") or {}
        if out.get("activation_fn") == "topk" and kwargs.get("k") is not None:
            out["architecture"] = "topk"
            out["k"] = kwargs["k"]
        norm = out.get("normalize_activations")
        if isinstance(norm, bool) or norm is None:
            out["normalize_activations"] = "expected_average_only_in" if norm else "none"
        out["_pre6"] = True
    meta = out.get("metadata") if isinstance(out.get("metadata"), dict) else {}
    details = meta.get("training_architecture_details") or {}
    for key, value in details.items():
        out.setdefault(key, value)
    if meta.get("training_architecture"):
        out.setdefault("training_architecture", meta["training_architecture"])
    return out


def _scaling_factor(folder: Path) -> float:
    path = folder / SCALER_FILE
    if not path.is_file():
        raise DictoptInputError(
            f"{folder / CONFIG_FILE}: normalize_activations = 'expected_average_only_in' but the "
            f"activation scaling factor is missing: no {path} with key 'scaling_factor' "
            "(final SAELens checkpoints fold it into the weights and set 'none')"
        )
    data = read_json(path)
    s = data.get("scaling_factor")
    if s is None:
        raise DictoptInputError(
            f"{path}: key 'scaling_factor' is missing or null, but {CONFIG_FILE} says "
            "normalize_activations = 'expected_average_only_in'"
        )
    try:
        s = float(s)
    except (TypeError, ValueError) as err:
        raise DictoptInputError(f"{path}: 'scaling_factor' must be a number, got {s!r}") from err
    if not s > 0 or s != s or s == float("inf"):
        raise DictoptInputError(f"{path}: 'scaling_factor' must be a finite number > 0, got {s}")
    return s


def load_saelens(
    folder: str | Path, *, lam: float | None = None, allow_input_transform: bool = False
) -> Dictionary:
    """Load a SAELens SAE folder as a canonical Dictionary with its own encoder.

    Parameters
    ----------
    folder:
        Holds ``cfg.json`` and ``sae_weights.safetensors``.
    lam:
        Override λ (otherwise converted from the config where an exact conversion exists).
    allow_input_transform:
        Accept per-point input normalisations (``layer_norm``, ``constant_norm_rescale``); the
        dictionary then applies to transformed activations (``meta["input_transform"]``).

    Returns
    -------
    Dictionary
        The canonical dictionary with the SAE's encoder (see :func:`saelens_dictionary`).
    """
    folder = Path(folder)
    cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    return saelens_dictionary(
        read_config(folder), read_weights(w_path), cfg_path=cfg_path, w_path=w_path,
        scaling_factor=lambda: _scaling_factor(folder), lam=lam,
        allow_input_transform=allow_input_transform,
    )


def saelens_dictionary(
    raw_cfg: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    *,
    cfg_path: str | Path,
    w_path: str | Path,
    scaling_factor: Callable[[], float],
    lam: float | None = None,
    allow_input_transform: bool = False,
) -> Dictionary:
    """The canonical Dictionary of a SAELens config and state dict (SAELens tensor names).

    The one place where SAELens conventions are converted (see the module docstring): used by
    :func:`load_saelens` for folders and by :func:`dictopt.io.objects.from_object` for SAE
    objects in memory.

    Parameters
    ----------
    raw_cfg:
        The SAELens config as read (pre-6.0 or 6.x keys).
    tensors:
        The state dict, SAELens tensor names (``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``,
        ``b_dec [d_in]``, ...).
    cfg_path, w_path:
        Where the config and weights came from (messages and ``meta``).
    scaling_factor:
        Returns the activation scaling factor; called only for ``expected_average_only_in``.
    lam:
        Override λ (otherwise converted from the config where an exact conversion exists).
    allow_input_transform:
        Accept per-point input normalisations (``meta["input_transform"]``).

    Returns
    -------
    Dictionary
        The canonical dictionary with the SAE's encoder, every SAELens scaling folded in;
        ``meta`` records the conventions, what was folded and the λ conversion.
    """
    cfg = normalise_config(raw_cfg)
    arch, d_in, d_sae = _architecture_and_sizes(cfg, cfg_path)
    hint = f"{CONFIG_FILE}: d_in={d_in}, d_sae={d_sae}"
    W_dec = check_shape(require(tensors, "W_dec", w_path), (d_sae, d_in), "W_dec", w_path, hint)
    W_enc = check_shape(require(tensors, "W_enc", w_path), (d_in, d_sae), "W_enc", w_path, hint)
    b_dec = check_shape(require(tensors, "b_dec", w_path), (d_in,), "b_dec", w_path, hint)
    notes: list[str] = []
    W_dec = _fold_finetuning_scale(cfg, tensors, W_dec, d_sae, w_path, hint, notes)
    norm = cfg.get("normalize_activations", "none")
    W_enc, W_dec, b_dec, s, input_transform = _normalisation(
        norm, W_enc, W_dec, b_dec, scaling_factor, cfg_path, allow_input_transform, notes
    )
    apply_b = bool(cfg.get("apply_b_dec_to_input", True))
    enc = _encoder_tensors(cfg, arch, tensors, W_enc, W_dec, b_dec, d_sae, w_path, notes)
    W_dec = enc["W_dec"]
    fields: dict[str, Any] = {}
    encoder = _build_encoder(arch, cfg, tensors, enc, fields, apply_b, d_sae,
                             cfg_path, w_path, hint)
    lam_value, conversion, factor = _lam(cfg, arch, s, W_dec)
    if lam is not None:
        lam_value, conversion = lam, "lam given by the caller"
    meta = {
        "library": LIBRARY,
        "file": str(w_path),
        "config_file": str(cfg_path),
        "architecture": arch,
        "sae_lens_config_version": "pre-6.0" if cfg.get("_pre6") else "6.x",
        "input_transform": input_transform,
        "conventions": {
            "orientation": "W_enc [d_in, d_sae], W_dec [d_sae, d_in] (kept)",
            "apply_b_dec_to_input": apply_b,
            "normalize_activations": norm,
            "activation_scaling_factor": s,
            "reshape_activations": cfg.get("reshape_activations", "none"),
            "folded": notes,
        },
        "lam_conversion": conversion,
        "lam_factor": factor,
        "sae_lens_config": json.loads(json.dumps(raw_cfg, default=str)),
        **fields,
    }
    return Dictionary.from_decoder(W_dec, b_dec, lam=lam_value, encoder=encoder, meta=meta)


def _encoder_tensors(
    cfg: dict[str, Any], arch: str, tensors: dict[str, torch.Tensor], W_enc: torch.Tensor,
    W_dec: torch.Tensor, b_dec: torch.Tensor, d_sae: int, w_path: str | Path, notes: list[str],
) -> dict[str, torch.Tensor]:
    """``W_enc``, ``W_dec``, ``b_dec`` and (not gated) ``b_enc``, with the decoder norms folded
    into the encoder where ``rescale_acts_by_decoder_norm`` is set (TopK kinds)."""
    enc: dict[str, torch.Tensor] = {"W_enc": W_enc, "W_dec": W_dec, "b_dec": b_dec}
    if arch != "gated":
        enc["b_enc"] = check_shape(require(tensors, "b_enc", w_path), (d_sae,), "b_enc", w_path)
    if cfg.get("rescale_acts_by_decoder_norm") and arch in ("topk", "batchtopk",
                                                            "matryoshka_batchtopk"):
        # pre·‖W_dec‖ selects and scales the codes; fold the norms into the encoder (exact).
        n = W_dec.norm(dim=1)
        enc.update(W_enc=W_enc * n, b_enc=enc["b_enc"] * n, W_dec=W_dec / n[:, None])
        notes.append("rescale_acts_by_decoder_norm folded into the encoder")
    return enc


def _architecture_and_sizes(cfg: dict[str, Any], cfg_path: str | Path) -> tuple[str, int, int]:
    """The supported architecture, ``d_in`` and ``d_sae`` of a normalised config, or raise."""
    arch = cfg.get("architecture")
    if arch not in SUPPORTED:
        raise DictoptInputError(
            f"{cfg_path}: unknown or unsupported architecture {arch!r}; supported: "
            f"{', '.join(SUPPORTED)}"
        )
    for key in ("d_in", "d_sae"):
        if key not in cfg:
            raise DictoptInputError(f"{cfg_path}: missing key {key!r}")
    d_in, d_sae = as_int(cfg["d_in"], "d_in", cfg_path), as_int(cfg["d_sae"], "d_sae", cfg_path)
    return arch, d_in, d_sae


def _fold_finetuning_scale(
    cfg: dict[str, Any], tensors: dict[str, torch.Tensor], W_dec: torch.Tensor, d_sae: int,
    w_path: str | Path, hint: str, notes: list[str],
) -> torch.Tensor:
    """``W_dec`` with the pre-6.0 fine-tuning scale folded in (codes were multiplied by it)."""
    sf = tensors.get("scaling_factor")
    if cfg.get("finetuning_scaling_factor"):
        if sf is None:
            raise DictoptInputError(
                f"{w_path}: missing tensor 'scaling_factor' ({CONFIG_FILE} sets "
                "finetuning_scaling_factor = true)"
            )
    if sf is not None:
        check_shape(sf, (d_sae,), "scaling_factor", w_path, hint)
        if not bool(torch.allclose(sf, torch.ones_like(sf))):
            if not cfg.get("finetuning_scaling_factor"):
                raise DictoptInputError(
                    f"{w_path}: tensor 'scaling_factor' is not all ones but {CONFIG_FILE} "
                    "has finetuning_scaling_factor = false; the SAE is inconsistent"
                )
            W_dec = W_dec * sf[:, None]
            notes.append("finetuning scaling_factor folded into W_dec")
    return W_dec


def _normalisation(
    norm: Any, W_enc: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor,
    scaling_factor: Callable[[], float], cfg_path: str | Path, allow_input_transform: bool,
    notes: list[str],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float | None, str | None]:
    """Fold SAELens's activation normalisation into the weights, or name the input transform.

    Returns ``(W_enc, W_dec, b_dec, s, input_transform)``: ``s`` is the folded scaling factor
    (None unless ``expected_average_only_in``), ``input_transform`` the per-point map left to
    the caller (None unless allowed).
    """
    s = None
    input_transform = None
    if norm == "expected_average_only_in":
        s = scaling_factor()
        W_enc, W_dec, b_dec = W_enc * s, W_dec / s, b_dec / s
        notes.append(f"activation scaling factor {s:.6g} folded into the weights")
    elif norm in INPUT_TRANSFORMS:
        if not allow_input_transform:
            raise DictoptInputError(
                f"{cfg_path}: normalize_activations = {norm!r} rescales every input point "
                "separately; that map is not part of a dictionary. Load with "
                "allow_input_transform=True and check transformed activations"
            )
        input_transform = norm
    elif norm != "none":
        raise DictoptInputError(
            f"{cfg_path}: normalize_activations = {norm!r} is not supported (fold it into the "
            "weights first, as SAELens does at the end of training)"
        )
    return W_enc, W_dec, b_dec, s, input_transform


def _build_encoder(
    arch: str, cfg: dict[str, Any], tensors: dict[str, torch.Tensor],
    enc: dict[str, torch.Tensor], fields: dict[str, Any], apply_b: bool, d_sae: int,
    cfg_path: str | Path, w_path: str | Path, hint: str,
) -> Any:
    """The encoder of one SAELens architecture; records ``k``/``threshold`` in ``fields``."""
    W_enc, b_dec = enc["W_enc"], enc["b_dec"]
    if arch == "standard":
        return build_sae("relu", enc, apply_b_dec_to_input=apply_b, where=w_path)
    if arch == "topk":
        k = as_int(cfg.get("k"), "k", cfg_path)
        fields["k"] = k
        return build_sae("topk", enc, apply_b_dec_to_input=apply_b, where=w_path, k=k)
    if arch == "jumprelu":
        if "threshold" in tensors:
            thr = tensors["threshold"]
        elif "log_threshold" in tensors:
            thr = torch.exp(tensors["log_threshold"])
        else:
            raise DictoptInputError(f"{w_path}: missing tensor 'threshold' (jumprelu)")
        check_shape(thr, (d_sae,), "threshold", w_path, hint)
        # SAELens: ReLU(pre)·[pre > θ] = pre·[pre > max(θ, 0)], exactly.
        enc["threshold"] = thr.clamp(min=0)
        return build_sae("jumprelu", enc, apply_b_dec_to_input=apply_b, where=w_path)
    if arch == "gated":
        parts = {n: check_shape(require(tensors, n, w_path), (d_sae,), n, w_path)
                 for n in ("b_gate", "b_mag", "r_mag")}
        return GatedEncoder(W_enc, parts["b_gate"].to(W_enc.dtype),
                            parts["b_mag"].to(W_enc.dtype), parts["r_mag"].to(W_enc.dtype),
                            b_dec.to(W_enc.dtype), apply_b_dec_to_input=apply_b)
    # batchtopk / matryoshka_batchtopk training checkpoint
    thr = require(tensors, "topk_threshold", w_path).reshape(-1)
    if thr.numel() != 1:
        raise DictoptInputError(f"{w_path}: 'topk_threshold' must be a scalar")
    k = float(cfg.get("k", 1.0))
    fields["k"] = k
    fields["threshold"] = float(thr[0])
    enc["threshold"] = thr
    return build_sae("batchtopk", enc, apply_b_dec_to_input=apply_b, where=w_path,
                     k=min(k, float(d_sae)))


def _lam(
    cfg: dict[str, Any], arch: str, s: float | None, W_dec: torch.Tensor
) -> tuple[float | None, str, float | None]:
    """λ, a sentence saying how, and the factor λ / l1_coefficient."""
    if arch != "standard":
        why = {"gated": "gated SAEs put the L1 on the gate pre-activations, not the codes"}
        return None, (why.get(arch, f"{arch} has no L1 objective")
                      + ": lam is None; use an implied λ"), None
    l1 = cfg.get("l1_coefficient")
    if l1 is None:
        return None, "no l1_coefficient recorded in cfg.json: lam is None", None
    if float(cfg.get("lp_norm", 1.0)) != 1.0:
        return None, f"lp_norm = {cfg['lp_norm']} is not an L1 penalty: lam is None", None
    if cfg.get("mse_loss_normalization"):
        return None, (f"mse_loss_normalization = {cfg['mse_loss_normalization']!r} rescales "
                      "the reconstruction term per batch: no exact lam"), None
    if cfg.get("_pre6") and cfg.get("scale_sparsity_penalty_by_decoder_norm") is False:
        dev = float((W_dec.norm(dim=1) - 1).abs().max())
        if dev > 1e-3:
            return None, ("pre-6.0 L1 not weighted by decoder norm with a non-unit decoder "
                          f"(max |norm - 1| = {dev:.3g}): no exact lam"), None
    factor = 0.5 / (s or 1.0)
    how = "lam = l1_coefficient / 2" + (f" / activation scaling factor {s:.6g}" if s else "")
    return float(l1) * factor, f"{how}: the SAELens loss is 2 x the canonical loss", factor


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_saelens(dictionary: Dictionary, folder: str | Path) -> Path:
    """Write a SAELens v6 inference folder (``cfg.json`` + ``sae_weights.safetensors``).

    ReLU → ``standard``, TopK → ``topk``, BatchTopK/Matryoshka → ``jumprelu`` with the global
    threshold (as SAELens saves them), JumpReLU → ``jumprelu``, gated → ``gated``. Raw weights
    are written, so ``SAE.load_from_disk`` reproduces dictopt's codes and reconstructions.

    Parameters
    ----------
    dictionary, folder:
        As for :func:`dictopt.io.dictionary_learning.export_dictionary_learning`.

    Returns
    -------
    Path
        ``folder``; a :class:`DictoptInputError` for an encoder SAELens cannot hold.
    """
    from safetensors.torch import save_file

    from dictopt.solvers.sae import BatchTopKSAE, JumpReLUSAE, ReLUSAE, TopKSAE

    enc = dictionary.encoder
    W_dec = dictionary.decoder.detach().cpu()
    dtype = W_dec.dtype
    b_dec = dictionary.bias.detach().cpu().to(dtype)
    K, d = W_dec.shape
    cfg: dict[str, Any] = {"d_in": d, "d_sae": K}
    details: dict[str, Any] = {}
    if isinstance(enc, GatedEncoder):
        tensors = {"W_enc": enc.W_enc, "b_gate": enc.b_gate, "b_mag": enc.b_mag,
                   "r_mag": enc.r_mag}
        arch, apply_b = "gated", enc.apply_b_dec_to_input
    elif isinstance(enc, (ReLUSAE, TopKSAE, JumpReLUSAE)):
        tensors = {"W_enc": enc.W_enc, "b_enc": enc.b_enc}
        apply_b = enc.cfg.apply_b_dec_to_input
        if isinstance(enc, BatchTopKSAE):
            arch = "jumprelu"
            tensors["threshold"] = torch.full((K,), float(enc.topk_threshold))
            details = {"k": enc.cfg.k, "training_architecture": enc.architecture}
        elif isinstance(enc, TopKSAE):
            arch = "topk"
            k = int(round(float(enc.cfg.k)))
            cfg.update(k=k, rescale_acts_by_decoder_norm=False)
        elif isinstance(enc, JumpReLUSAE):
            arch = "jumprelu"
            tensors["threshold"] = enc.threshold
        else:
            arch = "standard"
            if dictionary.lam is not None:
                details = {"l1_coefficient": 2 * dictionary.lam, "lp_norm": 1.0}
    else:
        name = type(enc).__name__ if enc is not None else "none (optimal lasso codes)"
        raise DictoptInputError(
            f"export: SAELens has no architecture for the encoder {name}; supported: ReLU, "
            "TopK, BatchTopK/Matryoshka (as JumpReLU), JumpReLU, gated"
        )
    out = Path(folder)
    weights = {"W_dec": W_dec, "b_dec": b_dec}
    weights.update({k: v.detach().cpu().to(dtype) for k, v in tensors.items()})
    cfg.update(_export_config(arch, dtype, apply_b, details))
    with atomic_folder(out, owned=DICTIONARY_FILES) as tmp:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
    return out


def _export_config(
    arch: str, dtype: torch.dtype, apply_b: Any, details: dict[str, Any]
) -> dict[str, Any]:
    """The architecture-independent keys of an exported ``cfg.json``."""
    return {
        "architecture": arch,
        "dtype": dtype_name(dtype),
        "device": "cpu",
        "apply_b_dec_to_input": bool(apply_b),
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": EXPORT_VERSION,
            "sae_lens_training_version": None,
            "exported_by": "dictopt",
            "training_architecture_details": details,
        },
    }
