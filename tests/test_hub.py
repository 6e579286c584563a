"""Hugging Face Hub publishing and loading, end to end and offline, against the in-process Hub of hub_server.py.

The first publish and the loads run in subprocesses with ``HF_ENDPOINT`` / ``HF_HOME`` set, as a user's would
(huggingface_hub reads them at import). Repeated publishes (refusal, --force, a failing commit) call the publisher's
``main`` in this process with ``huggingface_hub.constants`` pointed at the test Hub, which saves a process start each.
"""
import argparse
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import save as safetensors_bytes

import timm
import timm_camc  # noqa: F401, registers the models
from timm_camc import pretrained as camc_pretrained
from timm_camc.checkpoint import create_eval_model
from timm_camc.weights import DATASETS, METRIC_KEYS, WEIGHTS, PretrainedWeights, markdown_model_table

from conftest import REPO
from hub_server import HubServer

TOKEN = 'hf_CamcTestToken0123456789abcdefXYZ'  # shaped like a real token, so a leak would show
REPO_ID = 'test-org/resnet32_camc_lt.cifar10_lt_r100'
NAME = 'resnet32_camc_lt.cifar10_lt_r100'
COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
LOCAL = '/home/someone/private'  # machine-local paths in the training options, never on a model card
_HF_VARS = ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_ENDPOINT', 'HF_HOME',
            'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_TOKEN_PATH', 'HF_OIDC_RESOURCE', 'HF_HUB_DISABLE_XET',
            'TIMM_CAMC_ALLOW_PICKLE', 'HUGGINGFACE_CO_STAGING')


# ------------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope='module')
def hub():
    with HubServer(token=TOKEN) as server:
        yield server


def _model(state):
    model = timm.create_model('resnet32_camc_lt', num_classes=10)
    model.load_state_dict(state)
    return model.eval()


