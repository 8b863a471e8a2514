#!/usr/bin/env python3
"""Checks that a Rust crate's modules import one another one way: no circles.

Reads every `.rs` file under a crate's `src/` (tests excluded: `tests.rs`, `*/tests/*`,
inline `#[cfg(test)] mod tests { ... }`), collects the modules each one names (paths starting
with `crate::`, `super::`, or a child module's name), and prints the strongly connected
components of that graph. A child naming its parent's items and the parent naming the child
is a circle like any other. Exit status 1 when there is one.

    python3 scripts/dev/module_graph.py xds-server/src [more crate dirs...]
"""
import os
import re
import sys
from collections import defaultdict

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def modules(src):
    """{module path tuple: file} for every module file of the crate."""
    found = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                parts = []
            found[tuple(parts)] = path
    return found


def is_test(module):
    return "tests" in module or "bin" in module[:1]


def without_tests(text):
    text = re.sub(r"//[^\n]*", "", text)
    # An inline test module runs to the end of the file in this code base's style; cut it.
    match = re.search(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+\w+\s*\{", text)
    return text[: match.start()] if match else text


def split_top(inner):
    depth, current, items = 0, "", []
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    return [re.sub(r"\s+", "", item) for item in items if item.strip()]


def expand(prefix, tree):
    """The paths of a use tree: `a::{b, c::{d, e}}` gives a::b, a::c::d, a::c::e."""
    tree = re.sub(r"\s+", "", tree)
    match = re.match(r"^((?:" + IDENT + r"::)*)\{(.*)\}$", tree, re.S)
    if match:
        head = prefix + [s for s in match.group(1).split("::") if s]
        paths = []
        for item in split_top(match.group(2)):
            paths.extend(expand(head, item))
        return paths
    return [prefix + [s for s in tree.split("::") if s]]


def references(text):
    """(first segment, rest of the path) of every path in the text, use trees expanded."""
    text = re.sub(r"\s+as\s+" + IDENT, "", text)
    refs = []
    pattern = re.compile(
        r"(?<![A-Za-z0-9_:])(" + IDENT + r")::((?:" + IDENT + r"::)*)(\{[^;]*\}|" + IDENT + ")",
        re.S,
    )
    for match in pattern.finditer(text):
        head, middle, tail = match.group(1), match.group(2), match.group(3)
        middle = [s for s in middle.split("::") if s]
        if tail.startswith("{"):
            for path in expand([], tail):
                refs.append((head, middle + path))
        else:
            refs.append((head, middle + [tail]))
    return refs


def graph(src):
    mods = modules(src)
    edges = defaultdict(set)
    for module, path in mods.items():
        if is_test(module):
            continue
        text = without_tests(open(path, encoding="utf-8").read())
        children = set(re.findall(r"\bmod\s+(" + IDENT + r")\s*;", text))
        for head, rest in references(text):
            segments = [s for s in rest if s and s != "self"]
            if head == "crate":
                full = tuple(segments)
            elif head == "super":
                ups = 1
                while segments and segments[0] == "super":
                    ups += 1
                    segments = segments[1:]
                full = module[: max(len(module) - ups, 0)] + tuple(segments)
            elif head == "self":
                full = module + tuple(segments)
            elif head in children:
                full = module + (head,) + tuple(segments)
            else:
                continue
            target = ()
            for k in range(len(full), 0, -1):
                if full[:k] in mods:
                    target = full[:k]
                    break
            if target != module and not is_test(target):
                edges[module].add(target)
    return mods, edges


def circles(mods, edges):
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(100000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(mods):
        if v not in index:
            visit(v)
    return found


def name(module):
    return "::".join(module) or "crate"


def main(dirs):
    failed = False
    for src in dirs:
        mods, edges = graph(src)
        for component in circles(mods, edges):
            failed = True
            members = set(component)
            print(f"{src}: circle: {', '.join(name(m) for m in component)}")
            for a in component:
                for b in sorted(edges[a] & members):
                    print(f"    {name(a)} -> {name(b)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
