"""The import graph of the engine and the plugin points one way, and moved names stay importable from their homes.

Every import counts, at module level or inside a function: a function-local import that closes a circle still ties
the two modules together (in the engine, the plugin and the benchmarks). The one circle allowed is the QIIME 2
idiom (`q2_aam.plugin_setup` imports `q2_aam._transformer`, which registers its transformers on the plugin it
imports back).
"""
import ast
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("aam", "q2_aam", "benchmarks")
ALLOWED_CIRCLES = [{"q2_aam._transformer", "q2_aam.plugin_setup"}]


def _module_files():
    """Dotted module name -> source path, for every module of `PACKAGES`."""
    modules = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for file_name in files:
                if not file_name.endswith(".py"):
                    continue
                parts = os.path.relpath(os.path.join(folder, file_name), ROOT)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join(parts)] = os.path.join(folder, file_name)
    return modules


def _imported_names(tree, package):
    """Every module name an `import` or `from ... import` of the tree may refer to (relative ones resolved)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield base
            # `from aam.training import distributed` imports the module aam.training.distributed
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph():
    """Module -> the set of modules of `PACKAGES` it imports (anywhere in its source)."""
    modules = _module_files()
    graph = {}
    for name, path in modules.items():
        package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
        with open(path) as fh:
            tree = ast.parse(fh.read(), filename=path)
        graph[name] = {m for m in _imported_names(tree, package) if m in modules and m != name}
    return graph


def circles(graph):
    """The strongly connected components of more than one module (scipy's csgraph), in name order."""
    import numpy as np
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components
    names = sorted(graph)
    position = {n: i for i, n in enumerate(names)}
    edges = [(position[a], position[b]) for a in names for b in graph[a] if b in position]
    rows, cols = (np.array(x, dtype=np.int64) for x in zip(*edges)) if edges else (np.zeros(0, int),) * 2
    adjacency = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(adjacency, directed=True, connection="strong")
    found = {}
    for name, label in zip(names, labels):
        found.setdefault(label, set()).add(name)
    return sorted((c for c in found.values() if len(c) > 1), key=min)


def test_the_circle_finder_finds_a_circle_through_a_function_local_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [{"a", "b", "c"}]
    tree = ast.parse("import aam.x\ndef f():\n    from aam.training import distributed\n    from . import y\n")
    assert set(_imported_names(tree, "aam.reference")) >= {"aam.x", "aam.training.distributed",
                                                           "aam.reference.y"}


def test_no_import_circles_in_the_engine_or_the_plugin():
    graph = import_graph()
    assert {"aam.training.context", "aam.reference.shipped", "q2_aam.plugin_setup"} <= set(graph)
    found = [sorted(c) for c in circles(graph) if c not in ALLOWED_CIRCLES]
    assert not found, f"import circles (move the shared piece down into a lower module): {found}"


@pytest.mark.parametrize("module, names", [
    ("aam.training.context", ["RunContext", "build_context", "parallelize", "single_process"]),
    ("aam.training.losses", ["GatheredPairwiseLoss", "pairwise_distance_loss", "pairwise_distances"]),
    ("aam.reference.pretrain", ["ReferencePretrainer", "mask_nucleotides", "pretrain", "default_settings"]),
    ("aam.reference.evaluate", ["encode", "evaluate", "validation_metrics", "kmer_profiles"]),
    ("aam.reference.shipped", ["DEFAULT_ENCODER", "ENCODERS_DIR", "EncoderIntegrityError", "FORMAT_VERSION",
                               "WEIGHTS_FORMAT", "available_encoders", "build_encoder", "embed_sequences",
                               "encoder_dir", "load_encoder", "load_region", "read_manifest", "sha256_file"]),
])
def test_moved_names_stay_importable_from_where_callers_import_them(module, names):
    loaded = importlib.import_module(module)
    assert [n for n in names if not hasattr(loaded, n)] == []
