"""Helpers shared by the foreign-format loaders: reading files with clear errors, orienting
matrices against declared shapes, and building dictopt SAE encoders from foreign weights.

Every error names the file and, where it applies, the key.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from dictopt.validation import DictoptInputError


def read_json(path: str | Path) -> dict[str, Any]:
    """Parse a JSON object with clear errors for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise DictoptInputError(f"{path}: no such file")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DictoptInputError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise DictoptInputError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def torch_load(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True`` (no code runs) and clear errors."""
    path = Path(path)
    if not path.is_file():
        raise DictoptInputError(f"{path}: no such file")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError,
            ValueError) as err:
        # torch's own text suggests weights_only=False, which would run the file's code.
        unsafe = isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err)
        detail = ("it holds Python objects other than tensors, numbers and strings, which "
                  "dictopt never loads (loading them could run code)") if unsafe else \
            f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        raise DictoptInputError(
            f"{path}: corrupt or unreadable torch file ({detail}); save a plain state dict "
            "of tensors"
        ) from err


def require(tensors: dict[str, Any], key: str, where: str | Path) -> torch.Tensor:
    """``tensors[key]`` as a tensor, or an error naming the file and key."""
    if key not in tensors:
        have = ", ".join(sorted(str(k) for k in tensors)) or "none"
        raise DictoptInputError(f"{where}: missing tensor {key!r} (found: {have})")
    value = tensors[key]
    if not isinstance(value, torch.Tensor):
        raise DictoptInputError(f"{where}: {key!r} is a {type(value).__name__}, not a tensor")
    if not value.is_floating_point() and key not in ("k", "group_sizes"):
        value = value.to(torch.float32)
    return value


def check_shape(
    tensor: torch.Tensor, expected: tuple[int, ...], key: str, where: str | Path, hint: str = ""
) -> torch.Tensor:
    """Require an exact shape, naming the file, key and what the config declared."""
    if tuple(tensor.shape) != tuple(expected):
        extra = f" ({hint})" if hint else ""
        transposed = tensor.ndim == 2 and tuple(tensor.shape[::-1]) == tuple(expected)
        note = "; it is the transpose of the expected layout" if transposed else ""
        raise DictoptInputError(
            f"{where}: tensor {key!r} has shape {tuple(tensor.shape)}, expected "
            f"{tuple(expected)}{extra}{note}"
        )
    return tensor


def orient_rows(
    matrix: torch.Tensor,
    *,
    d_in: int | None,
    d_sae: int | None,
    key: str,
    where: str | Path,
) -> torch.Tensor:
    """Return ``matrix`` as ``[d_sae, d_in]`` (atoms as rows) when its layout is unambiguous.

    Used only where a format does not fix the orientation. The declared sizes decide: a matrix
    ``[d_sae, d_in]`` is kept, ``[d_in, d_sae]`` transposed. A square matrix, or sizes that are
    unknown, is an error: dictopt never guesses an orientation.
    """
    if matrix.ndim != 2:
        raise DictoptInputError(
            f"{where}: {key!r} must be a 2-D matrix, got shape {tuple(matrix.shape)}"
        )
    rows, cols = matrix.shape
    if d_in is None or d_sae is None:
        raise DictoptInputError(
            f"{where}: cannot tell the orientation of {key!r} {tuple(matrix.shape)} without "
            "d_in and d_sae; supply them"
        )
    if d_in == d_sae:
        raise DictoptInputError(
            f"{where}: {key!r} is square ({rows}x{cols}) with d_in = d_sae = {d_in}; its "
            "orientation is ambiguous and dictopt does not guess. Save it in a format with a "
            "fixed layout (SAELens W_dec [d_sae, d_in]) or pass orientation explicitly"
        )
    if (rows, cols) == (d_sae, d_in):
        return matrix
    if (rows, cols) == (d_in, d_sae):
        return matrix.T
    raise DictoptInputError(
        f"{where}: {key!r} has shape {tuple(matrix.shape)}, which matches neither "
        f"[d_sae, d_in] = [{d_sae}, {d_in}] nor its transpose"
    )


def as_int(value: Any, name: str, where: str | Path) -> int:
    """An integer from a config value or a 0-d tensor buffer."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise DictoptInputError(f"{where}: {name!r} must be a single number")
        value = value.item()
    try:
        out = int(value)
    except (TypeError, ValueError) as err:
        raise DictoptInputError(f"{where}: {name!r} must be an integer, got {value!r}") from err
    if out != value:
        raise DictoptInputError(f"{where}: {name!r} must be an integer, got {value!r}")
    return out


def fold_input_bias(
    W_enc_DK: torch.Tensor, b_enc_K: torch.Tensor, b_dec_D: torch.Tensor
) -> torch.Tensor:
    """``b_enc`` for an encoder that sees ``x`` equal to one that sees ``x - b_dec``.

    ``(x - b) W + c = x W + (c - b W)``: exact, so either convention can be written.
    """
    return b_enc_K - b_dec_D @ W_enc_DK


def unfold_input_bias(
    W_enc_DK: torch.Tensor, b_enc_K: torch.Tensor, b_dec_D: torch.Tensor
) -> torch.Tensor:
    """Inverse of :func:`fold_input_bias`: ``b_enc`` for an encoder that sees ``x - b_dec``."""
    return b_enc_K + b_dec_D @ W_enc_DK


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` → ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def build_sae(
    architecture: str,
    tensors: dict[str, torch.Tensor],
    *,
    apply_b_dec_to_input: bool,
    where: str | Path,
    **fields: Any,
) -> Any:
    """A dictopt SAE of ``architecture`` holding the given (SAELens-named) tensors.

    ``tensors`` holds ``W_enc [d, K]``, ``b_enc [K]``, ``W_dec [K, d]``, ``b_dec [d]`` and any
    extra (``threshold``). The dtype follows ``W_dec``; no training state is needed.
    """
    from dictopt.solvers.sae import make_config, make_sae

    W_dec = tensors["W_dec"]
    dtype = W_dec.dtype if W_dec.dtype in (torch.float32, torch.float64) else torch.float32
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in tensors.items()}
    try:
        cfg = make_config(
            architecture,
            d_in=int(W_dec.shape[1]),
            d_sae=int(W_dec.shape[0]),
            dtype=dtype_name(dtype),
            apply_b_dec_to_input=apply_b_dec_to_input,
            **fields,
        )
        sae = make_sae(cfg, seed=0)
        sae.load_named(tensors)
    except DictoptInputError as err:
        raise DictoptInputError(f"{where}: {err}") from err
    return sae.eval().requires_grad_(False)