def _metrics(**kwargs):
    metrics = dict(
        top1=71.23, top5=97.5, per_class=[71.0] * 10, num_samples=10000, many_shot=88.1, medium_shot=70.2,
        few_shot=55.5, shot_group_sizes=dict(many_shot=7, medium_shot=3, few_shot=0), many_thresh=100, few_thresh=20,
        loss=1.1,
        class_groups=dict(head=90.0, medium=70.0, tail=50.0), model='resnet32_camc_lt', checkpoint='last.pth.tar',
        use_ema=True, data_dir=f'{LOCAL}/cifar10', split='test', class_counts=COUNTS, class_names=CLASSES)
    metrics.update(kwargs)
    return metrics


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A train.py-style run: checkpoint with raw and EMA weights, validate.py metrics of each, reference outputs."""
    d = tmp_path_factory.mktemp('run')
    torch.manual_seed(0)
    model = timm.create_model('resnet32_camc_lt', num_classes=10).train()
    torch.nn.init.normal_(model.head.calib.conv.weight)  # a non-zero map conv: the calibration path matters
    model(torch.randn(8, 3, 32, 32), torch.arange(8))  # prototypes and BN statistics
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    ema = {k: v * 0.99 if v.is_floating_point() else v.clone() for k, v in raw.items()}
    with open(REPO / 'configs' / 'cifar10_lt_r100.yaml') as f:
        options = yaml.safe_load(f)
    options.update(
        num_classes=10, class_counts=COUNTS, class_names=CLASSES, learn_scale=False, camc_topk=32,
        norm_classifier=True, model_ema=True, data_dir=f'{LOCAL}/cifar10', output=f'{LOCAL}/output',
        config=f'{LOCAL}/timm-camc/configs/cifar10_lt_r100.yaml')
    checkpoint = dict(epoch=199, arch='resnet32_camc_lt', state_dict=raw, state_dict_ema=ema,
                      args=argparse.Namespace(**options), metric=71.23)
    torch.save(checkpoint, d / 'last.pth.tar')
    torch.save(dict(checkpoint, state_dict_ema=None, args=argparse.Namespace(**dict(options, model_ema=False))),
               d / 'no_ema.pth.tar')
    (d / 'results.json').write_text(json.dumps(_metrics()))
    # a user's own small run, configured from the registry recipe: balanced 6 images per class, 4 epochs
    small = dict(options, lt_imbalance=0, epochs=4, class_counts=[6] * 10)
    torch.save(dict(checkpoint, args=argparse.Namespace(**small)), d / 'small.pth.tar')
    small_metrics = _metrics(class_counts=[6] * 10, num_samples=20, checkpoint='small.pth.tar')
    (d / 'results_small.json').write_text(json.dumps(small_metrics))
    (d / 'results_raw.json').write_text(json.dumps(_metrics(use_ema=False, top1=70.5)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = dict(x=x, ema=_model(ema)(x), raw=_model(raw)(x), state=ema)
    torch.save(reference, d / 'reference.pt')
    return dict(dir=d, checkpoint=str(d / 'last.pth.tar'), metrics=str(d / 'results.json'), raw=raw, ema=ema,
                reference=reference)


def _env(hub, home, *, token=False, offline=False):
    env = {k: v for k, v in os.environ.items() if k not in _HF_VARS}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY='1', HF_HUB_DISABLE_PROGRESS_BARS='1',
               OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    if token:
        env.update(HF_TOKEN=TOKEN, HF_HUB_DISABLE_XET='1')  # the test Hub speaks the plain commit API, not Xet
    if offline:
        env['HF_HUB_OFFLINE'] = '1'
    return env


def _python(args, env, timeout=600):  # generous: a loaded CI machine starts python slowly
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _no_token(*texts):
    for text in texts:
        assert TOKEN not in text, 'the Hub token was printed or written'


def _no_token_in_files(*roots):
    for root in roots:
        for path in Path(root).rglob('*'):
            if path.is_file() and not path.is_symlink():
                assert TOKEN.encode() not in path.read_bytes(), f'the Hub token was written to {path}'


@pytest.fixture(scope='module')
def published(hub, run, tmp_path_factory):
    """The EMA weights published to REPO_ID by the command line, as a user would."""
    home = tmp_path_factory.mktemp('publisher_home')
    result = _python(['hub/publish.py', '--checkpoint', run['checkpoint'], '--metrics', run['metrics'], '--ema',
                      '--official', '--repo-id', REPO_ID], _env(hub, home, token=True))
    assert result.returncode == 0, result.stderr[-3000:]
    _no_token(result.stdout, result.stderr)
    _no_token_in_files(home)
    return result


# the loading side, in a fresh process: cold cache online, then (second script) the warm cache offline
_CLIENT_PRELUDE = r'''
import json, os, sys, torch, timm, timm_camc
spec = json.loads(sys.argv[1])
ref = torch.load(spec['reference'])
repo, out = spec['repo'], {}

def attempt(key, fn):
    try:
        out[key] = fn()
    except Exception as e:
        out[key] = {'error': type(e).__name__, 'message': str(e)}

def same(model):
    with torch.no_grad():
        return bool(torch.equal(model.eval()(ref['x']), ref['ema']))
'''

_ONLINE_CLIENT = _CLIENT_PRELUDE + r'''
from timm_camc.pretrained import verify_weights

def finetune():
    state = timm.create_model(f'hf-hub:{repo}', pretrained=True, num_classes=5).state_dict()
    changed = sorted(k for k, v in ref['state'].items() if k not in state or not torch.equal(state[k], v))
    return dict(changed=changed, fc=list(state['head.fc.weight'].shape),
                prototypes=list(state['head.calib.prototypes'].shape),
                prototypes_zero=not bool(state['head.calib.prototypes'].any()))

attempt('hf_hub', lambda: same(timm.create_model(f'hf-hub:{repo}', pretrained=True)))
attempt('tag', lambda: same(timm.create_model(
    'resnet32_camc_lt.cifar10_lt_r100', pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id=repo))))
attempt('finetune', finetune)
attempt('verify', lambda: verify_weights(repo))
attempt('not_published', lambda: timm.create_model('resnet32_camc_lt.cifar100_lt_r100', pretrained=True) and 'loaded')
attempt('pickle_refused', lambda: timm.create_model(f'hf-hub:{spec["pickle"]}', pretrained=True) and 'loaded')
os.environ['TIMM_CAMC_ALLOW_PICKLE'] = '1'
attempt('pickle_allowed', lambda: same(timm.create_model(f'hf-hub:{spec["pickle"]}', pretrained=True)))
del os.environ['TIMM_CAMC_ALLOW_PICKLE']
attempt('tampered', lambda: timm.create_model(f'hf-hub:{spec["tampered"]}', pretrained=True) and 'loaded')
attempt('tampered_verify', lambda: verify_weights(spec['tampered']))
attempt('moving', lambda: same(timm.create_model(f'hf-hub:{spec["moving"]}', pretrained=True)))
attempt('moving_config', lambda: same(timm.create_model(f'hf-hub:{spec["moving_config"]}', pretrained=True)))
print(json.dumps(out))
'''

_OFFLINE_CLIENT = _CLIENT_PRELUDE + r'''
tag = 'resnet32_camc_lt.cifar10_lt_r100'
attempt('hf_hub', lambda: same(timm.create_model(f'hf-hub:{repo}', pretrained=True)))
attempt('tag', lambda: same(timm.create_model(tag, pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id=repo))))
attempt('cold_hf_hub', lambda: timm.create_model(f'hf-hub:{repo}', pretrained=True, cache_dir=spec['cold']) and 1)
attempt('cold_tag', lambda: timm.create_model(
    tag, pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id=repo), cache_dir=spec['cold']) and 1)
print(json.dumps(out))
'''


@pytest.fixture(scope='module')
def online(hub, run, published, tmp_path_factory):
    """Loads in a fresh process with a cold cache; also seeds a pickle-only and a tampered repository."""
    published_config = hub.files(REPO_ID)['config.json']
    buffer = io.BytesIO()
    torch.save(run['ema'], buffer)
    hub.seed('test-org/pickle-only', {'config.json': published_config, 'pytorch_model.bin': buffer.getvalue()})
    hub.seed('test-org/tampered', {
        'config.json': published_config, 'README.md': hub.files(REPO_ID)['README.md'],
        'model.safetensors': safetensors_bytes({k: v.contiguous() for k, v in run['raw'].items()})})
    # a repository whose branch moves (other weights, with their own matching record) right after the weights are
    # downloaded: what is loaded must be what was checked, not a second download by branch name
    hub.seed('test-org/moving', {k: v for k, v in hub.files(REPO_ID).items() if k != '.gitattributes'})
    raw = safetensors_bytes({k: v.contiguous() for k, v in run['raw'].items()})
    raw_config = json.loads(published_config)
    raw_config['weights_sha256'] = {'model.safetensors': _sha256(raw)}
    hub.swap_after_download('test-org/moving', 'model.safetensors',
                            {'model.safetensors': raw, 'config.json': json.dumps(raw_config).encode()})
    # ... and one whose branch moves right after timm read config.json (the model is built from the old commit)
    hub.seed('test-org/moving-config', {k: v for k, v in hub.files(REPO_ID).items() if k != '.gitattributes'})
    hub.swap_after_download('test-org/moving-config', 'config.json',
                            {'model.safetensors': raw, 'config.json': json.dumps(raw_config).encode()})
    home = tmp_path_factory.mktemp('client_home')
    spec = dict(reference=str(run['dir'] / 'reference.pt'), repo=REPO_ID, pickle='test-org/pickle-only',
                tampered='test-org/tampered', moving='test-org/moving', moving_config='test-org/moving-config')
    requests = len(hub.requests)
    result = _python(['-c', _ONLINE_CLIENT, json.dumps(spec)], _env(hub, home))
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(home=home, results=json.loads(result.stdout.strip().splitlines()[-1]), stderr=result.stderr,
                requests=hub.requests[requests:])


# ---------------------------------------------------------------------------------------------- weights registry

def test_weights_registry_schema_matches_default_cfgs():
    tags = {n for n in timm.list_pretrained('*_camc_lt*') if not n.endswith('.tv_in1k')}
    assert set(WEIGHTS) == tags, 'every pretrained tag (but the backbone-only .tv_in1k) needs exactly one record'
    for name, record in WEIGHTS.items():
        assert record.name == name
        cfg = timm.models.get_pretrained_cfg(name)
        assert record.hub_id == cfg.hf_hub_id and record.num_classes == cfg.num_classes, name
        assert DATASETS[record.dataset].num_classes == record.num_classes
        recipe = REPO / record.recipe
        assert recipe.is_file(), record.recipe
        trained = yaml.safe_load(recipe.read_text())['model'].split('.')[0]
        assert trained == record.arch or f'--model {record.arch}' in record.recipe_args, name
        assert record.status in ('published', 'staged', 'recipe only')
        if record.trained:
            assert set(record.metrics) == set(METRIC_KEYS) and re.fullmatch(r'[0-9a-f]{64}', record.sha256)
        else:
            assert record.metrics is None and record.sha256 is None  # no invented numbers
        # the publisher prints records as source to paste into WEIGHTS: it must rebuild the same record
        assert eval(record.to_python().strip().rstrip(','), {'PretrainedWeights': PretrainedWeights}) == record

    table = markdown_model_table()
    rows = [line for line in table.splitlines() if line.startswith('| `')]
    assert len(rows) == len(WEIGHTS)
    assert all(f'`{w.arch}` | `{w.tag}` | {DATASETS[w.dataset].name}' in table for w in WEIGHTS.values())

    valid = dict(arch='resnet32_camc_lt', tag='cifar10_lt_r100', hub_id=REPO_ID, dataset='cifar10_lt_r100',
                 num_classes=10, recipe='configs/cifar10_lt_r100.yaml')
    metrics = dict(top1=70.0, many=90.0, medium=70.0, few=None)
    PretrainedWeights(**valid, status='published', metrics=metrics, sha256='0' * 64)
    PretrainedWeights(**valid, status='staged', metrics=metrics, sha256='0' * 64)
    for bad, match in [
        (dict(status='staged', metrics=metrics), 'staged weight needs the sha256'),
        (dict(status='published'), 'needs metrics'),
        (dict(status='published', metrics=metrics), 'sha256'),
        (dict(status='published', metrics=dict(metrics, top1=170.0), sha256='0' * 64), 'percentage'),
        (dict(metrics=metrics), 'only a recipe has no metrics'),
        (dict(status='done'), 'status'),
        (dict(num_classes=100), '10 classes'),
        (dict(hub_id='no-org'), 'org/name'),
    ]:
        with pytest.raises(ValueError, match=match):
            PretrainedWeights(**dict(valid, **bad))


def test_readme_model_table_is_generated_from_the_registry():
    assert markdown_model_table() in (REPO / 'README.md').read_text(), \
        'README.md: paste timm_camc.weights.markdown_model_table() again'


# ------------------------------------------------------------------------------------- publish -> load, online

def test_publish_prints_the_record_to_add(published):
    assert f'Published {NAME} (EMA weights, sha256 ' in published.stdout
    assert f"hub_id='{REPO_ID}'" in published.stdout and "status='published'" in published.stdout
    assert 'metrics=dict(top1=71.23, many=88.1, medium=70.2, few=55.5)' in published.stdout


def test_cold_cache_loads_give_the_source_outputs(online, hub, run):
    r = online['results']
    assert r['hf_hub'] is True, r['hf_hub']
    assert r['tag'] is True, r['tag']
    files = hub.files(REPO_ID)
    assert set(files) == {'.gitattributes', 'model.safetensors', 'config.json', 'README.md'}
    assert r['verify'] == _sha256(files['model.safetensors'])


def test_num_classes_reinitialises_only_the_head(online):
    finetune = online['results']['finetune']
    assert finetune['changed'] == ['head.calib.prototypes', 'head.fc.weight'], finetune  # backbone + map conv kept
    assert finetune['fc'] == [5, 64] and finetune['prototypes'] == [5, 64] and finetune['prototypes_zero']


def test_tag_not_published_says_how_to_train_it(online):
    error = online['results']['not_published']
    assert error['error'] == 'WeightsNotPublishedError'
    assert 'not published yet' in error['message']
    assert 'python train.py -c configs/cifar100_lt_r100.yaml' in error['message']


def test_pickle_only_repo_needs_an_explicit_opt_in(online):
    refused = online['results']['pickle_refused']
    assert refused['error'] == 'UnsafeWeightsError' and 'TIMM_CAMC_ALLOW_PICKLE=1' in refused['message']
    assert online['results']['pickle_allowed'] is True


def test_weights_that_do_not_match_their_recorded_sha256_are_refused(online):
    for key in ('tampered', 'tampered_verify'):
        error = online['results'][key]
        assert error['error'] == 'WeightsIntegrityError', error
        assert 'sha256' in error['message']


def test_warm_cache_works_offline_and_cold_cache_offline_fails_clearly(online, hub, run, tmp_path):
    spec = dict(reference=str(run['dir'] / 'reference.pt'), repo=REPO_ID, cold=str(tmp_path / 'cold'))
    before = len(hub.requests)
    result = _python(['-c', _OFFLINE_CLIENT, json.dumps(spec)], _env(hub, online['home'], offline=True))
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(hub.requests) == before, 'offline loads must not touch the network'
    r = json.loads(result.stdout.strip().splitlines()[-1])
    assert r['hf_hub'] is True and r['tag'] is True, r
    # hf-hub: fails in timm's config download (huggingface_hub's error), a tag in our loader (ours)
    assert r['cold_hf_hub']['error'] == 'LocalEntryNotFoundError', r['cold_hf_hub']
    assert 'cannot find the requested files in the local cache' in r['cold_hf_hub']['message']
    assert r['cold_tag']['error'] == 'PretrainedWeightsError', r['cold_tag']
    assert 'not in the local Hugging Face cache' in r['cold_tag']['message']
    assert 'HF_HUB_OFFLINE' in r['cold_tag']['message']
    _no_token(result.stdout, result.stderr, online['stderr'])
    _no_token_in_files(online['home'])


# ------------------------------------------------------------------------- publishing: refusal, failure, retry

@pytest.fixture(scope='module')
def publisher():
    spec = importlib.util.spec_from_file_location('camc_publish', REPO / 'hub' / 'publish.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def hub_here(hub, monkeypatch, tmp_path):
    """huggingface_hub in this process pointed at the test Hub, with the test token in HF_TOKEN."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'ENDPOINT', hub.url)
    monkeypatch.setattr(constants, 'HUGGINGFACE_CO_URL_TEMPLATE', hub.url + '/{repo_id}/resolve/{revision}/{filename}')
    monkeypatch.setattr(constants, 'HF_HUB_DISABLE_XET', True)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(constants, 'HF_TOKEN_PATH', str(tmp_path / 'no-token-file'))
    monkeypatch.setattr(constants, 'HF_STORED_TOKENS_PATH', str(tmp_path / 'no-stored-tokens'))
    for var in _HF_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('HF_TOKEN', TOKEN)
    return hub


