"""The probe-based absorption measure and its agreement with dictopt's findings.

Ground truth is built by hand: worlds whose absorbed words, main latents and absorbing latents
are known by construction, and closed forms of SAEBench's absorption fraction written out here
independently of the module. The first-letter prompts are checked on a fake tokenizer and a tiny
random Llama against the unbatched, truncated prompt (the causal argument the module relies on).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dictopt.evals.agreement import activity_counts, agreement, read_findings
from dictopt.evals.probe_absorption import (
    AbsorptionThresholds,
    ProbeAbsorption,
    class_absorption,
    probe_absorption,
    sparse_probing,
    train_probes,
)
from dictopt.problem import Dictionary


def _orthonormal(d: int, n: int, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, n)))
    return q.T  # [n, d]


# ---------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------


def test_probes_separate_well_separated_classes_and_fail_on_noise():
    rng = np.random.default_rng(0)
    C, d, n = 5, 12, 600
    P = _orthonormal(d, C) * 4.0
    y = rng.integers(0, C, n)
    x = P[y] + rng.normal(size=(n, d))
    probes = train_probes(x[:400], y[:400], x[400:], y[400:], n_classes=C)
    assert probes.multiclass_accuracy > 0.95
    assert probes.mean("accuracy") > 0.95 and probes.mean("f1") > 0.9
    assert [m["n_test"] for m in probes.per_class] == np.bincount(y[400:], minlength=C).tolist()
    # labels unrelated to x: held-out 5-way accuracy near chance
    noise = train_probes(x[:400], rng.permutation(y[:400]), x[400:], y[400:], n_classes=C)
    assert noise.multiclass_accuracy < 0.45


def test_a_class_without_training_words_never_fires():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 4)), rng.integers(0, 2, 50)
    probes = train_probes(x, y, x, y, n_classes=3)
    assert not (probes.scores(x)[:, 2] > 0).any()
    assert probes.per_class[2]["n_train"] == 0


# ---------------------------------------------------------------------------------------------
# k-sparse probing
# ---------------------------------------------------------------------------------------------


def _codes(n: int, K: int, y: np.ndarray, columns: dict[int, np.ndarray]) -> np.ndarray:
    codes = np.zeros((n, K))
    for k, rows in columns.items():
        codes[rows, k] = 1.0 + 0.1 * np.arange(rows.sum()) % 3
    return codes


@pytest.mark.parametrize("split", [False, True])
def test_sparse_probing_finds_the_latent_or_the_split_pair(split):
    rng = np.random.default_rng(2)
    n, K = 800, 30
    y = rng.integers(0, 4, n)
    half = rng.random(n) < 0.5
    cols = {k: (y == k % 4) & (rng.random(n) < 0.3) for k in range(8, 30)}  # noise latents
    for k in cols:
        cols[k] &= y != 0
    if split:  # class 0 split over latents 3 and 5 (half of its words each)
        cols[3], cols[5] = (y == 0) & half, (y == 0) & ~half
    else:
        cols[3] = y == 0
    codes = _codes(n, K, y, cols)
    tr = np.arange(n) < 500
    sp = sparse_probing(codes[tr], y[tr], codes[~tr], y[~tr], 0)
    assert sorted(sp.main) == ([3, 5] if split else [3])
    assert sp.f1_by_k[len(sp.main) - 1] > 0.99


# ---------------------------------------------------------------------------------------------
# Absorption verdicts against closed forms
# ---------------------------------------------------------------------------------------------


def _fraction(P: float, M: float, A: float, proportion: float = 0.4) -> float:
    """SAEBench's absorption fraction, written out from its definition."""
    if P <= 0 or M >= P or A / P < proportion:
        return 0.0
    if M <= 0:
        return 1.0
    a = min(A, P - M)
    return a / (a + M)


@pytest.mark.parametrize(
    ("main_code", "absorber_codes", "expected_full"),
    [
        (0.0, [1.0], True),          # main silent, one absorber carries everything
        (0.0, [0.3], False),         # absorber below 40 % of the projection
        (0.5, [0.6], False),         # main fires: partial absorption only
        (0.2, [0.5, 0.4, 0.3], False),
        (1.2, [0.5], False),         # main alone exceeds the projection
    ],
)
def test_class_absorption_matches_the_closed_form(main_code, absorber_codes, expected_full):
    d = 6
    E = np.eye(d)
    p = E[0]
    # atoms: 0 main (= p); 1-3 absorbers at cosine 0.6 with p; 4 orthogonal to p
    t = E[1:4]
    atoms = np.vstack([p, 0.6 * p + 0.8 * t[0], 0.6 * p + 0.8 * t[1], 0.6 * p + 0.8 * t[2], E[4]])
    codes = np.zeros((1, 5))
    codes[0, 0] = main_code
    codes[0, 1 : 1 + len(absorber_codes)] = absorber_codes
    codes[0, 4] = 2.0
    x = codes @ atoms
    x[0, 0] = 1.0  # the word's probe projection is exactly 1
    n_tp, words = class_absorption(x, codes, atoms, np.array([True]), np.array([3.0]), 2 * p,
                                   [0])
    assert n_tp == 1
    w = words[0]
    M = main_code
    contributions = [0.6 * c for c in absorber_codes]
    A = sum(sorted(contributions, reverse=True)[:3])
    assert w.probe_projection == pytest.approx(1.0)
    assert w.main_projection == pytest.approx(M)
    assert w.absorption_fraction == pytest.approx(_fraction(1.0, M, A))
    assert w.full_absorption is expected_full
    assert w.top_latent == 1 + int(np.argmax(absorber_codes))


