"""dictionary_learning (saprmarks/dictionary_learning) folders: ``ae.pt`` + ``config.json``.

``ae.pt`` is ``torch.save(ae.state_dict())``; ``config.json`` is ``{"trainer": {...},
"buffer": {...}}`` with ``trainer.dict_class``, ``activation_dim``, ``dict_size`` and the
trainer's hyperparameters. Layouts by ``dict_class`` (``nn.Linear`` stores ``weight`` as
``[out, in]``, so ``encoder.weight`` is ``[d_sae, d_in]`` and ``decoder.weight`` ``[d_in,
d_sae]``, the transpose of SAELens)::

    AutoEncoder          encoder.weight, encoder.bias, decoder.weight, bias (= b_dec)
                         f = ReLU(enc(x - bias));  x̂ = dec(f) + bias
    AutoEncoderNew       encoder.weight, encoder.bias, decoder.weight, decoder.bias (= b_dec)
                         f = ReLU(enc(x));  x̂ = dec(f)
    GatedAutoEncoder     encoder.weight (no bias), gate_bias, mag_bias, r_mag, decoder.weight,
                         decoder_bias
    AutoEncoderTopK      encoder.weight, encoder.bias, decoder.weight, b_dec, k, threshold
                         f = TopK_k(ReLU(enc(x - b_dec)))
    BatchTopKSAE         same tensors; inference f = ReLU(pre)·[ReLU(pre) > threshold]
    MatryoshkaBatchTopKSAE  W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec, k,
                         threshold, group_sizes (SAELens orientation!); inference as BatchTopK
    JumpReluAutoEncoder  W_enc, b_enc, W_dec, b_dec, threshold (SAELens orientation);
                         f = ReLU(pre·[pre > θ]) on x (no b_dec subtraction)

Activation normalisation (``normalize_activations=True`` in ``trainSAE``) is folded into the
saved ``ae.pt`` by ``scale_biases(norm_factor)``, so the file acts on raw activations; its
codes are ``norm_factor ×`` the training codes and an L1 coefficient ``c`` of training becomes
``c · norm_factor`` in raw units. The interrupted-training backup, also named ``ae.pt``, is a
dict ``{"step", "ae", "optimizer", "config", "norm_factor"}`` whose weights are *not* folded;
it is refused with an error that says so.

λ (THEORY §1): the standard trainers minimise ``mean_n Σ_i (x - x̂)² + l1_penalty · mean_n
Σ_k f_k ‖d_k‖`` (``StandardTrainer`` with unit-norm decoder, ``StandardTrainerAprilUpdate``
with the decoder-norm weight), which is twice the canonical loss with ``λ = l1_penalty / 2``
(times ``norm_factor`` when activations were normalised). TopK, BatchTopK, Matryoshka and
JumpReLU have no L1 term: ``λ = None``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dictopt.atomic import atomic_folder
from dictopt.io._common import (
    as_int,
    build_sae,
    check_shape,
    read_json,
    require,
    torch_load,
    unfold_input_bias,
)
from dictopt.io.encoders import GatedEncoder
from dictopt.io.native import DICTIONARY_FILES
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError

WEIGHTS_FILE = "ae.pt"
CONFIG_FILE = "config.json"
LIBRARY = "dictionary_learning"

#: Backup checkpoints written while training (resumable, not an SAE file).
BACKUP_KEYS = {"step", "ae", "optimizer"}

#: dict_class → the key set that identifies it when config.json is absent.
SIGNATURES: dict[str, set[str]] = {
    "AutoEncoder": {"encoder.weight", "encoder.bias", "decoder.weight", "bias"},
    "AutoEncoderNew": {"encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"},
    "GatedAutoEncoder": {"encoder.weight", "decoder.weight", "decoder_bias", "r_mag",
                         "gate_bias", "mag_bias"},
    "AutoEncoderTopK": {"encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k",
                        "threshold"},
    "MatryoshkaBatchTopKSAE": {"W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold",
                               "group_sizes"},
    "JumpReluAutoEncoder": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
}
#: Names the trainers' configs use for the same classes.
ALIASES = {"BatchTopKSAE": "AutoEncoderTopK"}
L1_CLASSES = {"AutoEncoder", "AutoEncoderNew"}


def _resolve_paths(path: str | Path) -> tuple[Path, Path | None]:
    p = Path(path)
    if p.is_dir():
        weights = p / WEIGHTS_FILE
        if not weights.is_file():
            raise DictoptInputError(f"{p}: no {WEIGHTS_FILE} (a dictionary_learning folder holds "
                                    f"{WEIGHTS_FILE} and {CONFIG_FILE})")
        cfg = p / CONFIG_FILE
        return weights, cfg if cfg.is_file() else None
    cfg = p.parent / CONFIG_FILE
    return p, cfg if cfg.is_file() else None


def _dict_class(state: dict[str, Any], trainer: dict[str, Any], where: Path) -> str:
    declared = trainer.get("dict_class")
    keys = set(state)
    if declared is not None:
        declared = str(declared)
        name = ALIASES.get(declared, declared)
        if name not in SIGNATURES:
            raise DictoptInputError(
                f"{where.parent / CONFIG_FILE}: unknown dict_class {declared!r}; known: "
                f"{', '.join(sorted(set(SIGNATURES) | set(ALIASES)))}"
            )
        missing = SIGNATURES[name] - keys
        if missing:
            raise DictoptInputError(
                f"{where}: dict_class {declared!r} needs tensors {sorted(missing)} "
                f"(found: {sorted(keys)})"
            )
        return declared
    matches = [n for n, sig in SIGNATURES.items() if sig <= keys]
    # JumpReLU's keys are a subset of Matryoshka's: prefer the most specific signature.
    matches.sort(key=lambda n: -len(SIGNATURES[n]))
    if not matches:
        raise DictoptInputError(
            f"{where}: tensors {sorted(keys)} match no known dictionary_learning class "
            f"({', '.join(sorted(SIGNATURES))}); add config.json with trainer.dict_class"
        )
    return matches[0]


def read_state(weights: Path) -> dict[str, Any]:
    """The state dict in ``ae.pt``; a clear error for the interrupted-training backup.

    Parameters
    ----------
    weights:
        The ``.pt`` file.

    Returns
    -------
    dict[str, Any]
        Tensor name → tensor, with torch.compile's ``_orig_mod.`` prefix removed.

    Raises
    ------
    DictoptInputError
        When the file holds no dict or is the interrupted-training backup.
    """
    state = torch_load(weights)
    if not isinstance(state, dict):
        raise DictoptInputError(f"{weights}: expected a state dict, got {type(state).__name__}")
    if BACKUP_KEYS <= set(state):
        nf = state.get("norm_factor")
        raise DictoptInputError(
            f"{weights}: this is dictionary_learning's interrupted-training backup "
            f"(keys {sorted(state)}), not a finished SAE: its weights under 'ae' act on "
            f"activations divided by norm_factor={nf} and its biases are not rescaled. "
            "Finish or resume training so that trainSAE writes the final ae.pt"
        )
    # torch.compile prefixes every key with "_orig_mod.".
    if state and all(str(k).startswith("_orig_mod.") for k in state):
        state = {str(k).removeprefix("_orig_mod."): v for k, v in state.items()}
    return state


def load_dictionary_learning(path: str | Path, *, lam: float | None = None) -> Dictionary:
    """Load a dictionary_learning ``ae.pt`` (folder or file) as a canonical Dictionary.

    Parameters
    ----------
    path:
        The folder holding ``ae.pt`` (and, ideally, ``config.json``) or the ``.pt`` file.
    lam:
        Override λ (otherwise ``l1_penalty / 2`` for L1 trainers, ``None`` for the others).

    Returns
    -------
    Dictionary
        The canonical dictionary (unit atoms ``[K, d]``, bias ``[d]``) with the library's
        encoder; ``meta`` records the class, architecture, conventions and λ conversion.
    """
    weights, cfg_path = _resolve_paths(path)
    state = read_state(weights)
    cfg = read_json(cfg_path) if cfg_path is not None else {}
    trainer = cfg.get("trainer", {}) if isinstance(cfg.get("trainer", {}), dict) else {}
    declared = _dict_class(state, trainer, weights)
    cls = ALIASES.get(declared, declared)

    where = str(weights)
    extra: dict[str, Any] = {}
    W_enc, W_dec, b_dec, b_enc = _weights_of(state, cls, where)
    d, K = W_enc.shape
    _check_sizes(trainer, d, K, cfg_path, weights)
    check_shape(W_dec, (K, d), "decoder" if "decoder.weight" in state else "W_dec", where,
                "decoder rows must match the encoder")
    check_shape(b_dec, (d,), "decoder bias", where)
    encoder, architecture = _encoder_of(cls, declared, state, trainer, (W_enc, W_dec, b_dec,
                                                                         b_enc), where, extra)

    l1 = trainer.get("l1_penalty")
    norm_factor = trainer.get("norm_factor")
    factor = None
    if lam is None and cls in L1_CLASSES and l1 is not None:
        scale = float(norm_factor) if norm_factor else 1.0
        lam = float(l1) * scale / 2
        factor = 0.5 * scale
    meta = {
        "library": LIBRARY,
        "file": str(weights),
        "config_file": str(cfg_path) if cfg_path else None,
        "dict_class": declared,
        "architecture": architecture,
        "trainer_class": trainer.get("trainer_class"),
        "conventions": {
            "orientation": "nn.Linear: encoder.weight [d_sae, d_in], decoder.weight "
            "[d_in, d_sae] (transposed on load)" if "decoder.weight" in state
            else "W_enc [d_in, d_sae], W_dec [d_sae, d_in] (SAELens orientation)",
            "activation_normalisation": "folded into the saved weights by trainSAE "
            f"(norm_factor={norm_factor})" if norm_factor else "none recorded",
        },
        "lam_conversion": (
            f"lam = l1_penalty * norm_factor / 2 = {l1} * {norm_factor or 1} / 2"
            if factor is not None else
            "no L1 objective (or no l1_penalty recorded): lam is None; use an implied λ"
        ),
        "lam_factor": factor,
        "trainer": json.loads(json.dumps(trainer, default=str)),
        **extra,
    }
    return Dictionary.from_decoder(W_dec, b_dec, lam=lam, encoder=encoder, meta=meta)


def _weights_of(
    state: dict[str, Any], cls: str, where: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(W_enc [d, K], W_dec [K, d], b_dec [d], b_enc [K] or None)`` in SAELens orientation."""
    if cls in ("MatryoshkaBatchTopKSAE", "JumpReluAutoEncoder"):
        W_enc = require(state, "W_enc", where)
        W_dec = require(state, "W_dec", where)
        b_dec = require(state, "b_dec", where)
        b_enc = require(state, "b_enc", where)
        return W_enc, W_dec, b_dec, b_enc
    enc_w = require(state, "encoder.weight", where)
    W_enc = enc_w.T
    W_dec = require(state, "decoder.weight", where).T
    bias_key = {"AutoEncoder": "bias", "AutoEncoderNew": "decoder.bias",
                "GatedAutoEncoder": "decoder_bias"}.get(cls, "b_dec")
    b_dec = require(state, bias_key, where)
    b_enc = require(state, "encoder.bias", where) if "encoder.bias" in state else None
    return W_enc, W_dec, b_dec, b_enc


