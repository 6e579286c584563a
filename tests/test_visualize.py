"""CAM overlays and per-class accuracy plots, drawn from a briefly trained model on real CIFAR-10 JPEGs."""
import argparse
import importlib
import json
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import timm
import timm_camc
from timm.data import create_transform, resolve_data_config
from timm_camc import visualize as viz
from timm_camc.visualize.plot import _legend_label
from timm_camc.data import ImageListDataset
from timm_camc.metrics import LongTailMetrics

COUNTS = [500, 300, 150, 90, 60, 40, 25, 15, 8, 5]  # two many-, four medium-, four few-shot classes (> 100, < 20)


def _png(path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == 'PNG'
        return np.asarray(img.convert('RGB')).astype(np.float32)


def _distinct_colours(pixels: np.ndarray) -> int:
    return len(np.unique(pixels.reshape(-1, 3).astype(np.uint8), axis=0))


@pytest.fixture(scope='module')
def test_set(cifar10_small):
    return ImageListDataset.from_folder(str(cifar10_small / 'test'))


@pytest.fixture(scope='module')
def trained(cifar10_small):
    """resnet32_camc_lt after 3 epochs on 20 training images per class: its maps and calibration are not flat."""
    torch.manual_seed(0)
    model = timm.create_model('resnet32_camc_lt', num_classes=10)
    train = ImageListDataset.from_folder(str(cifar10_small / 'train'))
    transform = create_transform(**resolve_data_config(model=model))
    keep = [i for i, t in enumerate(train.targets) if sum(1 for u in train.targets[:i] if u == t) < 20]
    x = torch.stack([transform(train[i][0]) for i in keep])
    y = torch.tensor([train.targets[i] for i in keep])
    loss_fn = timm_camc.CamcLoss(torch.nn.CrossEntropyLoss())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(3):
        for batch in torch.randperm(len(y)).split(50):
            loss = loss_fn(model(x[batch], y[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _predict(model, images):
    x = torch.stack([create_transform(**resolve_data_config(model=model))(img) for img in images])
    with torch.no_grad():
        return model(x).argmax(1).tolist()


def test_cam_overlays_draw_the_maps_of_the_predicted_and_true_class(trained, test_set, tmp_path):
    indices = list(range(3, 200, 25))  # 8 images, 8 classes
    images = [test_set[i][0] for i in indices]
    targets = [test_set.targets[i] for i in indices]
    names = test_set.class_names
    preds = _predict(trained, images)
    assert any(p != t for p, t in zip(preds, targets)), 'the checks below need a misclassified image'

    trained.train()
    paths = viz.cam_overlays(trained, images, targets, tmp_path / 'cams', class_names=names, indices=indices)
    assert trained.training  # mode restored
    trained.eval()
    assert sorted(p.name for p in (tmp_path / 'cams').iterdir()) == sorted(p.name for p in paths)
    assert [p.name for p in paths] == [f'cam_{i:05d}_{names[t]}_{names[p]}.png' for i, t, p in
                                       zip(indices, targets, preds)]

    explanations = viz.explain_images(trained, images, targets, indices=indices)
    for path, e, img, pred in zip(paths, explanations, images, preds):
        assert e.pred == pred
        # the displayed image is the model input, upscaled 5x: its pixel centres are the original pixels
        assert e.image.shape == (160, 160, 3)
        np.testing.assert_allclose(e.image[2::5, 2::5], np.asarray(img) / 255., atol=2e-3)
        for m in (e.cam_pred, e.cam_target, e.calibration):
            assert m.shape == (160, 160) and m.min() < 0.05 and m.max() > 0.95  # min-max scaled, then upsampled
        low, high = e.calibration_range
        assert 0 < low < high < 1
        assert e.prob_pred >= e.prob_target and 0 < e.prob_target <= 1
        if e.correct:
            np.testing.assert_array_equal(e.cam_pred, e.cam_target)
        else:
            assert np.abs(e.cam_pred - e.cam_target).mean() > 0.02

        png = _png(path)
        fig = viz.cam_figure(e, names)
        assert len(fig.axes) == 4 and png.shape[1] >= 4 * 160  # four panels, each at least the 160 px image
        assert png.std() > 30 and _distinct_colours(png) > 3000
        # each panel of the PNG is, pixel for pixel, the image or its overlay; and the panels differ
        height, width = png.shape[:2]
        crops = []
        for ax in fig.axes:
            box = ax.get_position()
            top, left = round((1 - box.y1) * height), round(box.x0 * width)
            crops.append(png[top + 2:top + 158, left + 2:left + 158])
        expected = [e.image, viz.overlay_map(e.image, e.cam_pred), viz.overlay_map(e.image, e.cam_target),
                    viz.overlay_map(e.image, e.calibration)]
        for crop, want in zip(crops, expected):
            assert np.abs(crop - 255 * want[2:158, 2:158]).mean() < 2
        diff = lambda a, b: np.abs(crops[a] - crops[b]).mean()  # noqa: E731
        assert min(diff(0, 1), diff(0, 2), diff(0, 3), diff(1, 3)) > 10
        assert diff(1, 2) > 3 if not e.correct else diff(1, 2) == 0


def test_explain_images_maps_follow_the_model(trained, test_set):
    """The upsampled maps are those of ``model.explain`` for the predicted and the true class."""
    indices = list(range(0, 200, 20))
    images, targets = [test_set[i][0] for i in indices], [test_set.targets[i] for i in indices]
    explanations = viz.explain_images(trained, images, targets, batch_size=4)
    x = torch.stack([create_transform(**resolve_data_config(model=trained))(img) for img in images])
    with torch.no_grad():
        cam_pred = trained.explain(x)['cam']
        cam_true = trained.explain(x, classes=torch.tensor(targets))['cam']
    for e, a, b in zip(explanations, cam_pred, cam_true):
        pooled_pred = torch.from_numpy(e.cam_pred)[None, None]
        pooled_pred = torch.nn.functional.avg_pool2d(pooled_pred, 20).flatten()
        pooled_true = torch.nn.functional.avg_pool2d(torch.from_numpy(e.cam_target)[None, None], 20).flatten()
        assert torch.corrcoef(torch.stack([pooled_pred, a.flatten()]))[0, 1] > 0.95
        assert torch.corrcoef(torch.stack([pooled_true, b.flatten()]))[0, 1] > 0.95


def test_cam_command_line_loads_the_checkpoint(trained, test_set, cifar10_small, tmp_path):
    names = test_set.class_names
    args = argparse.Namespace(model='resnet32_camc_lt', num_classes=10, class_names=names, camc='global')
    torch.save({'state_dict': trained.state_dict(), 'args': args}, tmp_path / 'last.pth.tar')
    argv = ['cam', '--model', 'resnet32_camc_lt', '--data-dir', str(cifar10_small), '--split', 'test',
            '--count', '3', '--device', 'cpu']
    assert viz.main(argv + ['--checkpoint', str(tmp_path / 'last.pth.tar'), '--out-dir', str(tmp_path / 'cli')]) == 0
    direct = viz.dataset_cam_overlays(trained, test_set, tmp_path / 'direct', count=3)
    assert [p.name.split('_')[1:3] for p in direct] == [['00000', 'airplane'], ['00020', 'automobile'],
                                                        ['00040', 'bird']]  # each class in turn
    for path in direct:
        np.testing.assert_array_equal(_png(tmp_path / 'cli' / path.name), _png(path))  # the same weights

    # the model options come from the checkpoint: without calibration there are three panels
    plain = timm.create_model('resnet32_camc_lt', num_classes=10, camc='none')
    args = argparse.Namespace(model='resnet32_camc_lt', num_classes=10, class_names=names, camc='none')
    torch.save({'state_dict': plain.state_dict(), 'args': args}, tmp_path / 'plain.pth.tar')
    assert viz.main(argv + ['--checkpoint', str(tmp_path / 'plain.pth.tar'), '--out-dir', str(tmp_path / 'plain'),
                            '--indices', '7']) == 0
    (path,) = (tmp_path / 'plain').iterdir()
    assert re.fullmatch(r'cam_00007_airplane_[a-z]+\.png', path.name)
    three, four = _png(path), _png(direct[0])
    assert three.shape[0] == four.shape[0] and four.shape[1] - three.shape[1] >= 160  # one 160 px panel fewer


def _results(model, test_set, tau=0.):
    """validate.py-style results from real predictions on the test images (tau > 0: logit-adjusted)."""
    images = [test_set[i][0] for i in range(len(test_set))]
    x = torch.stack([create_transform(**resolve_data_config(model=model))(img) for img in images])
    with torch.no_grad():
        logits = model(x) - tau * torch.tensor(COUNTS, dtype=torch.float).log()
    metrics = LongTailMetrics(10, train_counts=COUNTS)
    metrics.update(logits, torch.tensor(test_set.targets))
    result = metrics.compute()
    result.update(model='resnet32_camc_lt', checkpoint='', class_counts=COUNTS, class_names=test_set.class_names)
    return result


def _colour_pixels(png: np.ndarray, hex_colour: str) -> int:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float32)
    return int((np.abs(png - rgb).max(-1) < 12).sum())


def test_per_class_plot_of_two_results(trained, test_set, tmp_path):
    ce, la = _results(trained, test_set), _results(trained, test_set, tau=1.)
    assert ce['per_class'] != la['per_class']
    out = viz.plot_per_class_accuracy([ce, la], tmp_path / 'per_class.png', labels=['CE', 'CE + LA'])
    png = _png(out)
    assert png.std() > 20 and _distinct_colours(png) > 500
    assert _colour_pixels(png, '#1f77b4') > 100 and _colour_pixels(png, '#ff7f0e') > 100  # both methods drawn

    one = _png(viz.plot_per_class_accuracy(ce, tmp_path / 'one.png'))
    assert _colour_pixels(one, '#ff7f0e') < 10  # the second colour belongs to the second result only


def test_plot_command_line_with_many_classes(tmp_path):
    """100 long-tailed classes (ImageNet-LT-like spread): running means, no class names on the axis."""
    rng = np.random.default_rng(0)
    counts = np.round(500 * 0.01 ** (np.arange(100) / 99)).astype(int).tolist()
    files = []
    for name, shift in (('ce', 0), ('camc', 10)):
        acc = np.clip(20 + 12 * np.log(counts) + shift + rng.normal(0, 8, 100), 0, 100)
        result = dict(model=f'resnet32_{name}', per_class=acc.tolist(), class_counts=counts, top1=float(acc.mean()),
                      many_thresh=100, few_thresh=20)
        files.append(tmp_path / f'{name}.json')
        files[-1].write_text(json.dumps(result))
    out = tmp_path / 'plot.png'
    assert viz.main(['plot', '--results', *map(str, files), '--labels', 'CE', 'CAMC', '--out', str(out)]) == 0
    png = _png(out)
    assert _colour_pixels(png, '#1f77b4') > 100 and _colour_pixels(png, '#ff7f0e') > 100


def test_plot_rejects_results_it_cannot_compare(tmp_path):
    base = dict(model='m', per_class=[50.] * 10, class_counts=COUNTS)
    with pytest.raises(ValueError, match='--train-counts'):
        viz.plot_per_class_accuracy([base, dict(base, class_counts=None)], tmp_path / 'x.png')
    with pytest.raises(ValueError, match='different numbers of classes'):
        viz.plot_per_class_accuracy([base, dict(base, per_class=[50.] * 5, class_counts=COUNTS[:5])],
                                    tmp_path / 'x.png')
    with pytest.raises(ValueError, match='different class counts'):
        viz.plot_per_class_accuracy([base, dict(base, class_counts=COUNTS[::-1])], tmp_path / 'x.png')
    with pytest.raises(ValueError, match='2 labels for 1 results'):
        viz.plot_per_class_accuracy(base, tmp_path / 'x.png', labels=['a', 'b'])
    assert not (tmp_path / 'x.png').exists()


def test_missing_matplotlib_says_how_to_install_it(monkeypatch, tmp_path):
    model = timm.create_model('resnet32_camc_lt', num_classes=10)
    image = Image.new('RGB', (32, 32))
    with monkeypatch.context() as m:
        m.setitem(sys.modules, 'matplotlib', None)  # import matplotlib fails
        importlib.reload(viz)  # the module itself imports without it
        explanations = viz.explain_images(model, [image], [3])  # computing the maps needs no matplotlib
        assert explanations[0].target == 3
        with pytest.raises(ImportError, match=re.escape('pip install "timm-camc[viz]"')):
            viz.cam_overlays(model, [image], [3], tmp_path / 'cams')
        with pytest.raises(ImportError, match='pip install matplotlib'):
            viz.plot_per_class_accuracy(dict(per_class=[1.], class_counts=[1]), tmp_path / 'x.png')
    importlib.reload(viz)
    assert not (tmp_path / 'cams').exists()


def test_legend_names_shot_and_class_groups_apart():
    """The shot-based medium and the class-group medium keep distinct names in the plot legend."""
    result = dict(top1=50., many_shot=70., medium_shot=40., few_shot=None,
                  class_groups={'head': 80., 'medium': 45., 'tail': 20.})
    assert _legend_label('CE', result) == (
        'CE: top-1 50.0, many-shot 70.0, medium-shot 40.0, head classes 80.0, medium classes 45.0, tail classes 20.0')
    assert _legend_label('CE', {}) == 'CE'