def test_only_probe_true_positives_are_scored():
    atoms = np.eye(3)
    codes = np.zeros((4, 3))
    x = np.ones((4, 3))
    is_cls = np.array([True, True, False, True])
    scores = np.array([1.0, -1.0, 1.0, 0.5])
    n_tp, words = class_absorption(x, codes, atoms, is_cls, scores, np.array([1.0, 0, 0]), [0])
    assert n_tp == 2 and [w.row for w in words] == [0, 3]


def _absorption_world(seed: int = 0):
    """Classes along orthonormal directions; class 0 loses some words to token-specific
    latents. Returns x, y, codes, atoms and the set of absorbed (row, absorber) pairs."""
    rng = np.random.default_rng(seed)
    C, d, n = 4, 40, 1600
    B = _orthonormal(d, C + 20, seed)
    P, T = B[:C], B[C:]  # class directions, token directions
    y = rng.integers(0, C, n)
    K = C + 20
    atoms = np.zeros((K, d))
    atoms[:C] = P
    # latents C..C+19: token latents, each the token direction plus class 0's direction
    atoms[C:] = 0.6 * P[0] + 0.8 * T
    codes = np.zeros((n, K))
    codes[np.arange(n), y] = 1.0
    absorbed = {}
    zero_rows = np.flatnonzero(y == 0)
    for t, r in enumerate(rng.choice(zero_rows, size=40, replace=False)):
        a = C + t % 20
        codes[r, 0] = 0.0
        codes[r, a] = 1.0 / 0.6  # the absorber carries the class projection (contribution 1)
        absorbed[int(r)] = a
    x = codes @ atoms + 0.02 * rng.normal(size=(n, d))
    return x, y, codes, atoms, absorbed


def test_probe_absorption_recovers_the_planted_absorption():
    x, y, codes, atoms, absorbed = _absorption_world()
    tr = np.arange(len(y)) < 1000
    probes = train_probes(x[tr], y[tr], x[~tr], y[~tr], n_classes=4)
    assert probes.multiclass_accuracy > 0.99
    pa = probe_absorption(probes, codes[tr], y[tr], x[~tr], codes[~tr], y[~tr], atoms)
    c0 = pa.classes[0]
    assert c0.main == [0]
    test_rows = {r - 1000: a for r, a in absorbed.items() if r >= 1000}
    expected = {}
    for a in test_rows.values():
        expected[a] = expected.get(a, 0) + 1
    assert c0.absorbers == expected
    n0 = int((y[~tr] == 0).sum())
    assert c0.n_true_positives == n0
    assert c0.full_rate == pytest.approx(len(test_rows) / n0)
    assert c0.mean_fraction == pytest.approx(len(test_rows) / n0, abs=1e-9)
    for c in pa.classes[1:]:
        assert c.main == [c.cls] and c.n_full == 0
    assert pa.mean_full_rate == pytest.approx(c0.full_rate / 4)
    assert sorted(pa.pairs()) == sorted((0, 0, a, k) for a, k in expected.items())
    back = ProbeAbsorption.from_json(json.loads(json.dumps(pa.to_json())))
    assert back.to_json() == json.loads(json.dumps(pa.to_json()))
    assert sorted(back.pairs()) == sorted(pa.pairs())


# ---------------------------------------------------------------------------------------------
# Agreement with a report
# ---------------------------------------------------------------------------------------------


