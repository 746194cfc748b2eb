"""Train an SAE with SAELens's own trainer on a dictopt activation source.

Solvers ``saelens-standard`` (ReLU + L1 weighted by decoder norm) and ``saelens-topk``: the
model, the loss and the optimiser loop are SAELens's (``SAETrainer``); dictopt only feeds it
shuffled batches from any :class:`~dictopt.data.sources.ActivationSource`, saves SAELens's
inference folder and loads it back with :func:`dictopt.io.load`, so the result is checked
exactly as SAELens would have saved it. Needs the ``saelens`` extra.

λ: SAELens's standard loss is ``mean_n[‖x − x̂‖² + l1_coefficient Σ_k f_k ‖W_dec[k]‖]``, twice
the canonical loss of THEORY §1, so ``l1_coefficient = 2λ`` (the loader converts it back).
"""

from __future__ import annotations

import io
import logging
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any

import torch

from dictopt.data.sources import as_source
from dictopt.io import load
from dictopt.problem import Dictionary
from dictopt.solvers.registry import register_solver
from dictopt.solvers.train import B_DEC_INIT_CHOICES, BatchStream, first_rows, initial_bias
from dictopt.validation import DictoptInputError, check_lambda, check_positive_int

log = logging.getLogger(__name__)

#: SAELens trainer options a caller may set (``--set key=value``), with dictopt's defaults.
TRAINER_DEFAULTS: dict[str, Any] = {
    "total_steps": 300,
    "batch_size": 256,
    "lr": 1e-3,
    "lr_end": None,  # None: equal to lr
    "lr_scheduler_name": "constant",
    "lr_warm_up_steps": 0,
    "lr_decay_steps": 0,
    "l1_warm_up_steps": 0,  # standard only: steps over which the L1 coefficient ramps up
    "b_dec_init": "zeros",
    "init_rows": 4096,
    "out_dir": None,
}


@contextmanager
def _without_progress_bar() -> Iterator[None]:
    """Capture stderr while SAELens trains; write back every line but its progress bar's."""
    captured = io.StringIO()
    try:
        with redirect_stderr(captured):
            yield
    finally:
        kept = [line for line in captured.getvalue().replace("\r", "\n").splitlines(True)
                if line.strip() and "Training SAE" not in line]
        sys.stderr.write("".join(kept))


def _require_saelens() -> Any:
    try:
        import sae_lens
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DictoptInputError(
            "the saelens-* solvers need SAELens: pip install 'dictopt[saelens]'"
        ) from exc
    return sae_lens


def train_with_saelens(
    source: Any,
    *,
    architecture: str,
    K: int,
    lam: float | None = None,
    k: int | None = None,
    seed: int = 0,
    progress: bool = True,
    **options: Any,
) -> Dictionary:
    """Train a SAELens ``architecture`` SAE with SAELens's ``SAETrainer`` on ``source``.

    Parameters
    ----------
    source
        Activations (array, tensor, ``.npy`` or shard folder).
    architecture
        ``"standard"`` (needs ``lam``; ``l1_coefficient = 2λ``) or ``"topk"`` (needs ``k``).
    K
        Number of latents (``d_sae``).
    options
        Keys of :data:`TRAINER_DEFAULTS`. ``out_dir``: where SAELens saves the inference
        folder (a temporary folder when omitted). ``b_dec_init``: ``zeros`` (SAELens's own
        default), ``mean`` or ``geometric_median`` of the first ``init_rows`` rows.
    progress
        Show SAELens's progress bar.

    Returns
    -------
    Dictionary
        The saved folder loaded by :func:`dictopt.io.load` (SAELens's encoder kept);
        ``meta["saelens_dir"]`` is the folder when ``out_dir`` was given.
    """
    sl = _require_saelens()
    opts = _options(options, architecture)
    K = check_positive_int(K, "K")
    src = as_source(source)
    sae = _new_sae(sl, architecture, src.d, K, lam, k, seed, opts)
    if opts["b_dec_init"] != "zeros":
        b0 = initial_bias(first_rows(src, int(opts["init_rows"])), opts["b_dec_init"])
        with torch.no_grad():
            sae.b_dec.copy_(b0.to(sae.b_dec.dtype))
    _fit(sae, src, opts, seed, progress, f"SAELens {architecture} SAE, K={K}")
    dictionary = _load_trained(sae, opts["out_dir"])
    dictionary.meta.update(
        solver=f"saelens-{architecture}",
        seed=seed,
        train_config={**opts, "out_dir": None if opts["out_dir"] is None else str(opts["out_dir"])},
    )
    return dictionary


