"""timm's model contract (as timm's tests/test_models.py checks it) for every registered CAMC model, at small sizes."""
import inspect
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

import timm
import timm_camc  # noqa: F401, registers the models
from timm.models import get_notrace_functions, get_notrace_modules
from timm.models._manipulate import group_parameters

REPO = Path(__file__).resolve().parent.parent

MODELS = timm.list_models('*camc*')
ALL_CAMC_MODES = ['global', 'class', 'none']


def _small_input(model, batch_size=2):
    """CIFAR models at their native 32 px, ImageNet models at 64 px (pool 2x2) to keep the CPU tests fast."""
    size = model.pretrained_cfg['input_size'][-1]
    return torch.randn(batch_size, 3, min(size, 64), min(size, 64))


def test_registry_lists_all_four():
    assert sorted(MODELS) == ['resnet152_camc_lt', 'resnet32_camc_lt', 'resnet50_camc_lt', 'resnext50_camc_lt']
    tags = timm.list_pretrained('*camc*')
    for name in ('resnext50_camc_lt.imagenet_lt', 'resnet50_camc_lt.inat2018', 'resnet152_camc_lt.places_lt',
                 'resnet32_camc_lt.cifar10_lt_r100', 'resnet32_camc_lt.cifar100_lt_r100'):
        assert name in tags


@pytest.mark.parametrize('model_name', MODELS)
@pytest.mark.parametrize('camc', ALL_CAMC_MODES)
def test_model_forward(model_name, camc):
    model = timm.create_model(model_name, camc=camc).eval()
    inputs = _small_input(model)
    outputs = model(inputs)
    assert outputs.shape == (2, model.num_classes)
    assert torch.isfinite(outputs).all()
    model.set_grad_checkpointing()
    torch.testing.assert_close(model(inputs), outputs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('model_name', MODELS)
@pytest.mark.parametrize('camc', ALL_CAMC_MODES)
def test_model_backward(model_name, camc):
    model = timm.create_model(model_name, num_classes=42, camc=camc, learn_scale=True).train()
    if model.head.calib is not None:
        nn.init.normal_(model.head.calib.conv.weight)  # gradients must also flow once phi has left its zero init
    outputs = model(_small_input(model))
    outputs.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing}'
    assert outputs.shape == (2, 42)
    assert torch.isfinite(outputs).all()


@pytest.mark.parametrize('model_name', MODELS)
def test_model_default_cfgs(model_name):
    """timm's test_model_default_cfgs, on the meta device at the full default resolution."""
    with torch.device('meta'):
        model = timm.create_model(model_name, device='meta', dtype=torch.float32).eval()
    cfg = model.pretrained_cfg
    assert cfg['paper_ids'] == 'arXiv:2108.12757' and cfg['license']
    assert model.in_chans == cfg['input_size'][0]
    assert model.num_classes == cfg['num_classes'] > 0
    inputs = torch.randn(1, *cfg['input_size'], device='meta')

    features = model.forward_features(inputs)
    assert features.shape[1] == model.num_features
    assert tuple(features.shape[-2:]) == cfg['pool_size']
    pre = model.forward_head(features, pre_logits=True)
    assert pre.shape == (1, model.head_hidden_size)

    model.to(torch.bfloat16)
    assert model(inputs.to(torch.bfloat16)).dtype == torch.bfloat16
    model.to(torch.float32)

    model.reset_classifier(0)
    assert model.num_classes == 0
    assert model(inputs).shape == pre.shape
    model.reset_classifier(0, '')
    assert tuple(model(inputs).shape[-2:]) == cfg['pool_size']

    model = timm.create_model(model_name, num_classes=0, device='meta')
    assert model(inputs).shape == pre.shape
    model = timm.create_model(model_name, num_classes=0, global_pool='', device='meta')
    assert model(inputs).ndim == 4

    state_dict = timm.create_model(model_name, device='meta').state_dict()
    assert cfg['classifier'] + '.weight' in state_dict
    assert cfg['first_conv'] + '.weight' in state_dict