def _publish(publisher, capsys, caplog, *argv):
    caplog.clear()
    code = publisher(list(argv))
    out, err = capsys.readouterr()
    _no_token(out, err, caplog.text)
    return code, out, err + caplog.text


def _inputs(run, ema=True, metrics=None, tag='cifar10_lt_r100'):
    """Publisher arguments for the run; the registry tag by default (the run is its recipe), none with tag=None."""
    argv = ['--checkpoint', run['checkpoint'], '--metrics', metrics or run['metrics'], '--ema' if ema else '--raw']
    return argv + (['--tag', tag] if tag else [])


def test_second_publish_is_refused_and_changes_nothing_then_force_replaces(publisher, hub_here, run, capsys, caplog):
    repo = 'test-org/force'
    code, out, _ = _publish(publisher, capsys, caplog, *_inputs(run), '--repo-id', repo)
    assert code == 0 and 'Published' in out
    first = hub_here.files(repo)

    state, requests = hub_here.state(), len(hub_here.requests)
    raw = _inputs(run, ema=False, metrics=str(run['dir'] / 'results_raw.json'))
    code, out, log = _publish(publisher, capsys, caplog, *raw, '--repo-id', repo)
    assert code == 3 and 'Published' not in out
    assert 'already has model.safetensors' in log and '--force' in log
    assert hub_here.state() == state, 'a refused publish must not change the repository'
    assert not any(p.endswith(('/commit/main', '/preupload/main')) for _, p in hub_here.requests[requests:])

    # the same weights again (a retry whose response was lost): nothing to do, success
    code, out, _ = _publish(publisher, capsys, caplog, *_inputs(run), '--repo-id', repo)
    assert code == 0 and 'already holds these weights' in out and hub_here.state() == state

    code, out, _ = _publish(publisher, capsys, caplog, *raw, '--repo-id', repo, '--force')
    assert code == 0 and f'Published {NAME} (raw weights' in out
    files = hub_here.files(repo)
    assert files['model.safetensors'] != first['model.safetensors']
    config = json.loads(files['config.json'])
    sha = _sha256(files['model.safetensors'])
    assert config['weights_sha256'] == {'model.safetensors': sha}
    assert camc_pretrained.read_card_sha256(files['README.md'].decode()) == sha
    assert '70.50' in files['README.md'].decode()


