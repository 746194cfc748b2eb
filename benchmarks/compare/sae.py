"""dictopt's SAE trainer vs SAELens's ``SAETrainer``: steps per second and loss after equal steps.

Same architecture (ReLU, L1 weighted by decoder norm: dictopt ``relu`` / SAELens ``standard``,
both initialised the same way: uniform decoder rows at norm 0.1, encoder = decoder transposed,
zero biases, ``b_dec`` subtracted from the input), same hyperparameters (``l1_coefficient =
2λ``, Adam lr and betas, constant lr, no warm-up, no resampling, batch size, number of steps)
and the same batches in the same order (dictopt's seeded :class:`BatchStream` feeds both), on
CPU, one thread. Time: the whole training call (``fit_sae`` / ``SAETrainer.fit``), after an
untimed warm-up run of a few steps. Loss: both SAEs are loaded into a :class:`Dictionary`
(SAELens's through ``save_inference_model`` and :func:`dictopt.io.load`, which reads its λ =
l1_coefficient / 2) and scored by dictopt's canonical objective with their own codes on
held-out data (:func:`dictopt.data.evaluate`). Repeat ``r`` uses seed ``r`` on both sides
(initialisation and batch order), so the loss is a mean over seeds with its spread shown.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

from benchmarks.harness import (
    Result,
    Row,
    Timing,
    fmt_ratio,
    mark_baseline,
    mib,
    ratio,
    run_side,
    target_cell,
    time_repeats,
)

SIZES = {
    "smoke": dict(d=8, K=16, k=12, n=2048, batch=64, steps=20, repeats=1),
    "quick": dict(d=32, K=256, k=64, n=16_384, batch=256, steps=400, repeats=2),
    "full": dict(d=64, K=512, k=128, n=65_536, batch=512, steps=1500, repeats=3),
}
LAM = 0.05
LR = 3e-3
SEED = 0


def make_data(d: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Training rows and 4096 held-out rows of the independent world (float32)."""
    from dictopt.data.worlds import make_world

    w = make_world("independent", n=n + 4096, d=d, k=k, p=4 / k, noise=0.05, bias_norm=1.0,
                   seed=SEED)
    x = w.x.astype(np.float32)
    return x[:n], x[n:]


def held_out(dictionary: Any, x_test: np.ndarray) -> dict[str, float]:
    from dictopt.data.evaluate import evaluate

    r = evaluate(dictionary, x_test, codes="own")
    return {"loss": r.loss, "reconstruction": r.reconstruction, "sparsity": r.sparsity,
            "l0": r.l0, "explained_variance": r.explained_variance}


def per_seed(models: list[tuple[float, Any]], x_test: np.ndarray) -> dict[str, Any]:
    """Held-out figures of each seed's model, and their means."""
    runs = [{"lam": lam, **held_out(D, x_test)} for lam, D in models]
    mean = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
    return {"per_seed": runs, **mean}


def side_dictopt(d: int, K: int, k: int, n: int, batch: int, steps: int,
                 repeats: int) -> dict[str, Any]:
    import torch

    from dictopt.solvers.train import fit_sae

    torch.set_num_threads(1)
    x, x_test = make_data(d, k, n)

    def train(total: int, seed: int):
        return fit_sae("relu", x, K=K, lam=LAM, seed=seed, progress=False, total_steps=total,
                       batch_size=batch, lr=LR, b_dec_init_method="zeros")

    train(5, SEED)  # warm-up (not timed)
    seeds = iter(range(SEED, SEED + repeats))
    mark_baseline()
    timing, models = time_repeats(lambda: train(steps, next(seeds)), repeats, keep=True)
    return {"timing": timing.as_dict(), "steps": steps, **per_seed([(m.lam, m) for m in models],
                                                                   x_test)}


