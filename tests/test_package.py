import ast
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_mxprune_does_not_import_gluoncv():
    code = 'import sys, mxprune; print("gluoncv" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'


def test_one_version_source():
    import mxprune
    from mxprune.version import __version__
    assert mxprune.__version__ == __version__
    setup_py = open(os.path.join(ROOT, 'setup.py'), encoding='utf-8').read()
    assert 'version=VERSION' in setup_py and not re.search(r"version='\d", setup_py)


# Import direction, the intended one (STYLE.md), lowest first: a module imports only its own layer or lower ones.
# A package (graph/, allocation/, detection/, ...) counts as its top-level name, wherever its modules are split.
LAYERS = [
    {'errors', 'registry', 'version', 'io', 'progress', 'config', 'commands.bootstrap'},  # and the support modules
    {'graph', 'layers', 'masks'},
    {'criteria', 'schedules', 'latency', 'benchmark'},  # benchmark: the whole-net timing under latency's table
    {'allocation', 'modifiers', 'shrink', 'flops'},
    {'session', 'recipe', 'export'},
    {'zoo', 'data', 'train', 'detection', 'pipeline', 'distributed', 'sensitivity', 'robustness', 'plots'},
    {'cli', 'commands', 'console', '__main__'},  # and tools/, which import the public API only
]
# the only modules that may import gluoncv (`import mxprune` must not need it)
GLUONCV_OK = {'zoo', 'data', 'train', 'detection', 'pipeline'}
# imports against the order that the code still has, each with its reason; the test fails once one is gone, so the
# list only shrinks
KNOWN = {('latency', 'flops'): 'latency.Predictor is a cost model built on flops.LayerCost and flops.Shapes'}


def _layer(mod):
    for i, layer in enumerate(LAYERS):
        if mod in layer:
            return i
    raise AssertionError(f'mxprune.{mod} is in no layer of the import-direction table')


def _imports(path):
    """Top-level mxprune modules a file imports (relative imports resolved against the file's package)."""
    rel = os.path.relpath(path, os.path.join(ROOT, 'mxprune')).replace(os.sep, '/')
    package = ['mxprune'] + rel.split('/')[:-1]
    tree = ast.parse(open(path, encoding='utf-8').read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = package[:len(package) - (node.level - 1)]
            names = [node.module] if node.module else [a.name for a in node.names]
            for name in names:
                full = base + name.split('.')
                if len(full) > 1:
                    yield full[1]
        elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('mxprune.'):
            yield node.module.split('.')[1]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith('mxprune.'):
                    yield a.name.split('.')[1]
                if a.name.split('.')[0] == 'gluoncv':
                    yield 'gluoncv'
        if isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] == 'gluoncv':
            yield 'gluoncv'


def test_import_direction():
    pkg, found, seen = os.path.join(ROOT, 'mxprune'), [], set()
    for dirpath, _, files in os.walk(pkg):
        for f in files:
            if not f.endswith('.py') or f == '__init__.py' and dirpath == pkg:
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), pkg)
            mod = rel[:-len('.py')].replace(os.sep, '.')  # a submodule can have a layer of its own
            mod = mod if any(mod in layer for layer in LAYERS) else mod.split('.')[0]
            for imp in _imports(os.path.join(dirpath, f)):
                if imp == 'gluoncv' and mod not in GLUONCV_OK:
                    found.append(f'mxprune/{rel} imports gluoncv')
                elif imp not in ('gluoncv', mod) and _layer(imp) > _layer(mod):
                    seen.add((mod, imp))
                    if (mod, imp) not in KNOWN:
                        found.append(f'mxprune/{rel} imports mxprune.{imp} (a higher layer)')
    assert not found, '\n'.join(found)
    assert seen == set(KNOWN), f'no longer imported against the order, remove from KNOWN: {set(KNOWN) - seen}'


# Gluon private attributes (STYLE.md): only mxprune/layers/ may read them. The rule, outside mxprune/layers/:
# `x._name` and getattr/setattr/hasattr/delattr(x, '_name') are refused, except on `self`, `cls` and `super()`
# (a class's own state and its base's hooks), on names the module itself defines at top level, for attributes
# named `_mxprune...` (mxprune's own markers on Gluon classes) and for `os._exit` (a public stdlib function).
# Dunders (`__name__`) are not private.
PRIVATE_OK = {('os', '_exit')}


def _private_accesses(source):
    tree = ast.parse(source)
    own = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                own.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))

    def refused(obj, attr):
        if not attr.startswith('_') or attr.startswith('__') or attr.startswith('_mxprune'):
            return False
        if isinstance(obj, ast.Name) and (obj.id in ('self', 'cls') or obj.id in own or (obj.id, attr) in PRIVATE_OK):
            return False
        is_super = isinstance(obj, ast.Call) and isinstance(obj.func, ast.Name) and obj.func.id == 'super'
        return not is_super

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and refused(node.value, node.attr):
            yield f'{node.lineno}: {ast.unparse(node)}'
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ('getattr', 'setattr', 'hasattr', 'delattr') and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and refused(node.args[0], node.args[1].value)):
            yield f'{node.lineno}: {ast.unparse(node)}'


def test_gluon_private_attributes_are_touched_only_in_layers():
    # the rule catches what it is meant to
    caught = list(_private_accesses('def f(trainer, p, F):\n    trainer._updaters\n'
                                    "    getattr(trainer, '_param2idx', {})\n    super()._x\n    p.__class__\n"))
    assert caught == ['2: trainer._updaters', "3: getattr(trainer, '_param2idx', {})"]
    pkg = os.path.join(ROOT, 'mxprune')
    found = []
    for dirpath, _, files in os.walk(pkg):
        if os.path.relpath(dirpath, pkg).replace(os.sep, '/').split('/')[0] == 'layers':
            continue
        for f in files:
            if f.endswith('.py'):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)
                found += [f'{rel}:{hit}' for hit in _private_accesses(open(path, encoding='utf-8').read())]
    assert not found, 'Gluon private attributes outside mxprune/layers/ (add a function to ' \
                      'mxprune/layers/gluon_compat.py):\n' + '\n'.join(found)


def test_no_private_name_is_imported_across_modules():
    # a helper another module needs is a public name of its module (STYLE.md): `from .x import _y` is refused
    found = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, 'mxprune')):
        for f in files:
            if f.endswith('.py'):
                path = os.path.join(dirpath, f)
                for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
                    if isinstance(node, ast.ImportFrom) and (node.level or (node.module or '').startswith('mxprune')):
                        found += [f'{os.path.relpath(path, ROOT)}:{node.lineno}: {a.name}' for a in node.names
                                  if a.name.startswith('_') and not a.name.startswith('__')]
    assert not found, 'private names imported across modules:\n' + '\n'.join(found)