def test_server_error_mid_upload_fails_then_retry_succeeds(publisher, hub_here, run, capsys, caplog):
    repo = 'test-org/retry'
    hub_here.fail_next('commit')
    code, out, log = _publish(publisher, capsys, caplog, *_inputs(run), '--repo-id', repo)
    assert code == 1
    assert 'Published' not in out and 'failed, nothing was published' in log and 'safe' in log
    assert set(hub_here.files(repo)) == {'.gitattributes'}, 'nothing half-published'

    code, out, _ = _publish(publisher, capsys, caplog, *_inputs(run), '--repo-id', repo)
    assert code == 0 and 'Published' in out
    assert {'model.safetensors', 'config.json', 'README.md'} <= set(hub_here.files(repo))
    for content in hub_here.files(repo).values():
        assert TOKEN.encode() not in content


def test_publish_to_a_private_repo_then_to_a_new_branch(publisher, hub_here, run, capsys, caplog):
    repo = 'test-org/branchy'
    code, out, _ = _publish(publisher, capsys, caplog, *_inputs(run), '--repo-id', repo, '--private')
    assert code == 0 and hub_here.repos[repo].private
    main = hub_here.files(repo)

    # other weights on a new branch: it starts from main, main keeps its weights
    raw = _inputs(run, ema=False, metrics=str(run['dir'] / 'results_raw.json'))
    code, out, _ = _publish(publisher, capsys, caplog, *raw, '--repo-id', repo, '--revision', 'v1')
    assert code == 0 and f'to {repo}@v1' in out
    assert hub_here.files(repo) == main
    assert hub_here.files(repo, 'v1')['model.safetensors'] != main['model.safetensors']
    code, out, _ = _publish(publisher, capsys, caplog, *raw, '--repo-id', repo, '--revision', 'v1')
    assert code == 0 and 'already holds these weights' in out


