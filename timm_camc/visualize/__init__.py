""" See what the model sees: class activation map overlays and per-class accuracy against training frequency

* ``cam_overlays`` / ``dataset_cam_overlays``: one PNG per image with the input, the class activation map (CAM) of
  the predicted class, the CAM of the true class and, for models with CAMC on, CAMC's calibration map ``A``, each
  overlaid on the image. The maps come from ``model.explain()``, the head code that computes the logits.
* ``plot_per_class_accuracy``: per-class accuracy of one or several ``validate.py`` results with the classes sorted
  by training images, the training count on a log-scaled twin axis and the many / medium / few-shot bands.

Command line::

    python -m timm_camc.visualize plot --results ce.json camc.json --labels CE CAMC --out per_class.png
    python -m timm_camc.visualize cam --model resnet32_camc_lt --checkpoint output/train/run/last.pth.tar \\
        --data-dir data/cifar10-jpeg --split test --count 20 --out-dir output/cams

Drawing needs matplotlib (``pip install timm-camc[viz]``); computing the maps (``explain_images``) does not.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
from .cam import CamExplanation, cam_figure, cam_file_name, cam_overlays, dataset_cam_overlays, explain_images, \
    overlay_map
from .cli import main
from .plot import plot_per_class_accuracy

__all__ = [
    'CamExplanation', 'explain_images', 'overlay_map', 'cam_figure', 'cam_overlays', 'dataset_cam_overlays',
    'cam_file_name', 'plot_per_class_accuracy', 'main',
]
