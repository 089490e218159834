#!/usr/bin/env python3
"""Reports import circles between the modules (source files) of each crate.

A module is one file under crates/*/src (or tests/src). An edge A -> B means A names an item of
B through `crate::`, `super::` or `self::` (in a `use` or inline). Edges to a module's own file
are ignored, and so are `mod` declarations. A circle is a strongly connected component of more
than one module. Exit code 1 when any circle is found.

Usage: scripts/module_cycles.py [ROOT]   (ROOT defaults to the repository root)
"""

import re
import sys
from pathlib import Path


def strip_comments(text: str) -> str:
    """Removes block comments, line comments and string literals (they hold no imports)."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    text = re.sub(r"'(?:\\.|[^'\\])'", "' '", text)
    return re.sub(r"//[^\n]*", "", text)


def module_of(src: Path, file: Path) -> tuple:
    """The module path of a source file: src/a/b.rs -> (a, b); src/a/mod.rs -> (a,)."""
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def inline_modules(text: str, here: tuple) -> list:
    """Splits a file's text into (text, module path) parts: inline `mod name { ... }` blocks
    (such as `mod tests`) are modules of their own for `super::` and `self::`."""
    m = re.search(r"\bmod\s+(\w+)\s*\{", text)
    if not m:
        return [(text, here)]
    depth, end = 0, len(text)
    for i in range(m.end() - 1, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                end = i
                break
    inner = inline_modules(text[m.end() : end], here + (m.group(1),))
    return [(text[: m.start()], here)] + inner + inline_modules(text[end + 1 :], here)


def expand_use(tree: str) -> list:
    """Flattens a use tree `a::{b, c::{d, e}}` into ['a::b', 'a::c::d', 'a::c::e']."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        return [re.split(r"\s+as\s+", tree)[0].strip()]
    prefix = tree[:brace]
    inner = tree[brace + 1 : tree.rindex("}")]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    out = []
    for item in items:
        if item.strip():
            out.extend(prefix + p for p in expand_use(item))
    return out


def referenced_paths(text: str) -> list:
    """Every `crate::`/`super::`/`self::` path the text names."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        paths.extend(expand_use(m.group(1)))
    body = re.sub(r"\buse\s+[^;]+;", "", text)
    paths.extend(re.findall(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", body))
    return [p.replace(" ", "").replace("\n", "") for p in paths]


def absolute(path: str, here: tuple):
    """`crate::`/`super::`/`self::` path as parts from the crate root, or None if external."""
    parts = path.split("::")
    if parts[0] == "crate":
        return list(parts[1:])
    if parts[0] not in ("super", "self"):
        return None
    base = list(here)
    while parts and parts[0] in ("super", "self"):
        if parts[0] == "super":
            base = base[:-1]
        parts = parts[1:]
    return base + parts


def resolve(parts: list, modules: set, reexports: dict, depth: int = 0):
    """The module (file) that defines the item `parts` names, following `pub use` re-exports."""
    best, rest = (), list(parts)
    for i in range(1, len(parts) + 1):
        if tuple(parts[:i]) in modules:
            best, rest = tuple(parts[:i]), list(parts[i:])
    if rest and depth < 8 and rest[0] in reexports.get(best, {}):
        return resolve(reexports[best][rest[0]] + rest[1:], modules, reexports, depth + 1)
    return best


def cycles(graph: dict) -> list:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    srcs = sorted(root.glob("crates/*/src")) + [p for p in [root / "tests" / "src"] if p.is_dir()]
    found = 0
    for src in srcs:
        files = sorted(src.rglob("*.rs"))
        # Binaries under src/bin are crates of their own.
        files = [f for f in files if "bin" not in f.relative_to(src).parts[:-1]]
        modules = {module_of(src, f): f for f in files}
        texts = {m: strip_comments(f.read_text()) for m, f in modules.items()}
        reexports = {}
        for mod, text in texts.items():
            for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
                for path in expand_use(m.group(1)):
                    path = path.replace(" ", "").replace("\n", "")
                    if not path.startswith(("crate::", "super::", "self::")):
                        if mod + (path.split("::")[0],) not in modules:
                            continue  # a re-export from another crate
                        path = "self::" + path
                    target = absolute(path, mod)
                    if target and target[-1] not in ("*", "self"):
                        reexports.setdefault(mod, {})[target[-1]] = target
        graph = {}
        for mod, text in texts.items():
            edges = set()
            refs = [(p, h) for part, h in inline_modules(text, mod) for p in referenced_paths(part)]
            for path, here in refs:
                if not path.startswith(("crate::", "super::", "self::")):
                    # A `use` of a child module's items (`use config::X` in lib.rs).
                    if path.split("::")[0] and (here + (path.split("::")[0],)) in modules:
                        path = "self::" + path
                    else:
                        continue
                parts = absolute(path, here)
                if parts is None:
                    continue
                target = resolve(parts, set(modules), reexports)
                if target != mod:
                    edges.add(target)
            graph[mod] = edges
        crate = src.parent.name
        for comp in cycles(graph):
            found += 1
            names = ", ".join("::".join(m) or "(crate root)" for m in comp)
            print(f"{crate}: circle between {names}")
    if not found:
        print(f"no module import circles in {len(srcs)} crates")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
