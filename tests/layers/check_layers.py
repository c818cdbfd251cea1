#!/usr/bin/env python3
"""Checks that runtime/ and bindings/ depend one way, layer on layer.

A module is a .c file with its .h (runtime/core/http.c and runtime/core/http.h
are one module); its layer is its folder (bindings/ is part of the Lua layer).
Two kinds of dependency are read: `#include "..."` lines, and calls, taken from
the built objects with nm (a module that leaves a symbol undefined depends on
the module whose object defines it). Fails on:
  - a dependency from a layer to one that LAYERS does not list below it;
  - a cycle between modules (each cycle named once, its modules in order).
The layering itself is explained in docs/layers.md.

usage: check_layers.py SOURCE_DIR OBJECT_DIR
  OBJECT_DIR: the devloop_obj objects (build/CMakeFiles/devloop_obj.dir)
"""
import os
import re
import subprocess
import sys

# layer -> the layers it may use. Keep in step with docs/layers.md.
LAYERS = {
    'include': set(),
    'common': {'include'},
    'transport': {'include', 'common'},
    'backend': {'include', 'common'},
    'outbound': {'include', 'common', 'transport'},
    'cache': {'include', 'common', 'backend'},
    'store': {'include', 'common', 'backend'},
    'core': {'include', 'common'},
    'http1': {'include', 'common', 'transport', 'core'},
    'http2': {'include', 'common', 'transport', 'core'},
    'inproc': {'include', 'common', 'core'},
    'lua': {'include', 'common', 'backend', 'outbound', 'cache', 'store', 'core'},
    'server': {'include', 'common', 'transport', 'backend', 'outbound', 'cache', 'store', 'core',
               'http1', 'http2', 'inproc', 'lua'},
    'main': {'include'},
}

# Dependencies the redesign of issue 19 is still taking out, one per line as
# check_layers.py prints them ("a -> b (include|call)"). The check fails when
# one of them is gone but still listed, so the list only shrinks.
KNOWN = 'known_violations.txt'


def modules(src):
    mods = {}
    for top in ('runtime', 'bindings'):
        for dp, _, files in os.walk(os.path.join(src, top)):
            for f in files:
                if f.endswith(('.c', '.h')):
                    path = os.path.relpath(os.path.join(dp, f), src)
                    mods.setdefault(path[:-2], []).append(path)
    return mods


def layer_of(mod):
    parts = mod.split('/')
    if parts[0] == 'bindings':
        return 'lua'
    if len(parts) == 2:  # runtime/main
        return 'main'
    return parts[1]


def include_edges(src, mods):
    edges = set()
    by_name = {}
    for mod in mods:
        by_name.setdefault(os.path.basename(mod), []).append(mod)
    inc = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
    for mod, paths in mods.items():
        for path in paths:
            text = open(os.path.join(src, path), errors='replace').read()
            for name in inc.findall(text):
                target = None
                for root in ('runtime', '', os.path.dirname(path), 'runtime/include'):
                    cand = os.path.normpath(os.path.join(root, name))
                    if cand[:-2] in mods and cand.endswith(('.h', '.c')):
                        target = cand[:-2]
                        break
                if target is None:
                    continue  # a generated or system-side header
                if target != mod:
                    edges.add((mod, target, 'include'))
    return edges


def call_edges(src, objdir, mods):
    defined, undefined = {}, {}
    objects = []
    for dp, _, files in os.walk(objdir):
        for f in files:
            if f.endswith('.c.o'):
                mod = os.path.relpath(os.path.join(dp, f), objdir)[:-4]
                if mod in mods and os.path.exists(os.path.join(src, mod + '.c')):
                    objects.append((mod, os.path.join(dp, f)))
    if not objects:
        sys.exit('check_layers: no objects of runtime/ under %s (build first)' % objdir)
    for mod, obj in objects:
        out = subprocess.run(['nm', '--defined-only', '-g', obj], capture_output=True,
                             text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3:
                defined[parts[2]] = mod
        out = subprocess.run(['nm', '-u', obj], capture_output=True, text=True,
                             check=True).stdout
        undefined[mod] = {line.split()[-1] for line in out.splitlines() if line.strip()}
    edges = set()
    for mod, syms in undefined.items():
        for sym in syms:
            target = defined.get(sym)
            if target and target != mod:
                edges.add((mod, target, 'call'))
    return edges


def cycles(edges):
    graph = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    # Tarjan's strongly connected components
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, objdir = sys.argv[1], sys.argv[2]
    mods = modules(src)
    for mod in mods:
        if layer_of(mod) not in LAYERS:
            print('%s: folder %s is not a layer of check_layers.py' % (mod, layer_of(mod)))
            return 1
    edges = include_edges(src, mods) | call_edges(src, objdir, mods)
    found = []
    for a, b, kind in sorted(edges):
        la, lb = layer_of(a), layer_of(b)
        if la != lb and lb not in LAYERS[la]:
            found.append('%s -> %s (%s)' % (a, b, kind))
    for comp in cycles(edges):
        found.append('cycle: ' + ' '.join(comp))
    known_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), KNOWN)
    known = []
    if os.path.exists(known_path):
        known = [l.strip() for l in open(known_path)
                 if l.strip() and not l.startswith('#')]
    new = [f for f in found if f not in known]
    gone = [k for k in known if k not in found]
    for f in new:
        print('upward or cyclic dependency: ' + f)
    for k in gone:
        print('%s lists a dependency that is gone (delete the line): %s' % (KNOWN, k))
    print('%d modules, %d dependencies, %d known violations left' %
          (len(mods), len(edges), len(known)))
    return 1 if new or gone else 0


if __name__ == '__main__':
    sys.exit(main())
