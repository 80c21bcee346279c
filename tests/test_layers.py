"""The layered house (docs/design.md): each layer imports only the layers below it.

Read from the source's import statements (every module, including imports inside functions), and
checked once more at run time: importing the inference command loads nothing of the trainer.
"""

import ast
import os
import subprocess
import sys

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sorajax")

# Lowest first; a module may import its own layer and the layers before it.
LAYERS = [
    ("leaves", ["patches", "conditioning", "video_io", "config_loading", "config_dataclasses", "logging_setup", "cli",
                "size_ceiling", "memory_estimate", "host_memory"]),
    ("parallel", ["parallel"]),
    ("models", ["models"]),
    ("diffusion", ["diffusion"]),
    ("runs", ["runs"]),
    ("data", ["data"]),
    ("eval", ["eval"]),
    ("train", ["train"]),
    ("pipeline", ["pipeline", "prompting", "long_video", "prompt_expansion", "wan"]),
    ("sweeps", ["sweeps"]),
    ("entry points", ["main", "generate", "train_dit", "train_vae", "eval_vae", "probe", "aot_compile",
                      "build_dataset", "recaption", "convert", "merge_lora", "sweep", "compare", "notebook",
                      "__main__"]),
]
# Inference never depends on the trainer, although it sits above it.
NEVER = {"pipeline": {"train"}, "generate": {"train"}, "probe": {"train"}, "wan": {"train"}, "convert": {"train"},
         "compare": {"train"}}


def _layer_of(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else ""
    for rank, (_, members) in enumerate(LAYERS):
        if top in members:
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/design.md")


def _modules() -> dict[str, str]:
    found = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = path
    return found


def _imports(path: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sorajax"):
            names.update([node.module] if node.module != "sorajax" else [f"sorajax.{a.name}" for a in node.names])
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("sorajax."))
    return names


def test_every_import_goes_down_the_layers():
    upward = []
    for module, path in sorted(_modules().items()):
        if module == "sorajax":
            continue
        rank = _layer_of(module)
        for imported in _imports(path):
            if _layer_of(imported) > rank:
                upward.append(f"{module} ({LAYERS[rank][0]}) imports {imported} ({LAYERS[_layer_of(imported)][0]})")
            top = module.split(".")[1]
            group = next(name for name, members in LAYERS if top in members)
            for forbidden in NEVER.get(top, set()) | NEVER.get(group, set()):
                if imported.split(".")[1] == forbidden:
                    upward.append(f"{module} imports {imported}: inference must not depend on {forbidden}/")
    assert upward == []


def test_parallel_imports_neither_models_nor_train():
    for module, path in _modules().items():
        if module.startswith("sorajax.parallel"):
            assert not {m for m in _imports(path) if m.split(".")[1] in ("models", "train")}, module


@pytest.mark.parametrize("command", ["sorajax.generate", "sorajax.pipeline", "sorajax.probe"])
def test_inference_loads_nothing_of_the_trainer(command):
    code = f"import sys, {command}; print(sorted(m for m in sys.modules if m.startswith('sorajax.train')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(PACKAGE)).stdout.strip()
    assert out == "[]"