# ---------------------------------------------------------------------------------------- bad input, no token

def test_no_token_is_a_clear_error_before_any_work(publisher, hub_here, run, capsys, caplog, monkeypatch, tmp_path):
    monkeypatch.delenv('HF_TOKEN')
    scratch = tmp_path / 'tmp'
    scratch.mkdir()
    monkeypatch.setattr('tempfile.tempdir', str(scratch))
    requests = len(hub_here.requests)
    for checkpoint in (run['checkpoint'], str(tmp_path / 'missing.pth.tar')):  # checked before the inputs are read
        code, out, log = _publish(publisher, capsys, caplog, '--checkpoint', checkpoint, '--metrics', run['metrics'],
                                  '--ema', '--repo-id', 'test-org/no-token')
        assert code == 2 and 'No Hugging Face token' in log and 'HF_TOKEN' in log, log
    assert len(hub_here.requests) == requests and not any(scratch.iterdir())


@pytest.mark.parametrize('repo_id', ['no-namespace', 'a/b/c', 'org/na--me', 'org/with space', '/name'])
def test_bad_repo_id(publisher, hub_here, run, capsys, caplog, repo_id):
    requests = len(hub_here.requests)
    code, _, log = _publish(publisher, capsys, caplog, *_inputs(run), '--repo-id', repo_id)
    assert code == 2 and repr(repo_id) in log and len(hub_here.requests) == requests


def test_metrics_missing_fields_are_named(publisher, run, capsys, caplog, tmp_path):
    metrics = _metrics()
    del metrics['top5'], metrics['few_shot'], metrics['shot_group_sizes']
    (tmp_path / 'partial.json').write_text(json.dumps(metrics))
    code, _, log = _publish(publisher, capsys, caplog, *_inputs(run, metrics=str(tmp_path / 'partial.json')),
                            '--out', str(tmp_path / 'out'))
    assert code == 2 and 'missing required fields: top5, few_shot, shot_group_sizes' in log
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('case, match', [
    ('model_name', 'was trained as resnet32_camc_lt, not resnet50_camc_lt'),
    ('metrics_model', "metrics are for model 'resnet50_camc_lt'"),
    ('metrics_classes', 'metrics have 100 classes, the checkpoint 10'),
    ('metrics_ema', 'measured on the EMA weights, publishing the raw weights'),
    ('no_ema', 'has no EMA weights'),
    ('tag_classes', 'cifar100_lt_r100 has 100 classes, the checkpoint 10'),
    ('dataset_classes', 'places_lt has 365 classes, the checkpoint 10'),
])
def test_checkpoint_metrics_or_arch_mismatch_is_refused(publisher, run, capsys, caplog, tmp_path, case, match):
    metrics = _metrics(**{'metrics_model': dict(model='resnet50_camc_lt'),
                          'metrics_classes': dict(per_class=[50.0] * 100)}.get(case, {}))
    (tmp_path / 'metrics.json').write_text(json.dumps(metrics))
    argv = _inputs(run, ema=case != 'metrics_ema', metrics=str(tmp_path / 'metrics.json'), tag=None)
    argv += {'model_name': ['--model-name', 'resnet50_camc_lt'], 'tag_classes': ['--tag', 'cifar100_lt_r100'],
             'dataset_classes': ['--dataset', 'places_lt']}.get(case, [])
    if case == 'no_ema':
        argv[1] = str(run['dir'] / 'no_ema.pth.tar')
    code, _, log = _publish(publisher, capsys, caplog, *argv, '--out', str(tmp_path / 'out'))
    assert code == 2 and match in log, log
    assert not (tmp_path / 'out').exists()


# ------------------------------------------------------------------------------------------ --out folder, card

