"""Absorption labels scored against known truth on SAELens hierarchy worlds.

    PYTHONPATH=$PWD python -m benchmarks.bench_absorption [--quick] [--cache /cache/absorption]
        [--out benchmarks/absorption_truth/results.json]

Each setting: a SAELens synthetic hierarchy world (``sae_lens.synthetic``), an SAE trained on it by
SAELens's ``train_toy_sae`` (cached on disk), the truth per edge from the TRUE feature
activations (:mod:`benchmarks.absorption_truth.truth`), then the SAE loaded by
``dictopt.io.load`` and checked by ``dictopt.check`` on fresh rows; its ``absorption`` labels are
scored (precision, recall, the false positives and negatives). See
``benchmarks/absorption_truth/README.md``.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.absorption_truth.diagnose import (
    classify_false_negatives,
    classify_false_positives,
    count_classes,
)
from benchmarks.absorption_truth.score import score_pairs
from benchmarks.absorption_truth.truth import edge_truth
from benchmarks.absorption_truth.worlds import (
    SaeSpec,
    Setting,
    WorldSpec,
    load_sae,
    make_world,
    sae_codes,
    sample,
    trained_folder,
)

log = logging.getLogger("bench_absorption")


def settings(quick: bool) -> list[Setting]:
    """Seeds × depth × width (below/above the 64 features) × (ReLU+L1 at two L1, TopK)."""
    if quick:
        return [Setting(WorldSpec(depth=1, seed=0), SaeSpec("topk", 48, k=4, samples=600_000))]
    out = []
    for seed in (0, 1):
        for depth in (1, 2):
            w = (WorldSpec(depth=1, seed=seed) if depth == 1
                 else WorldSpec(depth=2, roots=4, branching=3, seed=seed))
            for width in (48, 96):
                for sae in (SaeSpec("standard", width, l1=0.1), SaeSpec("standard", width, l1=0.5),
                            SaeSpec("topk", width, k=4)):
                    out.append(Setting(w, sae))
    return out


def dictopt_labels(folder: Path, x_ND: np.ndarray, arch: str) -> tuple[list[tuple[int, int]], Any]:
    """The SAE loaded by dictopt, checked with its own codes; its absorption label pairs."""
    from dictopt.check import check
    from dictopt.io import load

    dic = load(folder)
    x = torch.as_tensor(x_ND, dtype=dic.dtype)
    lam = dic.lam
    if lam is None:  # TopK: the implied λ (labels do not depend on λ)
        from dictopt.io.conventions import implied_lambda

        imp = implied_lambda(dic, x)
        lam = max(imp.lam, imp.weighted_mean, 1e-6)  # a short-trained TopK may imply λ < 0
    rep = check(dic, x, codes="own", lam=lam, hull=False, amortisation=False)
    pairs = [(lab.i, lab.j) for lab in rep.labels if lab.label == "absorption"]
    return pairs, rep


def legacy_pairs(a_NK: np.ndarray, W_KD: np.ndarray) -> list[tuple[int, int]]:
    """The ``absorption`` label before #16, recomputed here for the baseline column: decoder
    cosine ≥ 0.5, both latents active somewhere, never active on the same row."""
    W = W_KD / np.maximum(np.linalg.norm(W_KD, axis=1, keepdims=True), 1e-12)
    on = (a_NK > 0).astype(np.float64)
    co = on.T @ on
    C = W @ W.T
    alive = on.sum(0) > 0
    ii, jj = np.nonzero(np.triu((C >= 0.5) & (co == 0), 1) & alive[:, None] & alive[None, :])
    return list(zip(ii.tolist(), jj.tolist(), strict=True))


def run_setting(setting: Setting, cache: Path, n_eval: int) -> dict[str, Any]:
    """Truth, dictopt's labels and their score for one setting."""
    folder = trained_folder(setting, cache)
    world = make_world(setting.world)
    f_NF, x_ND = sample(world, n_eval, seed=10_000 + setting.world.seed)
    sae = load_sae(folder)
    a_NK = sae_codes(sae, x_ND)
    W_KD = sae.W_dec.detach().double().numpy()
    desc: dict[int, list[int]] = collections.defaultdict(list)
    for c, p in world.edges():
        desc[p].append(c)
    truth = edge_truth(f_NF, a_NK, W_KD, world.features, world.edges(), desc)
    t0 = time.perf_counter()
    pairs, rep = dictopt_labels(folder, x_ND, setting.sae.arch)
    sc = score_pairs(pairs, truth)
    legacy = score_pairs(legacy_pairs(a_NK, W_KD), truth)
    classes = collections.Counter(e.cls for e in truth)
    fp_why = classify_false_positives(sc.false_positives, f_NF, a_NK, truth, world.parent)
    fn_why = classify_false_negatives(sc.false_negatives, a_NK, W_KD, truth)
    return {
        "setting": setting.name, "depth": setting.world.depth, "seed": setting.world.seed,
        "width": setting.sae.width, "arch": setting.sae.arch,
        "l1": setting.sae.l1 if setting.sae.arch == "standard" else None,
        "k": setting.sae.k if setting.sae.arch == "topk" else None,
        "l0": float((a_NK > 0).sum(1).mean()), "edges": len(truth), "classes": dict(classes),
        "labels": len(pairs), "tp": sc.tp, "neutral": sc.neutral, "fp": sc.fp,
        "found": sc.found, "absorbed": sc.n_absorbed,
        "precision": sc.precision, "precision_strict": sc.precision_strict, "recall": sc.recall,
        "false_positives": sc.false_positives, "false_negatives": sc.false_negatives,
        "false_positive_classes": count_classes(fp_why), "false_positive_detail": fp_why,
        "false_negative_classes": count_classes(fn_why), "false_negative_detail": fn_why,
        "check_seconds": time.perf_counter() - t0,
        "legacy": {"labels": legacy.n_predicted, "tp": legacy.tp, "fp": legacy.fp,
                   "found": legacy.found, "precision": legacy.precision,
                   "recall": legacy.recall},
        "truth": [e.__dict__ for e in truth],
    }


