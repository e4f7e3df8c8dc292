#!/usr/bin/env python3
"""Lists the import circles among a crate's source files (none is the goal).

Usage: scripts/module-cycles.py [--top] [crates/server/src]

With --top, each top-level module (`api`, `web`, `ops`, ...) counts as one node.

Each file is a module (`lib.rs` the crate, `x/mod.rs` and `x.rs` the module `x`). An edge
goes from a file to the file of every module it names by a `crate::` or `super::` path
(in a `use` or inline), the longest existing module prefix of the path. `mod x;` declarations
are not edges, and unit tests (`#[cfg(test)]` onwards) are left out: `super::*` there names
the file itself. Exits 1 when a circle is found, printing each one.
"""
import re
import sys
from pathlib import Path

args = [a for a in sys.argv[1:] if a != "--top"]
top = "--top" in sys.argv
root = Path(args[0] if args else "crates/server/src")
files = {}
for f in root.rglob("*.rs"):
    rel = f.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts == ["lib"] or parts == ["main"]:
        parts = []
    elif parts[-1] == "mod":
        parts = parts[:-1]
    files[tuple(parts)] = f


def expand(prefix, tree):
    """`a::{b, c::{d, self}}` -> [a::b, a::c::d, a::c]."""
    tree = tree.strip()
    if not tree.startswith("{"):
        return [prefix + [p for p in tree.split("::") if p]]
    out, depth, item = [], 0, ""
    for ch in tree[1:-1] + ",":
        if ch == "," and depth == 0:
            item = item.strip()
            if item == "self":
                out.append(prefix)
            elif "{" in item:
                head, _, rest = item.partition("::{")
                out += expand(prefix + head.split("::"), "{" + rest)
            elif item:
                out.append(prefix + item.split("::"))
            item = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        item += ch
    return out


def paths_in(text):
    text = re.sub(r"//[^\n]*", "", text)
    for m in re.finditer(r"\b(crate|super)((?:::\w+)*)(::\{)?", text):
        base = [m.group(1)] + [p for p in m.group(2).split("::") if p]
        if m.group(3):
            # A brace group: find its end.
            start = m.end() - 1
            depth = 0
            for i in range(start, len(text)):
                depth += text[i] == "{"
                depth -= text[i] == "}"
                if depth == 0:
                    yield from expand(base, text[start : i + 1])
                    break
        else:
            yield base


edges = {}
for mod, f in files.items():
    text = f.read_text()
    text = text.split("#[cfg(test)]")[0]
    targets = set()
    for path in paths_in(text):
        if path[0] == "crate":
            full = path[1:]
        else:
            # `super` is the parent module (x/y.rs's and x/y/mod.rs's is x).
            full = list(mod)
            while path and path[0] == "super":
                path, full = path[1:], full[:-1]
            full = full + path
        for n in range(len(full), -1, -1):
            if tuple(full[:n]) in files:
                if tuple(full[:n]) != mod:
                    targets.add(tuple(full[:n]))
                break
    edges[mod] = targets

if top:
    # One node per top-level module; the crate root stays apart.
    group = lambda m: m[:1]
    merged = {}
    for m, ts in edges.items():
        merged.setdefault(group(m), set()).update(t for t in map(group, ts) if t != group(m))
    files = {m: files.get(m, root / ("/".join(m) or "lib")) for m in merged}
    edges = merged

name = lambda m: str(files[m].relative_to(root))
cycles, seen = [], set()


def visit(node, stack, on_stack):
    for nxt in sorted(edges[node]):
        if nxt in on_stack:
            cycle = stack[stack.index(nxt) :]
            key = frozenset(cycle)
            if key not in seen:
                seen.add(key)
                cycles.append(cycle)
        elif nxt not in done:
            on_stack.add(nxt)
            visit(nxt, stack + [nxt], on_stack)
            on_stack.discard(nxt)
    done.add(node)


done = set()
for m in sorted(files):
    if m not in done:
        visit(m, [m], {m})
for c in cycles:
    print(" -> ".join(name(m) for m in c + [c[0]]))
print(f"{len(files)} files, {sum(map(len, edges.values()))} edges, {len(cycles)} circles")
sys.exit(1 if cycles else 0)