def test_out_folder_config_card_and_local_dir_load(publisher, run, capsys, caplog, tmp_path):
    out = tmp_path / 'folder'
    code, stdout, _ = _publish(publisher, capsys, caplog, *_inputs(run, tag=None), '--official', '--out', str(out))
    assert code == 0 and "status='staged'" in stdout and 'hub/staged/resnet32_camc_lt.cifar10_lt_r100' in stdout
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    sha = camc_pretrained.sha256_file(str(out / 'model.safetensors'))

    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'resnet32_camc_lt' and config['num_classes'] == 10
    assert config['num_features'] == 64 and config['label_names'] == CLASSES
    assert config['model_args'] == dict(
        num_classes=10, camc='global', norm_classifier=True, cosine_scale=16.0, learn_scale=False, proto_momentum=0.9,
        camc_topk=32, nonneg_map=False, balanced_q=False, aux_weight=0.5, in_chans=3, global_pool='avg')
    cfg = config['pretrained_cfg']
    assert cfg['tag'] == 'cifar10_lt_r100' and cfg['input_size'] == [3, 32, 32] and cfg['classifier'] == 'head.fc'
    assert cfg['mean'] == [0.4914, 0.4822, 0.4465] and 'hf_hub_id' not in cfg
    assert config['weights_sha256'] == {'model.safetensors': sha}

    text = (out / 'README.md').read_text()
    meta = yaml.safe_load(text.split('---\n')[1])
    assert meta['library_name'] == 'timm' and meta['license'] == 'apache-2.0'
    assert meta['pipeline_tag'] == 'image-classification' and meta['datasets'] == ['cifar10-lt']
    assert {'image-classification', 'timm', 'long-tailed'} <= set(meta['tags'])
    results = {e.metric_config: e.metric_value for e in ModelCard(text).data.eval_results}
    assert results == dict(top1=71.23, top5=97.5, many_shot=88.1, medium_shot=70.2, few_shot=55.5)
    assert camc_pretrained.read_card_sha256(text) == sha
    assert "timm.create_model('hf-hub:timm-camc/resnet32_camc_lt.cifar10_lt_r100', pretrained=True)" in text
    assert 'python train.py -c configs/cifar10_lt_r100.yaml' in text and 'lr: 0.1' in text
    assert '| test | 10000 | 71.23 | 97.50 | 88.10 | 70.20 | 55.50 |' in text
    assert 'arXiv:2108.12757' in text or 'arxiv.org/abs/2108.12757' in text
    assert 'Calibrating Class Activation Maps for Long-Tailed Visual Recognition' in text and 'Zhang' in text
    assert LOCAL not in text and LOCAL not in (out / 'config.json').read_text()
    _no_token_in_files(out)

    assert camc_pretrained.verify_weights(str(out)) == sha
    model = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(run['reference']['x']), run['reference']['ema'], rtol=0, atol=0)

    code, _, log = _publish(publisher, capsys, caplog, *_inputs(run), '--out', str(out))
    assert code == 2 and 'not empty' in log
    code, _, log = _publish(publisher, capsys, caplog, *_inputs(run), '--out', str(tmp_path), '--force')
    assert code == 2 and 'other files than a Hub folder' in log and out.is_dir()  # --force never clears other files
    (out / 'model.safetensors').write_bytes(safetensors_bytes({k: v.contiguous() for k, v in run['raw'].items()}))
    with pytest.raises(camc_pretrained.WeightsIntegrityError, match='sha256'):
        camc_pretrained.verify_weights(f'local-dir:{out}')
    with pytest.raises(camc_pretrained.WeightsIntegrityError):
        timm.create_model(f'local-dir:{out}', pretrained=True)


# ------------------------------------------------------------------------------------------ layering: no publisher

def test_creating_a_model_loads_no_publishing_code():
    script = r'''
import json, sys, timm, timm_camc
timm.create_model('resnet32_camc_lt')
def loaded():
    return sorted(m for m in sys.modules if m.startswith(('timm_camc', 'huggingface_hub.repocard')))
before = loaded()
import timm_camc.publish  # the control: the names looked for below are the ones publishing loads
print(json.dumps(dict(before=before, after=loaded())))
'''
    result = _python(['-c', script], dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stderr[-3000:]
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    # huggingface_hub.repocard (ModelCard) is loaded by the card writer only; timm itself loads repocard_data
    publishing = ('timm_camc.publish', 'timm_camc.publish.card', 'timm_camc.publish.export', 'huggingface_hub.repocard')
    assert 'timm_camc.pretrained' in modules['before']
    assert not {*publishing, 'timm_camc.hub'} & set(modules['before']), modules['before']
    assert set(publishing) <= set(modules['after'])


# ------------------------------------------------------------------------------------- loading: what is checked

def test_unpublished_tag_fails_at_once_without_the_network(hub_here):
    requests = len(hub_here.requests)
    start = time.perf_counter()
    with pytest.raises(camc_pretrained.WeightsNotPublishedError) as e:
        timm.create_model('resnext50_camc_lt', pretrained=True)
    assert time.perf_counter() - start < 5
    assert len(hub_here.requests) == requests, 'a tag the registry lists as not published needs no request'
    message = str(e.value)
    assert '\n' not in message and 'resnext50_camc_lt.imagenet_lt are not published yet' in message
    assert '`python train.py -c configs/imagenet_lt_resnext50.yaml --data-dir <DATA_DIR>`' in message
    assert 'cache' not in message


def test_hf_hub_loads_the_commit_it_checked(online):
    assert online['results']['moving'] is True, online['results']['moving']
    # weights, their record and the config the model was built from all come from one commit
    assert online['results']['moving_config'] is True, online['results']['moving_config']
    weights = [p for m, p in online['requests'] if m == 'GET' and p.startswith('/test-org/moving/')
               and p.endswith('/model.safetensors')]
    assert len(weights) == 1, 'the checked file is loaded; timm must not download the weights again by branch name'


@pytest.fixture(scope='module')
def exported(run, tmp_path_factory):
    """A Hub folder of the run's EMA weights, written by the library as hub/publish.py --out --official does."""
    from timm_camc.publish import (
        build_trained_model, export_folder, load_trained_checkpoint, read_metrics, resolve_label)
    folder = tmp_path_factory.mktemp('exported')
    checkpoint = load_trained_checkpoint(run['checkpoint'], use_ema=True)
    metrics = read_metrics(run['metrics'])
    label = resolve_label(checkpoint, metrics, official=True, repo_root=str(REPO))
    export_folder(build_trained_model(checkpoint, label.tag), checkpoint, metrics, str(folder), label=label,
                  hub_id=label.record.hub_id)
    return folder


def _folder_copy(exported, tmp_path):
    folder = tmp_path / 'folder'
    shutil.copytree(exported, folder)
    return folder


def _pickle_of(state, path):
    torch.save({k: v.clone() for k, v in state.items()}, path)


def test_local_dir_pickle_put_in_place_of_the_weights_is_refused(exported, run, tmp_path, monkeypatch):
    folder = _folder_copy(exported, tmp_path)
    (folder / 'model.safetensors').unlink()
    _pickle_of(run['raw'], folder / 'pytorch_model.bin')  # other weights, next to a config.json with a sha256
    monkeypatch.delenv('TIMM_CAMC_ALLOW_PICKLE', raising=False)
    with pytest.raises(camc_pretrained.UnsafeWeightsError, match='TIMM_CAMC_ALLOW_PICKLE=1'):
        timm.create_model(f'local-dir:{folder}', pretrained=True)
    monkeypatch.setenv('TIMM_CAMC_ALLOW_PICKLE', '1')
    with pytest.raises(camc_pretrained.WeightsIntegrityError, match='not for pytorch_model.bin'):
        timm.create_model(f'local-dir:{folder}', pretrained=True)


def test_local_dir_pickle_with_its_own_recorded_digest_loads_when_allowed(exported, run, tmp_path, monkeypatch):
    folder = _folder_copy(exported, tmp_path)
    (folder / 'model.safetensors').unlink()
    _pickle_of(run['ema'], folder / 'pytorch_model.bin')
    config = json.loads((folder / 'config.json').read_text())
    config['weights_sha256'] = {'pytorch_model.bin': camc_pretrained.sha256_file(str(folder / 'pytorch_model.bin'))}
    (folder / 'config.json').write_text(json.dumps(config))
    (folder / 'README.md').unlink()
    monkeypatch.setenv('TIMM_CAMC_ALLOW_PICKLE', '1')
    model = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(run['reference']['x']), run['reference']['ema'], rtol=0, atol=0)
    _pickle_of(run['raw'], folder / 'pytorch_model.bin')  # changed after its digest was recorded
    with pytest.raises(camc_pretrained.WeightsIntegrityError, match='sha256 of pytorch_model.bin'):
        timm.create_model(f'local-dir:{folder}', pretrained=True)


