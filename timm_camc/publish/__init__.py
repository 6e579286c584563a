""" Publishing trained CAMC weights to the Hugging Face Hub (``hub/publish.py`` is the command line over this)

``records``: the train.py checkpoint, its validate.py metrics and the label (tag, dataset, registry or a user's own)
they earn. ``card``: the model card. ``export``: the Hub folder (timm's ``save_for_hf`` plus the weights' sha256) and
the one-commit push. Loading and checking weights is ``timm_camc.pretrained``; nothing here is imported by
``import timm_camc`` or ``timm.create_model``.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
from .card import model_card
from .export import Export, WeightsExistError, export_folder, push_folder, validate_repo_id
from .records import (
    REQUIRED_METRICS, USER_TAG, Label, TrainedCheckpoint, build_trained_model, camc_head_kwargs, check_metrics,
    load_trained_checkpoint, read_metrics, resolve_label, training_data_config,
)