@pytest.mark.parametrize('model_name', MODELS)
def test_model_api_contract(model_name):
    with pytest.raises(TypeError):
        timm.create_model(model_name, device='meta', not_a_model_arg=1)
    with pytest.raises(ValueError, match='num_classes'):
        timm.create_model(model_name, device='meta', num_classes=-1)
    with pytest.raises(ValueError, match='camc mode'):
        timm.create_model(model_name, device='meta', camc='nonsense')

    model = timm.create_model(model_name, device='meta')
    assert inspect.signature(model.reset_classifier).parameters['global_pool'].default is None
    groups = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    assert len(set(groups.values())) > 1
    misplaced = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type != 'meta']
    assert not misplaced

    # reset_classifier keeps the parent's device, dtype and train/eval mode
    model.to(dtype=torch.float64).eval()
    model.reset_classifier(0)
    model.reset_classifier(2)
    head_tensors = [*model.get_classifier().parameters(), *model.head.buffers()]
    assert head_tensors and all(t.device.type == 'meta' and t.dtype == torch.float64 for t in head_tensors)
    assert not any(m.training for m in model.modules())

    # frozen parameters stay frozen through head removal
    model = timm.create_model(model_name, device='meta')
    model.requires_grad_(False)
    model.reset_classifier(0)
    model.reset_classifier(0, '')
    assert not [n for n, p in model.named_parameters() if p.requires_grad]


RESET_SEQUENCES = [
    # (global_pool at creation, [(num_classes, global_pool or None), ...]): all accepted by timm's ResNet
    ('', [(0, None), (2, None)]),  # issue 10 item 11: classes come back after the pooling was removed
    ('', [(2, '')]),
    ('', [(0, ''), (2, None)]),
    ('avg', [(0, ''), (0, None), (3, None), (0, None)]),
    ('avg', [(2, 'max'), (0, ''), (4, None)]),
    ('avg', [(0, 'catavgmax'), (0, '')]),
]


@pytest.mark.parametrize('camc', ALL_CAMC_MODES)
@pytest.mark.parametrize('global_pool, calls', RESET_SEQUENCES)
def test_reset_classifier_sequences_run(camc, global_pool, calls):
    """Every reset_classifier sequence that timm's ResNet accepts is accepted, keeps device and dtype, and the model
    runs afterwards (timm's ResNet fails in forward after the first three)."""
    torch.manual_seed(0)
    num_classes = 0 if global_pool == '' else 5
    model = timm.create_model('resnet32_camc_lt', num_classes=num_classes, global_pool=global_pool, camc=camc)
    model.to(torch.float64).eval()
    inputs = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for num_classes, pool in calls:
        model.reset_classifier(num_classes) if pool is None else model.reset_classifier(num_classes, pool)
        assert model.num_classes == num_classes
        assert all(t.dtype == torch.float64 for t in model.head.state_dict().values() if t.is_floating_point())
        out = model(inputs)
        if num_classes:
            assert out.shape == (2, num_classes) and torch.isfinite(out).all()
            assert model.forward_head(model.forward_features(inputs), pre_logits=True).shape == (
                2, model.head_hidden_size)
        elif model.head.global_pool.pool_type:
            assert out.shape == (2, model.head_hidden_size)
        else:
            assert out.shape == (2, model.num_features, 8, 8)


