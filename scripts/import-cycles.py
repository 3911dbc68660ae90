#!/usr/bin/env python3
"""Finds import cycles between the modules of a crate's `src/` (default: gateway/src).

Each file is a module node. An edge A -> B is a `crate::`/`super::`/`self::` path in A that
names B (or an item in B). Edges between a module and its own ancestors are left out: a
parent declares its children, and a child naming its parent's items is how Rust nests. Any
other cycle is reported, with the files on it. Exit status 1 when there is one.
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "gateway/src"


def module_of(path):
    rel = os.path.relpath(path, root)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


modules = {}
for directory, _, files in os.walk(root):
    for name in files:
        if name.endswith(".rs"):
            path = os.path.join(directory, name)
            modules[module_of(path)] = path


def strip_tests(text):
    # Test modules may use anything; they are not part of the import graph.
    index = text.find("#[cfg(test)]")
    return text if index < 0 else text[:index]


def resolve(current, segments):
    """The longest known module named by a path starting in `current`."""
    base = list(current)
    while segments and segments[0] in ("super", "self", "crate"):
        head = segments.pop(0)
        if head == "crate":
            base = []
        elif head == "super":
            base = base[:-1]
    best = None
    for length in range(len(segments), -1, -1):
        candidate = tuple(base + segments[:length])
        if candidate in modules:
            best = candidate
            break
    return best


path_pattern = re.compile(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")
group_pattern = re.compile(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^}]*)\}")

edges = {module: set() for module in modules}
for module, path in modules.items():
    text = strip_tests(open(path, encoding="utf-8").read())
    text = re.sub(r"//[^\n]*", "", text)
    names = [match.split("::") for match in path_pattern.findall(text)]
    for prefix, inner in group_pattern.findall(text):
        for item in inner.split(","):
            item = item.strip().split(" as ")[0].strip()
            if item and item != "self":
                names.append(prefix.split("::") + item.split("::"))
    # A directory module's `super::` is its parent, as for any file.
    for segments in names:
        target = resolve(module, list(segments))
        if target is None or target == module:
            continue
        if target == module[: len(target)] or module == target[: len(module)]:
            continue  # an ancestor or a descendant
        edges[module].add(target)

# Tarjan's strongly connected components.
index_of, low, stack, on_stack, components = {}, {}, [], set(), []
counter = [0]


def visit(node):
    index_of[node] = low[node] = counter[0]
    counter[0] += 1
    stack.append(node)
    on_stack.add(node)
    for other in edges[node]:
        if other not in index_of:
            visit(other)
            low[node] = min(low[node], low[other])
        elif other in on_stack:
            low[node] = min(low[node], index_of[other])
    if low[node] == index_of[node]:
        component = []
        while True:
            other = stack.pop()
            on_stack.discard(other)
            component.append(other)
            if other == node:
                break
        if len(component) > 1:
            components.append(component)


sys.setrecursionlimit(10000)
for node in modules:
    if node not in index_of:
        visit(node)

if not components:
    print(f"{root}: {len(modules)} modules, no import cycle")
    sys.exit(0)
for component in components:
    names = sorted("::".join(module) or "crate" for module in component)
    print("cycle:", ", ".join(names))
sys.exit(1)
