"""Every crate's modules import one another one way (scripts/dev/module_graph.py): glue over
core, IO over decisions, leaf helpers at the bottom. Needs no running gateway."""

import importlib.util
import pathlib
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRATES = [
    "common/src",
    "filter/src",
    "filter/fuzz/fuzz_targets",
    "xds-server/src",
    "emulator/src",
    "tests/src",
    "tests/e2e",
    "bench/src",
]


def _load_checker():
    spec = importlib.util.spec_from_file_location(
        "module_graph", ROOT / "scripts" / "dev" / "module_graph.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


graph = _load_checker()


@pytest.mark.parametrize("crate", CRATES)
def test_modules_import_one_way(crate):
    mods, edges = graph.graph(str(ROOT / crate))
    assert mods, f"{crate}: no modules found"
    circles = graph.circles(mods, edges)
    assert not circles, "\n".join(
        f"{crate}: circle: "
        + ", ".join(graph.name(m) for m in component)
        + "".join(
            f"\n    {graph.name(a)} -> {graph.name(b)}"
            for a in component
            for b in sorted(edges[a] & set(component))
        )
        for component in circles
    )


def test_the_checker_sees_a_parent_and_child_circle(tmp_path):
    """A parent re-exporting its child while the child uses the parent's type is a circle; the
    same child importing from a leaf sibling is not."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "lib.rs").write_text("pub mod a;\n")
    (src / "a" / "mod.rs").write_text(
        "pub mod b;\npub mod types;\npub use b::Thing;\npub struct Shared;\n"
    )
    (src / "a" / "types.rs").write_text("pub struct Leaf;\n")
    (src / "a" / "b.rs").write_text(
        textwrap.dedent(
            """\
            use super::Shared;
            pub struct Thing(Shared);
            #[cfg(test)]
            mod tests {
                use crate::a::Thing;
            }
            """
        )
    )
    mods, edges = graph.graph(str(src))
    assert [graph.name(m) for m in graph.circles(mods, edges)[0]] == ["a", "a::b"]

    (src / "a" / "b.rs").write_text(
        "use super::types::Leaf;\nuse crate::a::types;\npub struct Thing(Leaf);\n"
    )
    mods, edges = graph.graph(str(src))
    assert graph.circles(mods, edges) == []
    assert edges[("a", "b")] == {("a", "types")}


# (crate, lower layer, what it must not name): glue over core, leaf helpers at the bottom.
LAYERS = [
    ("filter/src", ("core",), lambda m: m[:1] != ("core",)),
    ("xds-server/src", ("util",), lambda m: m[:1] != ("util",)),
    ("common/src", ("invalid_key",), lambda m: True),
]


@pytest.mark.parametrize("crate,layer,outside", LAYERS)
def test_lower_layers_do_not_name_the_upper_ones(crate, layer, outside):
    mods, edges = graph.graph(str(ROOT / crate))
    assert any(m[: len(layer)] == layer for m in mods), f"{crate}: no {layer}"
    wrong = sorted(
        (graph.name(a), graph.name(b))
        for a, targets in edges.items()
        if a[: len(layer)] == layer
        for b in targets
        if outside(b)
    )
    assert not wrong, f"{crate}: {graph.name(layer)} names modules above it: {wrong}"