def test_read_findings_honours_significance_fields():
    report = {"labels": [
        {"label": "absorption", "i": 0, "j": 1, "detail": {}},
        {"label": "absorption", "i": 0, "j": 2, "detail": {"significant": False}},
        {"label": "absorption", "i": 0, "j": 3, "detail": {"p_value": 0.2}},
        {"label": "absorption_robust", "i": 0, "j": 4, "detail": {"q_value": 0.01}},
        {"label": "duplicate", "i": 5, "j": 6, "detail": {}},
    ], "violations": [
        {"condition": "C5", "i": 7, "j": 8, "label": "hierarchy", "detail": {}},
        {"condition": "C5", "i": 8, "j": 7, "label": "upper", "detail": {},
         "heldout": {"significant": False}},
        {"condition": "hull", "i": None, "j": 9, "label": "joint", "detail": {},
         "move": {"J": [1, 2]}},
        {"condition": "C1", "i": 3, "j": None, "label": "x", "detail": {}},
    ]}
    f = read_findings(report)
    ab = {(x.i, x.j): x.significant for x in f if x.kind == "absorption"}
    assert ab == {(0, 1): True, (0, 2): False, (0, 3): False, (0, 4): True}
    assert [(x.kind, x.i, x.j, x.significant) for x in f if x.kind != "absorption"] == [
        ("C5", 7, 8, True), ("C5", 8, 7, False), ("hull", None, 9, True)]
    assert [x.detail["J"] for x in f if x.kind == "hull"] == [[1, 2]]


def test_agreement_counts_and_coactivity_against_brute_force():
    x, y, codes, atoms, absorbed = _absorption_world(seed=3)
    tr = np.arange(len(y)) < 1000
    probes = train_probes(x[tr], y[tr], x[~tr], y[~tr], n_classes=4)
    pa = probe_absorption(probes, codes[tr], y[tr], x[~tr], codes[~tr], y[~tr], atoms)
    cases = sorted(pa.classes[0].absorbers)
    assert len(cases) >= 4
    hit, missed = cases[:2], cases[2:]
    K = atoms.shape[0]
    report = {
        "labels": [{"label": "absorption", "i": 0, "j": a, "detail": {}} for a in hit]
        + [{"label": "absorption", "i": 1, "j": 2, "detail": {}},          # not a probe case
           {"label": "absorption", "i": 2, "j": K - 1, "detail": {}},      # scoped, missed
           {"label": "absorption", "i": 0, "j": missed[0], "detail": {"significant": False}}],
        "violations": [{"condition": "C5", "i": missed[1], "j": 0, "label": "upper",
                        "detail": {}}],
    }

    # the agreement encodes the rows: give it the planted codes through the row index
    D = Dictionary(torch.tensor(atoms), torch.zeros(atoms.shape[1], dtype=torch.float64),
                   lam=1.0, has_bias=False)
    data = np.hstack([x, np.arange(len(x))[:, None].astype(float)])
    lookup = torch.tensor(codes)

    class Planted:
        dtype = torch.float64
        atoms = D.atoms

        @staticmethod
        def encode(xb: torch.Tensor) -> torch.Tensor:
            return lookup[xb[:, -1].long()]

    ag = agreement(pa, report, Planted, data)
    assert len(ag.cases) == len(cases)
    assert ag.recall == pytest.approx(2 / len(cases))
    assert ag.n_pairs == 4 and ag.n_pairs_all == 5
    assert ag.precision == pytest.approx(2 / 4)
    # scoped: pairs holding a main latent (0, 1, 2, 3): {0,a}x2, {1,2}, {2,K-1}
    assert ag.n_pairs_scoped == 4 and ag.scoped_precision == pytest.approx(2 / 4)
    assert {(m["main"], m["other"]) for m in ag.scoped_missed} == {(1, 2), (2, K - 1)}
    by_a = {c.absorber: c for c in ag.cases}
    assert by_a[missed[1]].c5 == ["upper"] and not by_a[hit[0]].c5
    act = codes > 0
    for c in ag.cases:
        assert c.coactive == int((act[:, 0] & act[:, c.absorber]).sum()) == 0
        assert c.active_a == int(act[:, c.absorber].sum())
        assert c.cos == pytest.approx(0.6)
        E = c.active_a * c.active_m / len(x)  # independence; no co-firing: lift 0, z = √E
        assert c.active_m == int(act[:, 0].sum())
        assert c.lift == 0.0 and c.z == pytest.approx(np.sqrt(E))
    n, co = activity_counts(Planted, data, [0, 1, missed[0]])
    sub = act[:, [0, 1, missed[0]]].astype(int)
    assert n.tolist() == sub.sum(0).tolist() and co.tolist() == (sub.T @ sub).tolist()


# ---------------------------------------------------------------------------------------------
# First-letter prompts
# ---------------------------------------------------------------------------------------------