def side_saelens(d: int, K: int, k: int, n: int, batch: int, steps: int,
                 repeats: int) -> dict[str, Any]:
    import sae_lens as sl
    import torch
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from dictopt.data.sources import as_source
    from dictopt.io import load
    from dictopt.solvers.train import BatchStream

    torch.set_num_threads(1)
    x, x_test = make_data(d, k, n)

    def train(total: int, seed: int):
        torch.manual_seed(seed)
        sae = sl.StandardTrainingSAE(sl.StandardTrainingSAEConfig(
            d_in=d, d_sae=K, l1_coefficient=2 * LAM))
        trainer = SAETrainer(
            cfg=SAETrainerConfig(total_training_samples=batch * total,
                                 train_batch_size_samples=batch, lr=LR, lr_end=LR,
                                 logger=LoggingConfig(log_to_wandb=False)),
            sae=sae, data_provider=BatchStream(as_source(x), batch, seed + 1))
        return trainer.fit()

    train(5, SEED)  # warm-up (not timed)
    seeds = iter(range(SEED, SEED + repeats))
    mark_baseline()
    timing, saes = time_repeats(lambda: train(steps, next(seeds)), repeats, keep=True)
    loaded = []
    for sae in saes:
        with tempfile.TemporaryDirectory() as tmp:
            sae.save_inference_model(tmp)
            D = load(tmp)
        loaded.append((D.lam, D))
    return {"timing": timing.as_dict(), "steps": steps, **per_seed(loaded, x_test)}


def spread(side: dict[str, Any]) -> str:
    losses = [r["loss"] for r in side["per_seed"]]
    return f"{min(losses):.5g}–{max(losses):.5g}"


def _kw(mode: str) -> dict[str, Any]:
    return {key: SIZES[mode][key] for key in ("d", "K", "k", "n", "batch", "steps", "repeats")}


def run_sides(mode: str) -> dict[str, Any]:
    kw = _kw(mode)
    sides = {"dictopt": run_side(__name__, "side_dictopt", **kw)}
    try:
        import sae_lens  # noqa: F401
    except ImportError:
        return sides
    sides["saelens"] = run_side(__name__, "side_saelens", **kw)
    return sides


def summarise(mode: str, sides: dict[str, Any]) -> Result:
    s, kw = SIZES[mode], _kw(mode)
    if "saelens" not in sides:
        row = Row("SAE trainer `fit_sae('relu')` vs SAELens `SAETrainer`", "—",
                  "skipped: sae-lens is not installed", "—", "—", "—")
        return Result("sae", mode, kw, sides, {}, [row], ["sae: sae-lens not installed"])
    ours, theirs = sides["dictopt"], sides["saelens"]
    # steps/s ratio = their time / our time (same number of steps)
    r = ratio(Timing.from_dict(theirs["timing"]), Timing.from_dict(ours["timing"]))
    sps = {name: s["steps"] / Timing.from_dict(v["timing"]).median for name, v in sides.items()}
    loss_ok = ours["loss"] <= theirs["loss"] * (1 + 1e-3)
    met = r["median"] >= 1.0 and loss_ok
    why = []
    if r["median"] < 1.0:
        why.append(f"speed {r['median']:.2f}× (median)")
    if not loss_ok:
        why.append(f"loss {ours['loss']:.5g} > {theirs['loss']:.5g}")
    row = Row(
        "SAE trainer `fit_sae('relu')` vs SAELens `SAETrainer` (standard, L1)",
        f"d={s['d']}, K={s['K']}, batch {s['batch']}, {s['steps']} steps, λ={LAM} (l1 "
        f"{2 * LAM:g}), lr {LR:g}; independent world ({s['k']} atoms, {s['n']} rows), CPU",
        f"{fmt_ratio(r)} the steps/s (dictopt {sps['dictopt']:.0f}, SAELens "
        f"{sps['saelens']:.0f} steps/s, median)",
        f"dictopt {mib(ours)} vs SAELens {mib(theirs)}",
        f"held-out canonical loss (own codes), mean over {s['repeats']} seeds "
        f"[{spread(ours)}] / [{spread(theirs)}]: dictopt {ours['loss']:.5g} (EV "
        f"{ours['explained_variance']:.3f}, L0 {ours['l0']:.1f}), SAELens {theirs['loss']:.5g} "
        f"(EV {theirs['explained_variance']:.3f}, L0 {theirs['l0']:.1f}); λ read back: "
        f"{ours['lam']:.4g} / {theirs['lam']:.4g}",
        target_cell("≥ 1.0× speed at ≤ loss", met, "; ".join(why)),
    )
    return Result("sae", mode, kw | {"lam": LAM, "lr": LR}, sides,
                  {"saelens": r, "steps_per_s": sps}, [row])


def compare(mode: str) -> Result:
    """Run every side (each in a fresh process) and summarise them."""
    return summarise(mode, run_sides(mode))
