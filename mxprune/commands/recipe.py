"""Recipes described, validated and resolved, without running anything.

    mxprune recipe --schema                          # every recipe key: type, default, allowed values, meaning
    mxprune recipe --schema --format md > docs/recipes.md
    mxprune recipe --check recipes/cifar_l2.yaml --set finetune.epochs=30
    mxprune recipe --resolve recipes/quickstart.yaml > resolved.yaml   # every default filled in

--check prints `<file>: ok (<model>, <n> pruning items)`, or the first problem on one line and exits with 2.
--resolve prints what a run folder's recipe.yaml would hold. The schema is read from the recipe dataclasses and
the criterion, allocator and schedule registries, so it lists exactly what --check accepts.
"""
import argparse
import dataclasses
from typing import Any, Dict, List, Optional

from mxprune import cli
from mxprune.commands import bootstrap
from mxprune.config import Key, Section

REGENERATE = 'mxprune recipe --schema --format md > docs/recipes.md'


def arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument('--schema', action='store_true', help='print every recipe key')
    what.add_argument('--check', metavar='RECIPE', help='validate a recipe file')
    what.add_argument('--resolve', metavar='RECIPE', help='print a recipe file with every default filled in')
    p.add_argument('--format', choices=('text', 'md'), help='--schema: plain text (default) or Markdown tables')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help='--check, --resolve: override a recipe value')


def main(argv: Optional[List[str]] = None) -> int:
    p = cli.command_parser('recipe', __doc__)
    arguments(p)
    args = p.parse_args(argv)
    if args.format and not args.schema:
        p.error('--format applies to --schema only')
    if args.set and args.schema:
        p.error('--set applies to --check and --resolve only')
    bootstrap.start()
    from mxprune import recipe as recipe_mod

    if args.schema:
        print(markdown() if args.format == 'md' else text(), end='')
        return 0
    path = args.check or args.resolve
    rec = recipe_mod.load(path, args.set)
    if args.resolve:
        print(recipe_mod.dump(rec), end='')
    else:
        n = len(rec.pruning)
        print(f'{path}: ok ({rec.model.name}, {n} pruning item{"" if n == 1 else "s"})')
    return 0


# ------------------------------------------------------------------------------------------------------------------
# The schema, read from the dataclasses of mxprune.recipe and from the registries


def _registries() -> list:
    from mxprune import allocation, criteria, modifiers, schedules
    return [criteria.CRITERIA, allocation.ALLOCATORS, schedules.SCHEDULES, modifiers.REGULARIZERS]


def _show(value: Any) -> str:
    """A value as it is written in YAML (quoted where YAML needs it: '*', 'yes')."""
    import yaml
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
    return text[:-len('...')].strip() if text.endswith('\n...') else text


def _allowed(key: Key) -> str:
    """The choices (registered names for registry-backed keys) or the range, as the validation checks them."""
    if key.choices:
        names = [c for c in key.choices if c is not None]
        null = ['null'] if None in key.choices else []
        for reg in _registries():
            if names == reg.names():  # a key backed by a registry: name the registry, list what it holds now
                return 'one of ' + ', '.join(null + reg.names()) + f' (the {reg.kind} registry)'
        return 'one of ' + ', '.join(null + [_show(c) for c in names])
    if key.lo is not None and key.hi is not None:
        return f'{"(" if key.lo_open else "["}{key.lo}, {key.hi}{")" if key.hi_open else "]"}'
    if key.lo is not None:
        return f'{">" if key.lo_open else ">="} {key.lo}'
    if key.hi is not None:
        return f'{"<" if key.hi_open else "<="} {key.hi}'
    return ''


def _default(key: Key, sections: Dict[str, Section]) -> str:
    if key.default is dataclasses.MISSING:
        return 'required'
    section = sections.get(key.path)
    if section is not None and key.type == 'section':
        return _show(section.left_out)
    return _show(key.default)


def _sections() -> List[Section]:
    from mxprune import config, recipe as recipe_mod
    return config.schema(recipe_mod.Recipe)


def _title(section: Section) -> str:
    return section.path or 'top level'


def _notes(section: Section, md: bool) -> List[str]:
    """The paragraphs above a section's keys: its help, its docstring, and what it holds when left out."""
    notes = [section.help[:1].upper() + section.help[1:] + '.'] if section.help else []
    notes += [' '.join(para.split()) for para in section.doc.split('\n\n') if para.strip()]
    if section.path.endswith('[]'):
        name = f'`{section.path[:-2]}`' if md else section.path[:-2]
        notes.append(f'Each item of {name} is a mapping with these keys.')
    if section.left_out:
        value = f'`{_show(section.left_out)}`' if md else _show(section.left_out)
        notes.append(f'Left out, the section is {value} with the other keys at their defaults. '
                     f'Written out, each key it does not name takes the default below, not the value above.')
    return notes


def _md_cell(text: str) -> str:
    return text.replace('|', '\\|')


def markdown() -> str:
    """docs/recipes.md: a table per section."""
    sections = _sections()
    by_path = {s.path: s for s in sections}
    out = ['# Recipe keys', '',
           f'Generated by `mxprune recipe --schema --format md` from the recipe dataclasses and the plug-in '
           f'registries; do not edit: run `{REGENERATE}`.', '',
           'A recipe is a YAML mapping. Unknown keys are refused. `--set KEY=VALUE` overrides any key below '
           '(list items by index: `--set pruning.0.target.macs=0.4`); `mxprune recipe --check R.yaml` validates a '
           'recipe and `mxprune recipe --resolve R.yaml` prints it with every default filled in. Ranges: `[a, b]` '
           'includes both ends, `(a, b)` neither.', '']
    for s in sections:
        out += [f'## {_title(s)}', '']
        out += [line for note in _notes(s, md=True) for line in (note, '')]
        out += ['| key | type | default | allowed | meaning |', '| --- | --- | --- | --- | --- |']
        for k in s.keys:
            key = f'[`{k.path}`](#{_anchor(k.path)})' if k.section else f'`{k.path}`'
            default = 'required' if k.default is dataclasses.MISSING else f'`{_md_cell(_default(k, by_path))}`'
            out.append(f'| {key} | {k.type} | {default} | {_md_cell(_allowed(k))} | {_md_cell(k.help)} |')
        out.append('')
    return '\n'.join(out)


def _anchor(path: str) -> str:
    """GitHub's heading anchor of the section at `path` (list sections are headed name[])."""
    return ''.join(c for c in path.lower() if c.isalnum() or c in '-_ ').replace(' ', '-')


def text() -> str:
    """The schema for a terminal: a block per section, a line per key."""
    sections = _sections()
    by_path = {s.path: s for s in sections}
    out = [f'Recipe keys ({REGENERATE} writes them as Markdown tables).', '']
    for s in sections:
        out.append(f'[{_title(s)}]')
        out += [f'  # {note}' for note in _notes(s, md=False)]
        width = max(len(k.path) for k in s.keys)
        for k in s.keys:
            allowed = _allowed(k)
            line = f'  {k.path:<{width}}  {k.type} = {_default(k, by_path)}'
            line += f'; {allowed}' if allowed else ''
            out.append(line + (f'  # {k.help}' if k.help else ''))
        out.append('')
    return '\n'.join(out)
