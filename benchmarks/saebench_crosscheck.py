"""Cross-check dictopt's probe-absorption code against SAEBench's own (sae-bench 0.6.0).

    /tmp/saebench/bin/python benchmarks/saebench_crosscheck.py DUMP.npz [--json OUT]

Runs in a separate, throwaway environment that has ``sae-bench==0.6.0`` (with torch pinned:
``python3 -m venv /tmp/saebench && /tmp/saebench/bin/pip install torch==2.13.0
sae-bench==0.6.0``; remove the ``torchvision`` it pulls, whose compiled operators do not match
torch 2.13), never in dictopt's environment, and imports nothing from dictopt. ``DUMP.npz`` is
written by ``benchmarks/absorption_probe.py --saebench-dump`` for one SAELens SAE: the word
activations, the probes, dictopt's main latents and per-word verdicts.

SAEBench's eval cannot run end to end here: its ``HookedTransformer`` loads models by hub name
and TransformerLens has no SmolLM2. Its pieces can, on the cached activations:

1. ``FeatureAbsorptionCalculator.calculate_absorption`` with a stand-in model whose
   ``run_with_cache`` returns the cached activation at the word position, on the SAE with its
   decoder norms folded into the encoder (SAEBench's ``a_k cos(d_k, p)`` is then the canonical
   contribution dictopt uses). Given the same probes and main latents, the per-word absorption
   fraction and full-absorption verdicts must agree.
2. ``train_k_sparse_probes``, ``build_metrics_df``, ``add_feature_splits_to_metrics_df``:
   SAEBench's own choice of main latents (an Adam-trained L1 probe on the codes), compared
   with dictopt's (scikit-learn's L1 logistic regression), and SAEBench's calculator run
   with its own main latents: SAEBench's absorption figures for this SAE.
"""

# ruff: noqa: T201  (a benchmark script prints its figures)
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

LETTERS = "abcdefghijklmnopqrstuvwxyz"
HOOK = "blocks.{layer}.hook_resid_post"


