#!/usr/bin/env python3
"""Fails when files (or top-level modules) of src/ import each other in a circle.

Usage: hack/check-import-cycles.py [SRC_DIR] [file|top]

Edges are paths through crate::, super:: and self:: and a parent's uses of its declared child
modules; test modules (after `#[cfg(test)]`) are ignored. A child using its parent's re-exports
counts as a cycle on purpose: import the defining file instead.
"""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.join(d, f)
            rel = os.path.relpath(p, root)[:-3]
            parts = rel.split(os.sep)
            if parts[-1] in ('mod', 'lib', 'main'):
                parts = parts[:-1]
            files[tuple(parts)] = p
def resolve(mod, path):
    # path: list of segments after crate:: ; find longest prefix that is a file
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in files:
            return tuple(path[:n])
    return None
edges = {m: set() for m in files}
for mod, p in files.items():
    src = open(p).read()
    # strip test modules
    i = src.find('#[cfg(test)]')
    if i >= 0:
        src = src[:i]
    # Doc and line comments name modules without depending on them.
    src = re.sub(r'//[^\n]*', '', src)
    # A visibility (`pub(in crate::a)`) restricts who may use an item; it imports nothing.
    src = re.sub(r'pub\(in [^)]*\)', 'pub', src)
    is_dir_mod = p.endswith('mod.rs') or p.endswith('lib.rs')
    here = list(mod) if is_dir_mod else list(mod[:-1])
    for m in re.finditer(r'\b(crate|super|self)((?:::\w+)+)', src):
        kind, rest = m.group(1), [s for s in m.group(2).split('::') if s]
        if kind == 'crate':
            base = []
        elif kind == 'self':
            base = list(mod)
        else:
            base = list(mod[:-1])
            while rest and rest[0] == 'super':
                rest = rest[1:]; base = base[:-1]
        # expand braces: crate::a::{b, c} handled roughly by taking first segment
        target = resolve(mod, base + rest)
        if target and target != mod:
            edges[mod].add(target)
    # uses of declared child modules by relative path (`install::decide_install`, `pub use report::X`)
    if is_dir_mod:
        for child in re.findall(r'^\s*(?:pub(?:\([^)]*\))? )?mod (\w+);', src, re.M):
            body = re.sub(r'^\s*(?:pub(?:\([^)]*\))? )?mod \w+;', '', src, flags=re.M)
            if re.search(r'(?<![\w:])' + child + r'::', body):
                t = resolve(mod, list(mod) + [child])
                if t and t != mod:
                    edges[mod].add(t)
    # braces like use crate::x::{a::b, c}
    for m in re.finditer(r'\b(crate|super)::((?:\w+::)*)\{([^}]*)\}', src):
        kind, pre, inner = m.group(1), [s for s in m.group(2).split('::') if s], m.group(3)
        base = [] if kind == 'crate' else list(mod[:-1])
        for item in inner.split(','):
            seg = [s for s in item.strip().split('::') if s and s != 'self']
            t = resolve(mod, base + pre + seg[:1])
            if t and t != mod:
                edges[mod].add(t)
level = sys.argv[2] if len(sys.argv) > 2 else 'file'
if level == 'top':
    top = {}
    for m, ts in edges.items():
        a = m[:1]
        top.setdefault(a, set())
        for t in ts:
            if t[:1] != a:
                top[a].add(t[:1])
    edges = top
# find cycles (SCCs)
index = {}; low = {}; stack = []; on = set(); sccs = []; c = [0]
def strong(v):
    index[v] = low[v] = c[0]; c[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1:
            sccs.append(comp)
sys.setrecursionlimit(10000)
for v in edges:
    if v not in index:
        strong(v)
for comp in sccs:
    names = ['/'.join(m) or 'lib' for m in comp]
    print('cycle:', ', '.join(sorted(names)))
    for m in comp:
        for t in edges[m]:
            if t in comp:
                print('   ', '/'.join(m), '->', '/'.join(t))
if not sccs:
    print('no import cycles among', len(files), 'files')
else:
    sys.exit(1)
