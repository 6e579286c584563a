"""Weight surgery: CAMC checkpoints across class counts, and plain timm ResNet weights into CAMC models."""
import pytest
import torch
from safetensors.torch import save_file

import timm
import timm_camc  # noqa: F401


def _save(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def _trained_cifar_model():
    torch.manual_seed(0)
    model = timm.create_model('resnet32_camc_lt', num_classes=10).train()
    torch.nn.init.normal_(model.head.calib.conv.weight)
    model(torch.randn(8, 3, 32, 32), torch.arange(8))  # non-zero prototypes and BN statistics
    return model.eval()


def _backbone(state_dict):
    return {k: v for k, v in state_dict.items() if not k.startswith(('head.', 'fc.'))}


def test_same_class_count_roundtrip(tmp_path):
    source = _trained_cifar_model()
    path = _save(source, tmp_path / 'model.safetensors')
    model = timm.create_model('resnet32_camc_lt', pretrained=True, pretrained_cfg_overlay=dict(file=path)).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
    torch.testing.assert_close(model.head.calib.prototypes, source.head.calib.prototypes)


def test_other_class_count_drops_every_class_sized_tensor(tmp_path):
    source = _trained_cifar_model()
    path = _save(source, tmp_path / 'model.safetensors')
    model = timm.create_model(
        'resnet32_camc_lt', pretrained=True, pretrained_cfg_overlay=dict(file=path), num_classes=5)
    state = model.state_dict()
    assert state['head.fc.weight'].shape == (5, 64)
    assert state['head.calib.prototypes'].shape == (5, 64) and not state['head.calib.prototypes'].any()
    # class-independent parts of the head (the map conv) and the whole backbone are kept
    torch.testing.assert_close(state['head.calib.conv.weight'], source.head.calib.conv.weight)
    for k, v in _backbone(source.state_dict()).items():
        torch.testing.assert_close(state[k], v, msg=k)


@pytest.mark.parametrize('num_classes', [7, 1000])
def test_plain_timm_resnet_weights_load_as_backbone(tmp_path, num_classes):
    torch.manual_seed(0)
    plain = timm.create_model('resnet50')
    path = _save(plain, tmp_path / 'resnet50.safetensors')
    model = timm.create_model(
        'resnet50_camc_lt.tv_in1k', pretrained=True, pretrained_cfg_overlay=dict(file=path),
        num_classes=num_classes)
    state = model.state_dict()
    for k, v in _backbone(plain.state_dict()).items():
        torch.testing.assert_close(state[k], v, msg=k)
    assert state['head.fc.weight'].shape == (num_classes, 2048)
    assert not any(k.startswith('fc.') for k in state)
    assert torch.isfinite(model.eval()(torch.randn(1, 3, 64, 64))).all()


def test_mismatched_architecture_names_tensors_and_shapes(tmp_path):
    path = _save(timm.create_model('resnet50'), tmp_path / 'resnet50.safetensors')
    expected = r'layer1\.0\.conv2\.weight: checkpoint \(64, 64, 3, 3\) vs model \(128, 4, 3, 3\)'
    with pytest.raises(RuntimeError, match=expected):
        timm.create_model('resnext50_camc_lt', pretrained=True, pretrained_cfg_overlay=dict(file=path))


def test_tau_normalisation_of_a_linear_classifier():
    from timm_camc.layers import tau_normalize_
    model = timm.create_model('resnet32_camc_lt', camc='none', norm_classifier=False)
    weight = model.get_classifier().weight.detach().clone()
    tau_normalize_(model.get_classifier(), 0.5)
    torch.testing.assert_close(model.get_classifier().weight, weight / weight.norm(dim=1, keepdim=True).sqrt())
    tau_normalize_(model.get_classifier(), 1.0)
    torch.testing.assert_close(model.get_classifier().weight.norm(dim=1), torch.ones(10))
    with pytest.raises(ValueError, match='ignores'):
        tau_normalize_(timm.create_model('resnet32_camc_lt').get_classifier(), 1.0)