def _fmt(v: float) -> str:
    return "–" if v != v else f"{v:.2f}"


def _classes(c: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda t: -t[1])) or "–"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table, one row per setting, and a total over settings with absorption."""
    head = ("| setting | L0 | absorbed / partial / kept / other / unresolved | labels | TP | "
            "partial hits | FP | precision | recall | before #16: labels, precision, recall | "
            "FP classes | FN classes |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        c = r["classes"]
        cls = "/".join(str(c.get(k, 0)) for k in
                       ("absorbed", "partial", "kept", "other", "unresolved"))
        lines.append(f"| {r['setting']} | {r['l0']:.1f} | {cls} | {r['labels']} | {r['tp']} | "
                     f"{r['neutral']} | {r['fp']} | {_fmt(r['precision'])} | "
                     f"{_fmt(r['recall'])} | {r['legacy']['labels']}, "
                     f"{_fmt(r['legacy']['precision'])}, {_fmt(r['legacy']['recall'])} | "
                     f"{_classes(r['false_positive_classes'])} | "
                     f"{_classes(r['false_negative_classes'])} |")
    tp = sum(r["tp"] for r in rows)
    fp = sum(r["fp"] for r in rows)
    found = sum(r["found"] for r in rows)
    absorbed = sum(r["absorbed"] for r in rows)
    tot = (f"\nAll settings: precision {_fmt(tp / (tp + fp) if tp + fp else float('nan'))} "
           f"({tp} TP, {fp} FP), recall {_fmt(found / absorbed if absorbed else float('nan'))} "
           f"({found} of {absorbed} absorbed edges).\n")
    fpc: collections.Counter = collections.Counter()
    fnc: collections.Counter = collections.Counter()
    for r in rows:
        fpc.update(r["false_positive_classes"])
        fnc.update(r["false_negative_classes"])
    tot += f"False positives by class: {_classes(dict(fpc))}.\n"
    tot += f"False negatives by class: {_classes(dict(fnc))}.\n"
    ltp = sum(r["legacy"]["tp"] for r in rows)
    lfp = sum(r["legacy"]["fp"] for r in rows)
    lfound = sum(r["legacy"]["found"] for r in rows)
    tot += (f"Before #16 (exact-zero co-activation, cos ≥ 0.5): precision "
            f"{_fmt(ltp / (ltp + lfp) if ltp + lfp else float('nan'))} ({ltp} TP, {lfp} FP), "
            f"recall {_fmt(lfound / absorbed if absorbed else float('nan'))}.\n")
    return head + "\n".join(lines) + "\n" + tot


WORLD = dict(n=20_000, d=16, n_roots=8, branching=3, depth=2)
"""dictopt's hierarchy world in superposition: K_true = 32 atoms (24 edges) in 16 dimensions."""


def generating_worlds(quick: bool) -> list[dict[str, Any]]:
    """C5 flags on the generating dictionaries of superposed hierarchy and independent worlds
    (:mod:`benchmarks.absorption_truth.generating`), several seeds."""
    from benchmarks.absorption_truth.generating import score_world

    seeds = (0,) if quick else (0, 1, 2)
    out = []
    for seed in seeds:
        out.append(score_world("hierarchy", seed, 0.05, **WORLD))
        out.append(score_world("independent", seed, 0.05, n=WORLD["n"], d=WORLD["d"], k=32))
    return out


def worlds_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the generating-dictionary checks."""
    head = ("| world (K_true in d) | seed | planted edges | flagged (hierarchy or near) | "
            "flagged and significant held out | other significant C5 findings |\n"
            "|---|---|---|---|---|---|\n")
    lines = [f"| {r['world']} ({r['K']} in {r['d']}) | {r['seed']} | {r['edges']} | "
             f"{r['flagged']} | {r['flagged_significant']} | {r['other_significant_C5']} |"
             for r in rows]
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one small setting (seconds)")
    ap.add_argument("--cache", default="/cache/absorption", help="trained SAEs are kept here")
    ap.add_argument("--rows", type=int, default=20_000, help="evaluation rows per setting")
    ap.add_argument("--out", default=None, help="write the JSON results here")
    ap.add_argument("--only", default=None, help="run the settings whose name contains this")
    ap.add_argument("--no-worlds", action="store_true",
                    help="skip the C5 flags on dictopt's own generating dictionaries")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    rows = []
    for s in settings(args.quick):
        if args.only and args.only not in s.name:
            continue
        r = run_setting(s, Path(args.cache), args.rows)
        log.info("%s: %d labels, TP %d FP %d, recall %d/%d", r["setting"], r["labels"],
                 r["tp"], r["fp"], r["found"], r["absorbed"])
        rows.append(r)
    out = table(rows)
    worlds = [] if args.no_worlds else generating_worlds(args.quick)
    if worlds:
        out += "\n" + worlds_table(worlds)
    print(out)  # noqa: T201 - benchmark output
    if args.out:
        Path(args.out).write_text(
            json.dumps({"settings": rows, "worlds": worlds}, indent=1, default=float)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