def _check_sizes(
    trainer: dict[str, Any], d: int, K: int, cfg_path: Path | None, weights: Path
) -> None:
    """Orientation: nn.Linear fixes it; the config's sizes must agree with it."""
    d_in = trainer.get("activation_dim")
    d_sae = trainer.get("dict_size")
    for key, expected, actual in (("activation_dim", d_in, d), ("dict_size", d_sae, K)):
        if expected is not None and int(expected) != int(actual):
            raise DictoptInputError(
                f"{cfg_path}: trainer.{key} = {expected} disagrees with the weights in "
                f"{weights.name} ({'d_in' if key == 'activation_dim' else 'd_sae'} = {actual})"
            )


def _encoder_of(
    cls: str, declared: str, state: dict[str, Any], trainer: dict[str, Any],
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None],
    where: str, extra: dict[str, Any],
) -> tuple[Any, str]:
    """The encoder of one dictionary_learning class and its architecture name.

    Records ``k``, ``threshold``, ``group_sizes`` and clamped thresholds in ``extra``.
    """
    W_enc, W_dec, b_dec, b_enc = weights
    K = W_enc.shape[1]
    if cls == "GatedAutoEncoder":
        tensors = {"W_enc": W_enc, "b_gate": require(state, "gate_bias", where),
                   "b_mag": require(state, "mag_bias", where),
                   "r_mag": require(state, "r_mag", where)}
        for key, t in tensors.items():
            if key != "W_enc":
                check_shape(t, (K,), key, where)
        encoder: Any = GatedEncoder(
            W_enc, tensors["b_gate"], tensors["b_mag"], tensors["r_mag"], b_dec,
            apply_b_dec_to_input=True,
        )
        return encoder, "gated"
    assert b_enc is not None
    check_shape(b_enc, (K,), "encoder bias", where)
    enc_t = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    if cls in ("AutoEncoder", "AutoEncoderNew"):
        encoder = build_sae("relu", enc_t, apply_b_dec_to_input=cls == "AutoEncoder",
                            where=where)
        return encoder, "relu"
    if cls == "JumpReluAutoEncoder":
        thr = check_shape(require(state, "threshold", where), (K,), "threshold", where)
        # ReLU(pre·[pre > θ]) = pre·[pre > max(θ, 0)]: a negative θ acts as 0, exactly.
        extra["negative_thresholds_clamped"] = int((thr < 0).sum())
        enc_t["threshold"] = thr.clamp(min=0)
        return build_sae("jumprelu", enc_t, apply_b_dec_to_input=False, where=where), "jumprelu"
    k = as_int(state.get("k", trainer.get("k")), "k", where)
    thr = require(state, "threshold", where).reshape(-1)
    if thr.numel() != 1:
        raise DictoptInputError(f"{where}: 'threshold' must be a scalar buffer")
    extra["k"] = k
    if declared == "AutoEncoderTopK":
        # Inference keeps the top k per row (encode's default use_threshold=False).
        return build_sae("topk", enc_t, apply_b_dec_to_input=True, where=where, k=k), "topk"
    # BatchTopK / Matryoshka inference: ReLU(pre)·[ReLU(pre) > θ], the same as
    # dictopt's BatchTopK inference for any θ (θ < 0 means plain ReLU).
    enc_t["threshold"] = thr
    encoder = build_sae("batchtopk", enc_t, apply_b_dec_to_input=True,
                        where=where, k=float(min(k, K)))
    extra["threshold"] = float(thr[0])
    if cls == "MatryoshkaBatchTopKSAE":
        extra["group_sizes"] = [int(g) for g in state["group_sizes"].tolist()]
    return encoder, "batchtopk"


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_dictionary_learning(dictionary: Dictionary, folder: str | Path) -> Path:
    """Write ``ae.pt`` + ``config.json`` that dictionary_learning's classes load.

    Supported encoders: dictopt ReLU (→ ``AutoEncoder``, or ``AutoEncoderNew`` when the
    encoder does not subtract ``b_dec``), TopK (→ ``AutoEncoderTopK``), BatchTopK and
    Matryoshka (→ ``BatchTopKSAE``), JumpReLU (→ ``JumpReluAutoEncoder``) and gated
    (→ ``GatedAutoEncoder``). Raw (non-canonical) weights are written, so the library's
    ``encode``/``decode`` reproduce dictopt's reconstructions exactly.

    Parameters
    ----------
    dictionary:
        The dictionary with one of the encoders above.
    folder:
        The output folder (written atomically).

    Returns
    -------
    Path
        The folder.
    """
    from dictopt.solvers.sae import JumpReLUSAE, ReLUSAE, TopKSAE

    enc = dictionary.encoder
    W_dec = dictionary.decoder.detach().cpu()
    b_dec = dictionary.bias.detach().cpu()
    K, d = W_dec.shape
    state: dict[str, torch.Tensor]
    if isinstance(enc, GatedEncoder):
        b_gate, b_mag = enc.b_gate, enc.b_mag
        if not enc.apply_b_dec_to_input:
            b_gate = unfold_input_bias(enc.W_enc, b_gate, b_dec)
            b_mag = unfold_input_bias(enc.W_enc * torch.exp(enc.r_mag), b_mag, b_dec)
        state = {"decoder_bias": b_dec, "encoder.weight": enc.W_enc.T, "r_mag": enc.r_mag,
                 "gate_bias": b_gate, "mag_bias": b_mag, "decoder.weight": W_dec.T}
        dict_class = "GatedAutoEncoder"
        extra: dict[str, Any] = {}
    elif isinstance(enc, (ReLUSAE, TopKSAE, JumpReLUSAE)):
        W_enc, b_enc = enc.W_enc.detach().cpu(), enc.b_enc.detach().cpu()
        extra = {}
        if isinstance(enc, JumpReLUSAE):
            if enc.cfg.apply_b_dec_to_input:  # JumpReluAutoEncoder encodes x itself
                b_enc = b_enc - b_dec @ W_enc
            state = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec,
                     "threshold": enc.threshold.detach().cpu()}
            dict_class = "JumpReluAutoEncoder"
        elif isinstance(enc, ReLUSAE):
            if enc.cfg.apply_b_dec_to_input:
                state = {"bias": b_dec, "encoder.weight": W_enc.T, "encoder.bias": b_enc,
                         "decoder.weight": W_dec.T}
                dict_class = "AutoEncoder"
            else:
                state = {"encoder.weight": W_enc.T, "encoder.bias": b_enc,
                         "decoder.weight": W_dec.T, "decoder.bias": b_dec}
                dict_class = "AutoEncoderNew"
            extra["l1_penalty"] = 2 * dictionary.lam if dictionary.lam is not None else None
        else:
            state, dict_class, extra["k"] = _topk_state(enc, W_enc, b_enc, W_dec, b_dec)
    else:
        name = type(enc).__name__ if enc is not None else "none (optimal lasso codes)"
        raise DictoptInputError(
            f"export: dictionary_learning has no class for the encoder {name}; supported: "
            "ReLU, TopK, BatchTopK, Matryoshka (as BatchTopK), JumpReLU, gated"
        )
    out = Path(folder)
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}
    trainer = {"dict_class": dict_class, "activation_dim": d, "dict_size": K,
               "exported_by": "dictopt", **extra}
    with atomic_folder(out, owned=DICTIONARY_FILES) as tmp:
        torch.save(state, tmp / WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps({"trainer": trainer}, indent=4) + "\n")
    return out


def _topk_state(
    enc: Any, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor
) -> tuple[dict[str, torch.Tensor], str, int]:
    """The ``AutoEncoderTopK`` / ``BatchTopKSAE`` state of a TopK or BatchTopK encoder, the
    class name and the integer ``k``."""
    from dictopt.solvers.sae import BatchTopKSAE

    if not enc.cfg.apply_b_dec_to_input:
        b_enc = unfold_input_bias(W_enc, b_enc, b_dec)
    k = enc.cfg.k
    if isinstance(enc, BatchTopKSAE):
        thr = float(enc.topk_threshold)
        dict_class = "BatchTopKSAE"
    else:
        thr = -1.0
        dict_class = "AutoEncoderTopK"
    k_int = int(round(float(k)))
    if abs(float(k) - k_int) > 1e-9 or k_int < 1:
        raise DictoptInputError(
            f"export: dictionary_learning stores k as an integer, got k = {k}"
        )
    state = {"k": torch.tensor(k_int, dtype=torch.int32),
             "threshold": torch.tensor(thr, dtype=torch.float32),
             "decoder.weight": W_dec.T, "encoder.weight": W_enc.T,
             "encoder.bias": b_enc, "b_dec": b_dec}
    return state, dict_class, k_int
