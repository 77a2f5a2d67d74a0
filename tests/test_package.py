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


# Import direction (STYLE.md): a module may import only modules of its own layer or lower ones.
LAYERS = [
    {'version', 'errors', 'registry', 'config', 'io', 'progress', 'commands.bootstrap'},
    {'graph', 'layers', 'masks'},
    {'criteria', 'schedules', 'flops', 'latency'},
    {'allocation', 'modifiers', 'shrink', 'benchmark'},
    {'session', 'recipe', 'export', 'cli'},
    {'zoo', 'data', 'train'},
    {'pipeline', 'sensitivity', 'distributed', 'detection', 'robustness', 'plots'},
    {'commands', 'console', '__main__'},
]
GLUONCV_OK = {'zoo', 'data', 'train', 'pipeline', 'sensitivity', 'distributed', 'detection',
              'robustness', 'plots'}


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
    pkg = os.path.join(ROOT, 'mxprune')
    for dirpath, _, files in os.walk(pkg):
        for f in files:
            if not f.endswith('.py') or f == '__init__.py' and dirpath == pkg:
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), pkg)
            mod = rel[:-len('.py')].replace(os.sep, '.')  # a submodule can have a layer of its own
            mod = mod if any(mod in layer for layer in LAYERS) else mod.split('.')[0]
            for imp in _imports(os.path.join(dirpath, f)):
                if imp == 'gluoncv':
                    assert mod in GLUONCV_OK, f'mxprune/{rel} imports gluoncv'
                    continue
                if imp == mod:
                    continue
                assert _layer(imp) <= _layer(mod), f'mxprune/{rel} imports mxprune.{imp} (a higher layer)'