class CachedModel:
    """Stands in for a HookedTransformer: prompt ``"{word}:"`` → the cached activation."""

    def __init__(self, words: list[str], acts: np.ndarray, hook: str) -> None:
        self.row = {w: i for i, w in enumerate(words)}
        self.acts = torch.from_numpy(acts).float()
        self.hook = hook

    def run_with_cache(self, prompts: list[str], names_filter: list[str]):
        # the prompt is "\n{word}:" (no examples): the word is the last line without its colon
        x = torch.stack([self.acts[self.row[p.rsplit("\n", 1)[-1][:-1]]] for p in prompts])
        return None, {self.hook: torch.stack([x, torch.zeros_like(x)], dim=1)}  # word at -2

    def to_tokens(self, prompt: str) -> torch.Tensor:
        return torch.zeros((1, 2), dtype=torch.long)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dump")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    from sae_bench.evals.absorption.feature_absorption_calculator import (
        FeatureAbsorptionCalculator,
    )
    from sae_bench.evals.absorption.k_sparse_probing import (
        add_feature_splits_to_metrics_df,
        build_metrics_df,
        eval_probe_and_sae_k_sparse_raw_scores,
        sae_k_sparse_metadata,
        train_k_sparse_probes,
    )
    from sae_bench.evals.absorption.probing import LinearProbe
    from sae_lens import SAE

    z = np.load(args.dump, allow_pickle=False)
    layer = int(z["layer"])
    hook = HOOK.format(layer=layer)
    sae = SAE.load_from_disk(str(z["sae_dir"]), device="cpu")
    norms = sae.W_dec.norm(dim=1)
    sae.fold_W_dec_norm()
    words_test = [str(w) for w in z["words_test"]]
    x_test, y_test = z["x_test"], z["y_test"]
    W, b = torch.from_numpy(z["probe_W"]).float(), torch.from_numpy(z["probe_b"]).float()
    ours_main = json.loads(str(z["main"]))
    model = CachedModel(words_test, x_test, hook)
    calc = FeatureAbsorptionCalculator(model=model, icl_word_list=[], max_icl_examples=0,
                                       base_template="{word}:", word_token_pos=-2)
    scores = x_test @ z["probe_W"].T + z["probe_b"]
    out: dict = {"decoder_norms": [float(norms.min()), float(norms.max())]}

    def run_calc(mains: dict[str, list[int]]) -> dict[str, dict]:
        res = {}
        for c, letter in enumerate(LETTERS):
            if letter not in mains:
                continue
            rows = np.flatnonzero((y_test == c) & (scores[:, c] > 0))
            if not rows.size:
                continue
            r = calc.calculate_absorption(sae, [words_test[i] for i in rows], W[c],
                                          mains[letter], layer=layer, show_progress=False)
            res[letter] = {"rows": rows.tolist(),
                           "fraction": [w.absorption_fraction for w in r.word_results],
                           "full": [bool(w.is_full_absorption) for w in r.word_results]}
        return res

    # 1. the calculator, with dictopt's main latents
    t0 = time.perf_counter()
    theirs = run_calc(ours_main)
    frac_diff, full_mismatch, n_words = 0.0, 0, 0
    ours_frac, ours_full = z["ours_fraction"], z["ours_full"]  # per test row (NaN: not a TP)
    for res in theirs.values():
        for row, f, full in zip(res["rows"], res["fraction"], res["full"], strict=True):
            frac_diff = max(frac_diff, abs(float(f) - float(ours_frac[row])))
            full_mismatch += int(bool(full) != bool(ours_full[row]))
            n_words += 1
    out["calculator"] = {"words": n_words, "max_fraction_diff": frac_diff,
                         "full_mismatches": full_mismatch,
                         "seconds": time.perf_counter() - t0}
    print(f"SAEBench's calculator on dictopt's main latents: {n_words} words, max |fraction "
          f"difference| {frac_diff:.2e}, full-absorption verdicts that differ {full_mismatch}")

    # 2. SAEBench's own main latents (k-sparse probing) and its figures with them
    t0 = time.perf_counter()
    torch.manual_seed(0)
    x_train = torch.from_numpy(z["x_train"]).float()
    train_labels = [(f"w{i}", int(c)) for i, c in enumerate(z["y_train"])]
    eval_labels = [(w, int(c)) for w, c in zip(words_test, y_test, strict=True)]
    kprobes = train_k_sparse_probes(sae, train_labels, x_train, ks=list(range(1, 11)))
    probe = LinearProbe(W.shape[1], 26)
    with torch.no_grad():
        probe.fc.weight.copy_(W)
        probe.fc.bias.copy_(b)
    raw = eval_probe_and_sae_k_sparse_raw_scores(sae, probe, kprobes, eval_labels,
                                                 torch.from_numpy(x_test).float())
    meta = sae_k_sparse_metadata(sae, probe, kprobes, sae_name="sae", layer=layer)
    metrics = build_metrics_df(raw, meta, max_k_value=10)
    add_feature_splits_to_metrics_df(metrics, max_k_value=10, f1_jump_threshold=0.03)
    sb_main = {r["letter"]: [int(k) for k in r["split_feats"]] for _, r in metrics.iterrows()}
    good = {r["letter"] for _, r in metrics.iterrows() if r["f1_probe"] > 0.6}
    same = sum(set(sb_main[ltr]) == set(ours_main.get(ltr, [])) for ltr in good)
    first = sum(bool(sb_main[ltr]) and bool(ours_main.get(ltr)) and
                sb_main[ltr][0] == ours_main[ltr][0] for ltr in good)
    sb = run_calc({ltr: m for ltr, m in sb_main.items() if ltr in good})
    rates = [sum(v["full"]) / len(v["full"]) for v in sb.values()]
    fracs = [sum(v["fraction"]) / len(v["fraction"]) for v in sb.values()]
    out["saebench"] = {
        "letters": sorted(sb), "main_latents": sb_main,
        "same_main_set": same, "same_first_latent": first, "letters_compared": len(good),
        "mean_full_absorption": statistics.mean(rates) if rates else None,
        "mean_absorption_fraction": statistics.mean(fracs) if fracs else None,
        "mean_main_latents": statistics.mean(len(sb_main[ltr]) for ltr in good),
        "seconds": time.perf_counter() - t0,
    }
    print(f"SAEBench's k-sparse probing: same main-latent set as dictopt's on {same} of "
          f"{len(good)} letters (same first latent on {first}); with its own main latents "
          f"SAEBench's calculator gives mean full absorption "
          f"{out['saebench']['mean_full_absorption']:.3f}, mean absorption fraction "
          f"{out['saebench']['mean_absorption_fraction']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