class FakeTokenizer:
    """Tokens are whole strings from a list; text is split greedily into known tokens."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.tokens[i] for i in ids)

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        ids, pos = [], 0
        while pos < len(text):
            best = max((t for t in self.tokens if text.startswith(t, pos)), key=len)
            ids.append(self.index[best])
            pos += len(best)
        return {"input_ids": ids}


WORDS = [" cat", " Dog", " apple", " zebra", " x", " c3po", " éclair", "tree", " bird", " axe"]
TOKENS = (WORDS + [" has", " the", " first", " letter", ":", "\n"]
          + [" " + c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"])


def test_vocabulary_keeps_space_plus_letters_only():
    from dictopt.data.lm.letters import LETTERS, first_letter_vocabulary

    v = first_letter_vocabulary(FakeTokenizer(TOKENS))
    assert v.words == [" cat", " Dog", " apple", " zebra", " bird", " axe", " has", " the",
                       " first", " letter"]
    assert [LETTERS[k] for k in v.letters] == ["c", "d", "a", "z", "b", "a", "h", "t", "f", "l"]
    assert all(TOKENS[i] == w for i, w in zip(v.ids, v.words, strict=True))


def test_prompts_place_every_word_once_before_its_answer():
    from dictopt.data.lm.letters import build_prompts, first_letter_vocabulary

    tok = FakeTokenizer(TOKENS)
    v = first_letter_vocabulary(tok)
    words = np.array([0, 2, 3, 4, 5])
    pb = build_prompts(tok, v, words, per_sequence=2, warmup=1, seed=3)
    ids = pb.input_ids.numpy()
    assert ids.shape == (3, 3 * 8)
    assert sorted(pb.word_rows.tolist()) == list(range(len(words)))
    tmpl = tok(" has the first letter:")["input_ids"]
    for r, s, p in zip(pb.word_rows, pb.seq, pb.pos, strict=True):
        w = int(words[r])
        assert ids[s, p] == v.ids[w]
        assert ids[s, p + 1 : p + 1 + len(tmpl)].tolist() == tmpl
        answer = tok.decode([int(ids[s, p + 1 + len(tmpl)])])
        assert answer == " " + v.words[w][1].upper()
        assert p >= 8  # one warm-up example before every recorded word


def test_word_activations_equal_the_truncated_unbatched_prompt():
    transformers = pytest.importorskip("transformers")
    from dictopt.data.lm.letters import build_prompts, first_letter_vocabulary, word_activations
    from dictopt.data.lm.models import LoadedModel

    tok = FakeTokenizer(TOKENS)
    torch.manual_seed(0)
    model = transformers.LlamaModel(transformers.LlamaConfig(
        vocab_size=len(TOKENS), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)).eval()
    m = LoadedModel(model, tok, {"name": "tiny", "d_model": 16, "n_layers": 2})
    v = first_letter_vocabulary(tok)
    words = np.arange(len(v.words))
    pb = build_prompts(tok, v, words, per_sequence=4, warmup=1, seed=0)
    got = word_activations(m, 1, pb, batch_size=1, progress=False)
    for r, s, p in zip(pb.word_rows, pb.seq, pb.pos, strict=True):
        prefix = pb.input_ids[s : s + 1, : p + 1]
        with torch.no_grad():
            hs = model(input_ids=prefix, output_hidden_states=True).hidden_states
        np.testing.assert_allclose(got[r], hs[1][0, -1].numpy(), rtol=1e-4, atol=1e-5)


def test_thresholds_are_saebench_defaults():
    th = AbsorptionThresholds()
    assert (th.cos_full, th.cos_fraction, th.proportion, th.max_absorbers, th.f1_jump,
            th.max_k) == (0.025, 0.1, 0.4, 3, 0.03, 10)


def test_classes_with_a_weak_probe_are_left_out():
    from dictopt.validation import DictoptInputError

    x, y, codes, atoms, _ = _absorption_world(seed=1)
    tr = np.arange(len(y)) < 1000
    probes = train_probes(x[tr], y[tr], x[~tr], y[~tr], n_classes=4)
    probes.per_class[2]["f1"] = 0.5  # as if letter 2's probe were weak
    pa = probe_absorption(probes, codes[tr], y[tr], x[~tr], codes[~tr], y[~tr], atoms)
    assert [c.in_means for c in pa.classes] == [True, True, False, True]
    assert pa.mean_full_rate == pytest.approx(pa.classes[0].full_rate / 3)
    with pytest.raises(DictoptInputError, match="F1 above"):
        probe_absorption(probes, codes[tr], y[tr], x[~tr], codes[~tr], y[~tr], atoms,
                         min_probe_f1=1.0)


def test_pipeline_refuses_an_unknown_sae_before_any_work(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "absorption_probe.py"), "--saes", "relu,foo",
         "--cache", str(tmp_path / "c")], capture_output=True, text=True, cwd=root)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "foo" in out.stderr
    assert not (tmp_path / "c").exists()


def test_structure_only_needs_the_results_of_an_earlier_run(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "absorption_probe.py"), "--structure-only",
         "--json", str(tmp_path / "missing.json"), "--cache", str(tmp_path / "c")],
        capture_output=True, text=True, cwd=root)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "--json" in out.stderr
    assert not (tmp_path / "c").exists()
