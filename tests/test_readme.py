"""The README's API example runs as written, and its two set-up commands are the ones CI runs."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read()


def _block(marker: str) -> str:
    m = re.search(rf'<!-- {marker} -->\n```(?:python|bash)\n(.*?)```', README, re.S)
    assert m, marker
    return m.group(1)


def test_api_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _block('api-example')
    exec(compile(code, 'README.md (api-example)', 'exec'), {})
    out = capsys.readouterr().out
    assert 'Group' in out and 'features.2.0.body.3 (Conv2D) out channels' in out
    ratio = float([ln for ln in out.splitlines() if ln.strip()][-1])
    assert ratio <= 0.5
    for f in ('r20_pruned.params', 'r20_pruned.plan.json', 'r20_pruned-symbol.json', 'r20_pruned-0000.params'):
        assert (tmp_path / f).exists(), f


def test_setup_commands_are_the_ones_ci_runs():
    main, tests = _block('main-command').strip(), _block('test-command').strip()
    assert main.startswith('pip install -e . && python tools/prune.py --recipe recipes/quickstart.yaml')
    assert tests == "pip install -e '.[test]' && python -m pytest -q"
    ci = open(os.path.join(ROOT, '.ci', 'run'), encoding='utf-8').read()
    assert '<!-- test-command -->' in ci and 'eval "$test_cmd"' in ci
    assert '\npython -m pytest -q -m e2e\n' in ci  # what the fast suite leaves out still runs in CI
