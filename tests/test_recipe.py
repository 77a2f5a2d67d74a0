import glob
import os

import pytest
import yaml

from mxprune import recipe as R
from mxprune.config import from_dict, to_dict
from mxprune.errors import RecipeError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIN = {'version': 1, 'model': {'name': 'cifar_resnet20_v1'}}


def test_every_shipped_recipe_loads_and_round_trips():
    paths = sorted(glob.glob(os.path.join(ROOT, 'recipes', '*.yaml')))
    assert paths
    for p in paths:
        r = R.load(p)
        again = R.from_mapping(yaml.safe_load(R.dump(r)))
        assert again == r, p
        with open(p, encoding='utf-8') as f:
            head = ''.join(line for line in f if line.startswith('#'))
        assert head.startswith('# Purpose:') and '# Command: python ' in head and '# Result:' in head, p


def test_defaults_and_round_trip():
    r = R.from_mapping(dict(MIN))
    assert r.train.lr == 0.1 and r.data.augment.crop_pad == 4
    assert R.from_mapping(to_dict(r)) == r


def test_yaml_exponent_without_dot_is_a_number():
    r = R.from_mapping({**MIN, 'train': {'wd': '5e-4'}})
    assert r.train.wd == 5e-4


@pytest.mark.parametrize('raw, needle', [
    ({**MIN, 'trian': {}}, "top level: unknown key 'trian'"),
    ({**MIN, 'train': {'lr': -1}}, 'train.lr: -1 is not allowed; expected a value > 0.0'),
    ({**MIN, 'train': {'epochs': 'many'}}, "train.epochs: 'many' is not allowed; expected an integer"),
    ({**MIN, 'train': {'epochs': 2.5}}, 'train.epochs: 2.5 is not allowed; expected an integer'),
    ({**MIN, 'train': {'optimizer': 'adam'}}, "train.optimizer: 'adam' is not allowed; expected one of 'sgd', 'nag'"),
    ({**MIN, 'data': {'augment': {'flip': 'yes'}}}, "data.augment.flip: 'yes' is not allowed; expected true or false"),
    ({**MIN, 'data': {'batch_size': 0}}, 'data.batch_size: 0 is not allowed'),
    ({**MIN, 'version': 2}, 'version: 2 is not allowed; expected one of 1'),
    ({'version': 1}, 'model: missing'),
    ({**MIN, 'train': {'lr_schedule': 'step'}}, 'train.lr_steps: [] is not allowed'),
    ({**MIN, 'train': {'momentum': 1.0}}, 'train.momentum: 1.0 is not allowed; expected a value >= 0.0 and < 1.0'),
    ({**MIN, 'train': {'lr': float('nan')}}, 'expected a finite number'),
    ({**MIN, 'model': ['x']}, "model: ['x'] is not allowed; expected a mapping"),
    ({**MIN, 'data': {'augment': {'min_crop_area': 0}}},
     'data.augment.min_crop_area: 0 is not allowed; expected a value > 0.0 and <= 1.0'),
])
def test_bad_values_name_path_value_and_allowed(raw, needle):
    with pytest.raises(RecipeError) as e:
        R.from_mapping(raw, 'r.yaml')
    assert str(e.value).startswith('r.yaml: ') and needle in str(e.value), str(e.value)
    assert '\n' not in str(e.value)


def test_overrides():
    raw = R.apply_overrides({**MIN, 'train': {'lr': 0.1}}, ['train.lr=0.05', 'data.augment.flip=false',
                                                            'train.lr_steps=[1, 2]'])
    r = R.from_mapping(raw)
    assert r.train.lr == 0.05 and r.data.augment.flip is False and r.train.lr_steps == [1, 2]
    for bad in ['train.lr', '=3', 'a..b=1', 'train.lr=[1,']:
        with pytest.raises(RecipeError):
            R.apply_overrides(dict(MIN), [bad])


def test_file_errors(tmp_path):
    with pytest.raises(RecipeError, match='recipe file not found'):
        R.load(str(tmp_path / 'none.yaml'))
    bad = tmp_path / 'bad.yaml'
    bad.write_text('version: 1\nmodel: {name: [\n')
    with pytest.raises(RecipeError, match='not valid YAML at line'):
        R.load(str(bad))
    evil = tmp_path / 'evil.yaml'
    evil.write_text('version: !!python/object/apply:os.system ["echo hi"]\n')
    with pytest.raises(RecipeError, match='not valid YAML'):
        R.load(str(evil))


def test_from_dict_requires_a_dataclass_mapping():
    with pytest.raises(RecipeError, match='expected a mapping with keys'):
        from_dict(R.TrainConfig, 3, 'x')