def test_local_dir_without_a_recorded_digest_is_refused_unless_allowed(exported, run, tmp_path, monkeypatch, caplog):
    folder = _folder_copy(exported, tmp_path)
    config = json.loads((folder / 'config.json').read_text())
    del config['weights_sha256']
    (folder / 'config.json').write_text(json.dumps(config))
    (folder / 'README.md').unlink()
    (folder / 'model.safetensors').write_bytes(safetensors_bytes({k: v.contiguous() for k, v in run['raw'].items()}))
    monkeypatch.delenv('TIMM_CAMC_ALLOW_UNVERIFIED', raising=False)
    with pytest.raises(camc_pretrained.WeightsIntegrityError, match='TIMM_CAMC_ALLOW_UNVERIFIED=1') as e:
        timm.create_model(f'local-dir:{folder}', pretrained=True)
    assert '\n' not in str(e.value)
    monkeypatch.setenv('TIMM_CAMC_ALLOW_UNVERIFIED', '1')
    timm.create_model(f'local-dir:{folder}', pretrained=True)
    assert 'loading it unchecked' in caplog.text


def test_local_dir_mismatch_names_the_file_not_a_cache(exported, run, tmp_path):
    folder = _folder_copy(exported, tmp_path)
    (folder / 'model.safetensors').write_bytes(safetensors_bytes({k: v.contiguous() for k, v in run['raw'].items()}))
    with pytest.raises(camc_pretrained.WeightsIntegrityError) as e:
        timm.create_model(f'local-dir:{folder}', pretrained=True)
    message = str(e.value)
    assert 'sha256 of model.safetensors' in message and 'config.json records' in message and '\n' not in message
    assert 'cache' not in message and 'download' not in message


def test_eval_model_with_ema_asked_for_refuses_a_checkpoint_without_ema(run):
    with pytest.raises(ValueError, match='has no EMA weights'):
        create_eval_model('resnet32_camc_lt', str(run['dir'] / 'no_ema.pth.tar'), use_ema=True)
    model, _ = create_eval_model('resnet32_camc_lt', run['checkpoint'], use_ema=True)
    assert torch.equal(model.state_dict()['head.fc.weight'], run['ema']['head.fc.weight'])


# ------------------------------------------------------------------------------------- labels: never mislabelled

def test_a_users_run_is_labelled_from_its_own_options(publisher, run, capsys, caplog, tmp_path):
    small = ['--checkpoint', str(run['dir'] / 'small.pth.tar'), '--metrics', str(run['dir'] / 'results_small.json')]
    out = tmp_path / 'mine'
    code, stdout, log = _publish(publisher, capsys, caplog, *small, '--ema', '--out', str(out))
    assert code == 0, log
    assert 'Wrote resnet32_camc_lt.custom' in stdout and 'PretrainedWeights(' not in stdout  # no registry record
    text = (out / 'README.md').read_text()
    meta = yaml.safe_load(text.split('---\n')[1])
    assert meta['datasets'] == ['cifar10'] and meta['model-index'][0]['name'] == 'resnet32_camc_lt.custom'
    for claim in ('CIFAR-10-LT', 'imbalance ratio 100', 'timm-camc/', 'python train.py'):
        assert claim not in text, claim
    assert "a user's own weights" in text and 'epochs: 4' in text and 'configs/cifar10_lt_r100.yaml' in text
    assert '60 images, 6 to 6 per class' in text
    assert json.loads((out / 'config.json').read_text())['pretrained_cfg']['tag'] == 'custom'


@pytest.mark.parametrize('flags, match', [
    (['--official'], "this run differs: lt_imbalance=0 (recipe: 100); epochs=4 (recipe: 200); tag cifar10_lt_r100 "
                     "is for imbalance ratio 100, the run's class counts have ratio 1. Nothing was done."),
    (['--tag', 'cifar10_lt_r100'], 'names the registry weights trained with -c configs/cifar10_lt_r100.yaml'),
    (['--tag', 'mine_r100'], "tag mine_r100 is for imbalance ratio 100, the run's class counts have ratio 1"),
    (['--dataset', 'cifar10_lt_r100'], '--dataset cifar10_lt_r100 is for imbalance ratio 100'),
    (['--repo-id', 'timm-camc/resnet32_camc_lt.mine'], 'add --official'),
])
def test_a_label_the_run_contradicts_is_refused(publisher, run, capsys, caplog, tmp_path, flags, match):
    small = ['--checkpoint', str(run['dir'] / 'small.pth.tar'), '--metrics', str(run['dir'] / 'results_small.json')]
    code, stdout, log = _publish(publisher, capsys, caplog, *small, '--ema', *flags, '--out', str(tmp_path / 'out'))
    assert code == 2 and match in log, log
    assert not (tmp_path / 'out').exists()


