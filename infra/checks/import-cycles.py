#!/usr/bin/env python3
"""Fails when the library's modules import each other in a cycle (STYLE: imports read top-down).

    python3 infra/checks/import-cycles.py [lib/src]

Reads every .rs file below the folder, takes each path that starts with `crate::` or `super::`
(in `use` trees, braces expanded, and inline in code), resolves it to the file that defines the
module it names, and looks for strongly connected groups of files. A file's own submodules
(`mod x;` in it) are not imports. Prints each cycle and exits 1, or prints the file count and exits 0.
Standard library only.
"""

import re
import sys
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "lib/src")


def module_of(path):
    """The module path of a file: lib.rs -> (), a/mod.rs -> (a,), a/b.rs -> (a, b)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return tuple(parts)


def file_of(module):
    """The file that defines `module`, if one does."""
    base = ROOT.joinpath(*module) if module else ROOT
    for candidate in (base.with_suffix(".rs"), base / "mod.rs") if module else (ROOT / "lib.rs",):
        if candidate.is_file():
            return candidate
    return None


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        return [tree]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rfind("}")]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    return [p for item in items if item.strip() for p in expand(prefix + item.strip())]


def paths_in(text):
    """Every `crate::…` and `super::…` path a file names."""
    found = []
    for tree in re.findall(r"\buse\s+([^;]+);", text):
        found += [p for p in expand(tree) if p.startswith(("crate::", "super::"))]
    found += re.findall(r"(?<![\w:])((?:crate|super)(?:::\w+)+)", text)
    return found


def resolve(path, here):
    """The file a path leads to: the longest module prefix that has a file."""
    segments = [s.strip() for s in path.split("::")]
    segments = [s.split(" as ")[0].strip() for s in segments]
    if segments[0] == "crate":
        module, rest = (), segments[1:]
    else:
        module, rest = here, segments
        # `super` from a/b.rs (module a::b) is a; from a/mod.rs (module a) it is the crate.
        while rest and rest[0] == "super":
            module, rest = module[:-1], rest[1:]
    best = file_of(module)
    for segment in rest:
        module = module + (segment,)
        candidate = file_of(module)
        if candidate is None:
            break
        best = candidate
    return best


def cycles(graph):
    """Tarjan's strongly connected components of more than one file."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    files = sorted(ROOT.rglob("*.rs"))
    graph = {}
    for f in files:
        here = module_of(f)
        text = strip_comments(f.read_text())
        own = {file_of(here + (m,)) for m in re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M)}
        targets = {resolve(p, here) for p in paths_in(text)}
        graph[f] = {t for t in targets if t is not None and t != f and t not in own}
    found = cycles(graph)
    rel = lambda p: str(p.relative_to(ROOT))  # noqa: E731
    if found:
        for component in found:
            print("import cycle among: " + ", ".join(rel(p) for p in component))
            for p in component:
                print(f"  {rel(p)} -> " + ", ".join(sorted(rel(t) for t in graph[p] if t in component)))
        sys.exit(1)
    print(f"import cycles: none among {len(files)} files")


if __name__ == "__main__":
    main()