def _options(options: dict[str, Any], architecture: str) -> dict[str, Any]:
    """The trainer options with dictopt's defaults, validated."""
    unknown = sorted(set(options) - set(TRAINER_DEFAULTS))
    if unknown:
        raise DictoptInputError(
            f"unknown option(s) {unknown} for saelens-{architecture}; "
            f"known: {sorted(TRAINER_DEFAULTS)}"
        )
    opts = {**TRAINER_DEFAULTS, **options}
    check_positive_int(opts["total_steps"], "total_steps")
    check_positive_int(opts["batch_size"], "batch_size")
    if opts["b_dec_init"] not in B_DEC_INIT_CHOICES:
        raise DictoptInputError(
            f"b_dec_init must be one of {B_DEC_INIT_CHOICES}, got {opts['b_dec_init']!r}"
        )
    return opts


def _new_sae(sl: Any, architecture: str, d: int, K: int, lam: float | None, k: int | None,
             seed: int, opts: dict[str, Any]) -> Any:
    """A fresh SAELens training SAE (``torch.manual_seed(seed)`` first)."""
    if architecture == "standard":
        lam = check_lambda(lam)
        cfg = sl.StandardTrainingSAEConfig(
            d_in=d, d_sae=K, l1_coefficient=2.0 * lam,
            l1_warm_up_steps=int(opts["l1_warm_up_steps"]),
        )
        sae_cls = sl.StandardTrainingSAE
    elif architecture == "topk":
        if k is None:
            raise DictoptInputError("k: saelens-topk needs k (--set k=...)")
        cfg = sl.TopKTrainingSAEConfig(d_in=d, d_sae=K, k=check_positive_int(k, "k"))
        sae_cls = sl.TopKTrainingSAE
    else:
        raise DictoptInputError(
            f"unknown SAELens architecture {architecture!r}; use standard or topk"
        )
    torch.manual_seed(seed)
    return sae_cls(cfg)


def _fit(sae: Any, src: Any, opts: dict[str, Any], seed: int, progress: bool,
         what: str) -> None:
    """SAELens's ``SAETrainer`` on shuffled batches of ``src``."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    steps, batch = int(opts["total_steps"]), int(opts["batch_size"])
    batches = (b.to(torch.float32) for b in BatchStream(src, batch, seed))
    trainer_cfg = SAETrainerConfig(
        total_training_samples=batch * steps,
        train_batch_size_samples=batch,
        lr=float(opts["lr"]),
        lr_end=float(opts["lr"]) if opts["lr_end"] is None else float(opts["lr_end"]),
        lr_scheduler_name=opts["lr_scheduler_name"],
        lr_warm_up_steps=int(opts["lr_warm_up_steps"]),
        lr_decay_steps=int(opts["lr_decay_steps"]),
        logger=LoggingConfig(log_to_wandb=False),
    )
    log.info("%s: %d steps of %d rows", what, steps, batch)
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches)
    if progress:
        trainer.fit()
    else:  # SAELens's trainer always draws a progress bar on stderr: keep it off the terminal
        with _without_progress_bar():
            trainer.fit()


def _load_trained(sae: Any, out_dir: Any) -> Dictionary:
    """The trained SAE saved as SAELens's inference folder and loaded back."""
    if out_dir is not None:
        folder = Path(out_dir)
        sae.save_inference_model(folder)
        dictionary = load(folder)
        dictionary.meta["saelens_dir"] = str(folder)
        return dictionary
    with tempfile.TemporaryDirectory() as tmp:
        sae.save_inference_model(tmp)
        return load(tmp)


@register_solver("saelens-standard", "SAELens's own trainer: ReLU SAE with L1 (λ = l1/2)")
def fit_saelens_standard(
    source: Any, *, K: int, lam: float, seed: int = 0, progress: bool = True, **options: Any
) -> Dictionary:
    """Train SAELens's standard (ReLU + L1) SAE with its own trainer (see
    :func:`train_with_saelens`)."""
    return train_with_saelens(
        source, architecture="standard", K=K, lam=lam, seed=seed, progress=progress, **options
    )


@register_solver("saelens-topk", "SAELens's own trainer: TopK SAE (--set k=...)", needs_lam=False)
def fit_saelens_topk(
    source: Any, *, K: int, lam: float | None = None, seed: int = 0, progress: bool = True,
    **options: Any,
) -> Dictionary:
    """Train SAELens's TopK SAE with its own trainer (``k`` in ``options``)."""
    k = options.pop("k", None)
    return train_with_saelens(
        source, architecture="topk", K=K, k=k, seed=seed, progress=progress, **options
    )