def test_backbone_tag_loads_timm_weights_through_the_loader(hub_here, tmp_path, caplog):
    """``.tv_in1k``: timm's own repository (no recorded digest) through prepare_pretrained, backbone kept."""
    import timm.models
    plain = timm.create_model('resnet50')
    hub_here.seed('timm/resnet50.tv_in1k', {
        'model.safetensors': safetensors_bytes({k: v.contiguous() for k, v in plain.state_dict().items()}),
        'config.json': json.dumps(dict(architecture='resnet50', num_classes=1000)).encode()})
    model = timm.create_model('resnet50_camc_lt.tv_in1k', pretrained=True, num_classes=37, cache_dir=str(tmp_path))
    state, source = model.state_dict(), plain.state_dict()
    assert torch.equal(state['layer4.2.conv3.weight'], source['layer4.2.conv3.weight'])
    assert torch.equal(state['conv1.weight'], source['conv1.weight']) and state['head.fc.weight'].shape == (37, 2048)
    assert model.pretrained_cfg['file'].startswith(str(tmp_path))  # timm loaded the file that was checked
    assert 'records no sha256' in caplog.text


def test_published_registry_digest_is_enforced_for_tags_and_hf_hub_ids(hub_here, exported, tmp_path, monkeypatch):
    repo = 'test-org/registry-published'
    hub_here.seed(repo, {p.name: p.read_bytes() for p in exported.iterdir()})
    record = PretrainedWeights(
        arch='resnet32_camc_lt', tag='cifar10_lt_r100', hub_id=repo, dataset='cifar10_lt_r100', num_classes=10,
        recipe='configs/cifar10_lt_r100.yaml', status='published', sha256='0' * 64,
        metrics=dict(top1=71.23, many=88.1, medium=70.2, few=55.5))
    monkeypatch.setitem(WEIGHTS, record.name, record)  # the registry disagrees with the repository's own record
    for name, kwargs in [(f'hf-hub:{repo}', {}), (record.name, dict(pretrained_cfg_overlay=dict(hf_hub_id=repo)))]:
        with pytest.raises(camc_pretrained.WeightsIntegrityError, match='timm_camc.weights records 0000'):
            timm.create_model(name, pretrained=True, cache_dir=str(tmp_path), **kwargs)


# ------------------------------------------------------------------------------- uploading a staged folder as it is

STAGED_NAME = 'resnet32_camc_lt.cifar10_lt_r100'
STAGED_DIR = REPO / 'hub' / 'staged' / STAGED_NAME


def test_upload_the_staged_folder_then_load_it_from_the_hub(publisher, hub_here, capsys, caplog, tmp_path):
    record = WEIGHTS[STAGED_NAME]
    repo = record.hub_id
    code, out, log = _publish(publisher, capsys, caplog, '--folder', str(STAGED_DIR), '--official', '--repo-id', repo)
    assert code == 0, log
    assert f'Uploaded {STAGED_DIR}' in out and "status='published'" in out
    files = hub_here.files(repo)
    assert files['model.safetensors'] == (STAGED_DIR / 'model.safetensors').read_bytes()
    assert files['README.md'] == (STAGED_DIR / 'README.md').read_bytes()

    code, out, _ = _publish(publisher, capsys, caplog, '--folder', str(STAGED_DIR), '--official', '--repo-id', repo)
    assert code == 0 and 'already holds these weights' in out

    loaded = timm.create_model(f'hf-hub:{repo}', pretrained=True, cache_dir=str(tmp_path / 'cache'))
    staged = timm.create_model(f'local-dir:{STAGED_DIR}', pretrained=True)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), staged.state_dict().values()))


def test_upload_folder_refusals(publisher, hub_here, capsys, caplog, tmp_path):
    requests = len(hub_here.requests)
    # the registry organisation needs --official, and --official needs it
    code, _, log = _publish(publisher, capsys, caplog, '--folder', str(STAGED_DIR), '--repo-id', WEIGHTS[STAGED_NAME].hub_id)
    assert code == 2 and '--official goes with a timm-camc/ repository' in log
    code, _, log = _publish(publisher, capsys, caplog, '--folder', str(STAGED_DIR), '--official', '--repo-id',
                            'test-org/staged')
    assert code == 2 and '--official goes with' in log
    # weights that are not the ones the folder records
    changed = tmp_path / 'changed'
    shutil.copytree(STAGED_DIR, changed)
    weights = changed / 'model.safetensors'
    weights.write_bytes(weights.read_bytes()[:-1] + b'\0')
    code, _, log = _publish(publisher, capsys, caplog, '--folder', str(changed), '--repo-id', 'test-org/changed')
    assert code == 2 and 'sha256' in log and 'Nothing was done' in log
    # other files than a Hub folder
    extra = tmp_path / 'extra'
    shutil.copytree(STAGED_DIR, extra)
    (extra / 'notes.txt').write_text('x')
    code, _, log = _publish(publisher, capsys, caplog, '--folder', str(extra), '--repo-id', 'test-org/extra')
    assert code == 2 and 'notes.txt' in log
    # a registry repository whose record has other weights
    code, _, log = _publish(publisher, capsys, caplog, '--folder', str(STAGED_DIR), '--official', '--repo-id',
                            WEIGHTS['resnet32_camc_lt.cifar100_lt_r100'].hub_id)
    assert code == 2 and 'no staged or published record' in log
    assert len(hub_here.requests) == requests, 'a refused upload sends nothing'
