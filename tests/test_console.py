"""The `mxprune` command: its help and its errors come before MXNet loads, and it lists every command."""
import importlib
import os
import subprocess
import sys
from importlib import metadata

import pytest

from mxprune import cli, console

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = sorted(console.COMMANDS)
# runs the console in a fresh interpreter and says whether MXNet got imported; --help ends in SystemExit
PROBE = '''import sys
from mxprune import console
try:
    code = console.main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print('exit', code, 'mxnet' in sys.modules, any(m.startswith('mxprune.commands.') for m in sys.modules))
'''


def _run(*args, code=None):
    cmd = [sys.executable, '-c', code, *args] if code else [sys.executable, '-m', 'mxprune', *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)


def _probe(*args):
    out = _run(*args, code=PROBE)
    assert out.returncode == 0, out.stderr
    return out.stdout, out.stdout.splitlines()[-1]


def test_help_lists_every_command_and_loads_none():
    out = _run('--help')
    assert out.returncode == 0 and out.stderr == ''
    for name in COMMANDS:
        assert f'\n  {name} ' in out.stdout, name
    assert _probe('--help')[1] == 'exit 0 False False'


def test_the_table_names_every_command_module():
    modules = {f[:-3] for f in os.listdir(os.path.join(ROOT, 'mxprune', 'commands')) if f.endswith('.py')}
    assert set(COMMANDS) == modules - {'__init__', 'bootstrap'}


@pytest.mark.parametrize('name', COMMANDS)
def test_command_help_shows_examples_and_defaults_before_mxnet(name):
    stdout, last = _probe(name, '--help')
    assert last == 'exit 0 False True', stdout
    assert stdout.startswith(f'usage: mxprune {name} ')
    examples = [ln for ln in stdout.splitlines() if ln.startswith(f'    mxprune {name} ')]
    assert len(examples) >= 2, stdout
    module = importlib.import_module(f'mxprune.commands.{name}')
    assert callable(module.arguments) and callable(module.main)


def test_defaults_are_shown_and_true():
    assert '(default runs/<recipe name>-train)' in _run('train', '--help').stdout
    assert '(default runs/<recipe name>)' in _run('prune', '--help').stdout
    bench = _run('benchmark', '--help').stdout
    assert '(default: 1,64)' in bench and '(default: 7)' in bench and '(default: None)' not in bench
    from mxprune.commands import train
    p = cli.command_parser('train', '')
    train.arguments(p)
    args = p.parse_args(['--recipe', 'recipes/cifar_l2.yaml'])
    assert train.out_folder(args, train.OUT_SUFFIX) == os.path.join('runs', 'cifar_l2-train')


@pytest.mark.parametrize('args, needle', [(['prnue'], "unknown command 'prnue'"),
                                          (['--bogus'], "unknown option '--bogus'")])
def test_unknown_command_is_one_line_and_exit_2(args, needle):
    out = _run(*args)
    assert out.returncode == 2 and out.stdout == ''
    assert out.stderr.count('\n') == 1 and needle in out.stderr
    assert all(name in out.stderr for name in COMMANDS)


def test_argument_errors_of_a_command_are_one_line():
    out = _run('prune')
    assert out.returncode == 2
    assert out.stderr == 'mxprune prune: error: the following arguments are required: --recipe\n'
    out = _run('benchmark', '--run', 'r', '--repeats', 'many')
    assert out.returncode == 2 and out.stderr.count('\n') == 1 and "invalid int value: 'many'" in out.stderr


def test_version_and_the_installed_script():
    from mxprune.version import __version__
    out = _run('--version')
    assert out.returncode == 0 and out.stdout == f'mxprune {__version__}\n'
    scripts = {e.name: e.value for e in metadata.entry_points(group='console_scripts')}
    assert scripts.get('mxprune') == 'mxprune.console:main', 'reinstall: pip install -e . --no-deps'


def test_tool_scripts_are_the_same_commands():
    out = subprocess.run([sys.executable, 'tools/prune.py', '--help'], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.startswith('usage: mxprune prune ')


def test_bootstrap_picks_once_and_leaves_mxnet_to_the_command():
    code = '''import os, sys
from mxprune.commands import bootstrap
started = []
bootstrap._start_engine_quietly = lambda: started.append(1)  # the real one imports MXNet
first, second = bootstrap.start(), bootstrap.start()
print(first == second, len(started) <= 1, os.environ['OMP_NUM_THREADS'], 'mxnet' in sys.modules)
'''
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'MXNET_ENGINE_TYPE')}
    env['MXPRUNE_LOCAL_PROCS'] = '100000'
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['True', 'True', '1', 'False']


def _report(folder, dense, pruned, metric):
    import json
    os.makedirs(folder)
    report = {'model': 'm', 'dense': {metric: dense, 'macs': 100e6, 'params': 1e6},
              'pruned': {metric: pruned, 'macs': 50e6, 'params': 0.6e6}, 'ratios': {'macs': 0.5, 'params': 0.6}}
    with open(os.path.join(folder, 'report.json'), 'w') as f:
        json.dump(report, f)


def test_compare_reads_detection_reports_beside_classification_ones(tmp_path, capsys):
    from mxprune.commands import compare
    _report(tmp_path / 'cls', 0.83, 0.81, 'top1')
    _report(tmp_path / 'det', 0.62, 0.60, 'map')
    out = tmp_path / 'cmp.png'
    assert compare.main([str(tmp_path / 'cls'), str(tmp_path / 'det'), '--out', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'top-1' in text and 'mAP' in text and '0.6000' in text
    assert out.exists() and (tmp_path / 'cmp-map.png').exists()