def test_reset_classifier_refusal_leaves_model_unchanged():
    model = timm.create_model('resnet32_camc_lt', num_classes=5, camc='global')
    head = model.head
    with pytest.raises(ValueError, match='keeps the channel count'):
        model.reset_classifier(3, 'catavgmax')  # the calibration pools the channels themselves
    assert model.head is head and model.num_classes == 5
    plain = timm.create_model('resnet32_camc_lt', num_classes=5, camc='none')
    plain.reset_classifier(3, 'catavgmax')  # without CAMC, as in timm
    assert plain(torch.randn(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize('model_name', MODELS)
def test_model_features_only(model_name):
    torch.manual_seed(0)
    model = timm.create_model(model_name, features_only=True).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 4
    inputs = _small_input(model, batch_size=1)
    outputs = model(inputs)
    assert len(outputs) == len(channels)
    size = inputs.shape[-1]
    for c, r, o in zip(channels, reductions, outputs):
        assert o.shape[1] == c
        assert o.shape[-1] == math.ceil(size / r), f'reduction {r} does not match {tuple(o.shape)}'

    torch.manual_seed(0)
    getter = timm.create_model(model_name, features_only=True, feature_cls='getter').eval()
    for a, b in zip(getter(inputs), outputs):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('model_name', MODELS)
def test_model_forward_intermediates(model_name):
    model = timm.create_model(model_name).eval()
    inputs = _small_input(model, batch_size=1)
    feature_info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    output, intermediates = model.forward_intermediates(inputs)
    assert len(intermediates) == len(model.feature_info)
    for c, r, o in zip(feature_info.channels(), feature_info.reduction(), intermediates):
        assert o.shape[1] == c and o.shape[-1] == math.ceil(inputs.shape[-1] / r)
    torch.testing.assert_close(output, model.forward_features(inputs))

    last_two = model.forward_intermediates(inputs, indices=2, intermediates_only=True)
    torch.testing.assert_close(last_two[-1], intermediates[-1])
    assert len(last_two) == 2

    model.prune_intermediate_layers(indices=[1])
    pruned = model.forward_intermediates(inputs, indices=[1], intermediates_only=True)
    torch.testing.assert_close(pruned[0], intermediates[1])


@pytest.mark.parametrize('model_name', MODELS)
def test_model_forward_torchscript(model_name):
    with timm.layers.set_scriptable(True):
        model = timm.create_model(model_name).eval()
    scripted = torch.jit.script(model)
    inputs = _small_input(model, batch_size=1)
    torch.testing.assert_close(scripted(inputs), model(inputs), rtol=1e-4, atol=1e-5)


def _fx_model(model, train=False):
    tracer_kwargs = dict(
        leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    train_return = [train_nodes[-1]]
    if train:
        graph = NodePathTracer(**tracer_kwargs).trace(model)
        nodes = list(reversed(graph.nodes))
        names = [n.name for n in nodes]
        train_return = [train_nodes[-names.index(n.name)] for n in nodes[0]._input_nodes.keys()]
    return create_feature_extractor(
        model, train_return_nodes=train_return, eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs)


@pytest.mark.parametrize('model_name', MODELS)
def test_model_forward_fx(model_name):
    model = timm.create_model(model_name).eval()
    inputs = _small_input(model, batch_size=1)
    with torch.inference_mode():
        expected = model(inputs)
        fx_model = _fx_model(model)
        torch.testing.assert_close(tuple(fx_model(inputs).values())[0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('model_name', ['resnet32_camc_lt', 'resnet50_camc_lt'])
def test_model_backward_fx(model_name):
    model = timm.create_model(model_name, num_classes=42).train()
    fx_model = _fx_model(model, train=True)
    outputs = torch.cat(tuple(fx_model(_small_input(model)).values()))
    outputs.mean().backward()
    assert all(p.grad is not None for p in fx_model.parameters())
    assert outputs.shape[-1] == 42


@pytest.mark.parametrize('model_name', MODELS)
def test_training_forward_with_labels(model_name):
    model = timm.create_model(model_name, num_classes=5).train()
    inputs = _small_input(model, batch_size=4)
    target = torch.tensor([0, 1, 1, 4])
    out = model(inputs, target)
    assert isinstance(out, timm_camc.CamcOutput)
    assert out.logits.shape == out.aux_logits.shape == (4, 5)
    assert out.aux_weight == 0.5
    protos = model.head.calib.prototypes
    assert (protos[[0, 1, 4]].norm(dim=1) > 0).all() and (protos[[2, 3]] == 0).all()

    # labels are ignored in eval mode and the prototypes stay fixed
    model.eval()
    before = protos.clone()
    torch.testing.assert_close(model(inputs, target), model(inputs))
    torch.testing.assert_close(protos, before)


def test_balanced_q_label_counts_follow_the_run(tmp_path):
    """A model with balanced_q counts afresh from a checkpoint without counts, and keeps those of its own; a model
    without the option loads a checkpoint that has them."""
    plain, path = timm.create_model('resnet32_camc_lt', num_classes=5), tmp_path / 'plain.pth'
    torch.save(plain.state_dict(), path)
    overlay = dict(file=str(path))
    model = timm.create_model('resnet32_camc_lt', num_classes=5, balanced_q=True, pretrained=True,
                              pretrained_cfg_overlay=overlay).train()
    torch.testing.assert_close(model.head.calib.conv.weight, plain.head.calib.conv.weight)
    assert (model.head.calib.label_counts == 0).all()
    model(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 1, 4]))
    torch.save(model.state_dict(), path)
    again = timm.create_model('resnet32_camc_lt', num_classes=5, balanced_q=True, pretrained=True,
                              pretrained_cfg_overlay=overlay)
    assert again.head.calib.label_counts.tolist() == [1., 2., 0., 0., 1.]
    without = timm.create_model('resnet32_camc_lt', num_classes=5, pretrained=True, pretrained_cfg_overlay=overlay)
    assert 'head.calib.label_counts' not in without.state_dict()


@pytest.mark.parametrize('bad_target, match', [
    (torch.tensor([0, 1, 5, 2]), r'out of range \[0, 5\): 1 value\(s\): 5$'),
    (torch.tensor([0, -1, 1, 2]), r'out of range \[0, 5\): 1 value\(s\): -1$'),
    (torch.tensor([0., 1., 1., 2.]), 'int64 class indices'),
    (torch.tensor([0, 1]), 'shape'),
])
def test_training_labels_are_validated(bad_target, match):
    model = timm.create_model('resnet32_camc_lt', num_classes=5).train()
    before = model.head.calib.prototypes.clone()
    with pytest.raises(ValueError, match=match):
        model(torch.randn(4, 3, 32, 32), bad_target)
    torch.testing.assert_close(model.head.calib.prototypes, before)


def test_backbone_matches_timm_resnet():
    """Same parameter names and shapes as timm's own ResNet/ResNeXt except the head: weights are interchangeable."""
    pairs = [('resnet50_camc_lt', 'resnet50'), ('resnext50_camc_lt', 'resnext50_32x4d'),
             ('resnet152_camc_lt', 'resnet152')]
    for ours, theirs in pairs:
        a = {k: v.shape for k, v in timm.create_model(ours, device='meta').state_dict().items()
             if not k.startswith('head.')}
        b = {k: v.shape for k, v in timm.create_model(theirs, device='meta').state_dict().items()
             if not k.startswith('fc.')}
        assert a == b, ours


def test_resnet32_is_the_cifar_resnet32():
    model = timm.create_model('resnet32_camc_lt', camc='none', norm_classifier=False)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 1 + 3 * 5 * 2  # stem + 15 basic blocks of two 3x3 convs
    assert [model.get_submodule(f'layer{i}')[0].conv1.out_channels for i in (1, 2, 3)] == [16, 32, 64]
    assert len(model.layer4) == 0
    assert 0.46e6 < sum(p.numel() for p in model.parameters()) < 0.48e6  # 0.46M in the literature + 1x1 shortcuts


def test_head_options_share_the_initialisation():
    """Models that differ only in head options start from the same weights under one seed (paired comparisons in
    train.py rely on it): the whole backbone and the classifier rows, with only the calibration added."""
    def build(**kwargs):
        torch.manual_seed(0)
        return timm.create_model('resnet32_camc_lt', num_classes=10, **kwargs).state_dict()

    reference = build(camc='none')
    for kwargs in (dict(camc='global'), dict(camc='class'), dict(camc='global', camc_topk=3)):
        state = build(**kwargs)
        shared = [k for k in reference if k in state]
        assert len(shared) == len(reference), f'{kwargs}: missing {set(reference) - set(state)}'
        for k in shared:
            torch.testing.assert_close(state[k], reference[k], rtol=0, atol=0, msg=f'{kwargs}: {k} differs')


def test_head_options_have_one_spelling(tmp_path):
    """HEAD_OPTIONS is the one definition: CamcHead's kwargs, the model kwargs, train.py's options, the checkpoint
    reader and config.json's model_args all use its names and defaults."""
    import importlib.util
    from timm_camc.layers import HEAD_OPTIONS, CamcHead
    from timm_camc.publish import camc_head_kwargs
    from timm_camc.models import camc_model_kwargs

    params = inspect.signature(CamcHead.__init__).parameters
    assert {o.name: o.default for o in HEAD_OPTIONS} == {o.name: params[o.name].default for o in HEAD_OPTIONS}
    with pytest.raises(TypeError, match='cosine_scal.*head options: camc, norm_classifier'):
        timm.create_model('resnet32_camc_lt', cosine_scal=8.)

    spec = importlib.util.spec_from_file_location('camc_train', REPO / 'train.py')
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    argv = ['--no-norm-classifier', '--cosine-scale', '8', '--camc', 'target', '--nonneg-map', '--camc-topk', '4']
    args = train.parser.parse_args(argv)
    kwargs = camc_model_kwargs('resnet32_camc_lt', args)
    assert kwargs == dict(camc='target', norm_classifier=False, cosine_scale=8., learn_scale=False, proto_momentum=0.9,
                          camc_topk=4, nonneg_map=True, balanced_q=False, aux_weight=0.5)
    model = timm.create_model('resnet32_camc_lt', num_classes=3, **kwargs)
    assert camc_head_kwargs(model) == kwargs  # what config.json records
    assert camc_model_kwargs('resnet32_camc_lt', dict(linear_classifier=True))['norm_classifier'] is False  # old runs
    assert camc_model_kwargs('resnet32', vars(args)) == {}  # plain timm models get no head options
    readme = (REPO / 'README.md').read_text()
    assert all(f'| `{o.name}` | ' in readme for o in HEAD_OPTIONS), 'README: the head options table'
