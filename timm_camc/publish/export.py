""" Write the Hub folder of trained CAMC weights, and push it as one commit

``export_folder`` writes ``model.safetensors`` and timm's ``config.json`` with ``timm.models.save_for_hf`` (the CAMC
head in ``model_args``), then adds the weights' sha256 to ``config.json`` and writes the model card. ``push_folder``
uploads the folder as one commit and refuses to replace weights unless forced; it compares the repository's weights
with the local file by the sha256 the Hub reports for them (``HfApi.get_paths_info``), downloading nothing.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple

import torch.nn as nn
from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import HFValidationError, validate_repo_id as _hf_validate_repo_id

from timm.models import save_for_hf

from ..pretrained import CARD_FILE, CONFIG_FILE, SHA256_KEY, WEIGHTS_FILE, sha256_file
from ..version import __version__
from ..weights import METRIC_KEYS, PretrainedWeights
from .card import model_card
from .records import Label, TrainedCheckpoint, camc_head_kwargs, training_data_config

# timm_camc.weights metric key (the README table's columns) -> validate.py results key
_REGISTRY_METRICS = dict(top1='top1', many='many_shot', medium='medium_shot', few='few_shot')

__all__ = ['Export', 'WeightsExistError', 'export_folder', 'push_folder', 'validate_repo_id']

_logger = logging.getLogger(__name__)


class WeightsExistError(RuntimeError):
    """The Hub repository already holds weights and replacing them was not asked for."""


@dataclass
class Export:
    """A Hub folder written by ``export_folder``.

    Attributes:
        folder: The folder (``model.safetensors``, ``config.json``, ``README.md``).
        name: ``'<arch>.<tag>'``.
        sha256: Digest of ``model.safetensors``.
        record: The ``timm_camc.weights`` record of these weights once published at ``hub_id``; None unless the label
            is the registry's own (a user's weights have no place in the registry).
    """
    folder: str
    name: str
    sha256: str
    record: Optional[PretrainedWeights]


def export_folder(
        model: nn.Module,
        checkpoint: TrainedCheckpoint,
        metrics: Mapping[str, Any],
        folder: str,
        *,
        label: Label,
        hub_id: Optional[str],
        secrets: Sequence[str] = (),
        status: str = 'published',
        notes: Optional[str] = None,
) -> Export:
    """Write the Hub folder of a trained model: weights, timm config (with the weights' sha256) and model card.

    Args:
        model: The trained model (``records.build_trained_model``).
        checkpoint: Its checkpoint (options, EMA or raw, epoch).
        metrics: Its validate.py results (``records.read_metrics``, ``records.check_metrics``).
        folder: An existing, empty folder.
        label: Tag, dataset and registry record (``records.resolve_label``).
        hub_id: The Hub repository the folder is meant for (usage lines of the card); None when not known yet.
        secrets: Strings that must not appear in any written file (e.g. the Hub token); if one does, the folder
            is emptied and an error raised.
        status: Status of the registry record returned for official weights: ``'published'`` when the folder is
            pushed, ``'staged'`` when it is only written.
        notes: Markdown for the model card's "Notes" section, or None.
    """
    name = f'{checkpoint.arch}.{label.tag}'
    out = Path(folder)
    label_names = checkpoint.args.get('class_names') or metrics.get('class_names')
    if label_names is not None and len(label_names) != checkpoint.num_classes:
        _logger.warning(f'{len(label_names)} class names for {checkpoint.num_classes} classes: not recorded')
        label_names = None
    save_for_hf(
        model, str(out), model_config=dict(label_names=list(label_names)) if label_names else None,
        model_args=camc_head_kwargs(model), safe_serialization=True, data_config=training_data_config(checkpoint.args))
    weights = out / WEIGHTS_FILE
    sha256 = sha256_file(str(weights))
    config = json.loads((out / CONFIG_FILE).read_text(encoding='utf-8'))
    config[SHA256_KEY] = {WEIGHTS_FILE: sha256}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding='utf-8')

    card = model_card(model, checkpoint, metrics, label=label, hub_id=hub_id, sha256=sha256,
                      size=weights.stat().st_size, notes=notes)
    card.save(str(out / CARD_FILE))

    for path in out.iterdir():
        if path.suffix in ('.json', '.md') and any(s and s in path.read_text(encoding='utf-8') for s in secrets):
            for written in out.iterdir():
                written.unlink()
            raise RuntimeError(f'A credential would have been written to {path.name}; nothing was exported')

    record = None
    if label.official and hub_id is not None:
        known = label.record
        record = PretrainedWeights(
            arch=checkpoint.arch, tag=label.tag, hub_id=hub_id, dataset=known.dataset,
            num_classes=checkpoint.num_classes, recipe=known.recipe, recipe_args=known.recipe_args,
            status=status, sha256=sha256,
            metrics={k: None if metrics[m] is None else round(float(metrics[m]), 2)
                     for k, m in ((k, _REGISTRY_METRICS[k]) for k in METRIC_KEYS)})
    return Export(folder=str(out), name=name, sha256=sha256, record=record)


# ------------------------------------------------------------------------------------------------------- pushing

def validate_repo_id(repo_id: str) -> str:
    """Check a Hub model repository id is ``'org/name'``.

    Raises:
        ValueError: Saying what is wrong.
    """
    if not isinstance(repo_id, str) or repo_id.count('/') != 1 or not all(repo_id.split('/')):
        raise ValueError(f'Repository id {repo_id!r} must be "org/name" (an organisation or user, then the name)')
    try:
        _hf_validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ValueError(f'Repository id {repo_id!r} is not valid: {e}') from None
    return repo_id


def _head_commit(api: HfApi, repo_id: str, revision: Optional[str]) -> Optional[str]:
    try:
        return api.repo_info(repo_id, revision=revision).sha
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return None


def _remote_weights(api: HfApi, repo_id: str, commit: str) -> Tuple[bool, Optional[str]]:
    """Whether the repository has weights at ``commit``, and their sha256 (None where the Hub reports none).

    The Hub reports the sha256 of LFS files (``.safetensors`` are LFS by the default ``.gitattributes``); a regular
    (non-LFS) file has only its git blob id, which is not compared: such weights count as other weights.
    """
    try:
        entries = api.get_paths_info(repo_id, [WEIGHTS_FILE], revision=commit)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return False, None
    for entry in entries:
        if entry.path == WEIGHTS_FILE:
            lfs = getattr(entry, 'lfs', None)
            return True, lfs.sha256 if lfs is not None else None
    return False, None


def push_folder(
        folder: str,
        repo_id: str,
        *,
        token: str,
        revision: Optional[str] = None,
        private: bool = False,
        force: bool = False,
        commit_message: str = 'Upload weights with timm-camc',
        api: Optional[HfApi] = None,
) -> Tuple[str, str]:
    """Upload a Hub folder as one commit, refusing to replace weights unless ``force``.

    The repository (and the branch ``revision``) is created if needed. The check for existing weights and the commit
    are tied together: the commit names the checked head as its parent, so a concurrent push makes it fail rather
    than overwrite. If the repository already holds exactly these weights (a retry after a lost response), nothing
    is uploaded.

    Args:
        folder: The folder to upload (``export_folder``).
        repo_id: ``'org/name'``.
        token: Hub token with write access.
        revision: Branch to commit to, the default branch if None. A missing branch is created from the default
            branch; the weights it inherits are replaced on it without ``force`` (the default branch is unchanged).
        private: Create the repository private (an existing repository keeps its visibility).
        force: Replace weights already in the repository.
        commit_message: Commit title.
        api: The ``HfApi`` client (default: a new one with ``token``).

    Returns:
        ``(commit_url, status)``, status ``'published'`` or ``'unchanged'``.

    Raises:
        WeightsExistError: The repository holds other weights and ``force`` is False (nothing was changed).
        huggingface_hub.errors.HfHubHTTPError: The Hub refused or failed a request (nothing half-published: the
            upload is a single commit, safe to retry).
    """
    validate_repo_id(repo_id)
    api = api or HfApi(token=token, library_name='timm_camc', library_version=__version__)
    local = sha256_file(str(Path(folder) / WEIGHTS_FILE))
    where = f'{repo_id}@{revision}' if revision else repo_id

    head = _head_commit(api, repo_id, revision)
    present, remote = _remote_weights(api, repo_id, head) if head is not None else (False, None)
    if present and remote == local and not force:
        _logger.info(f'{where} already holds these weights ({head})')
        return f'{api.endpoint}/{repo_id}/commit/{head}', 'unchanged'
    if present and not force:
        raise WeightsExistError(
            f'{where} already has {WEIGHTS_FILE} (other weights): nothing was changed. Pass --force to replace '
            f'them, or publish to another --revision or --repo-id.')

    if head is None:
        # a new repository, or a new branch (made from the default branch: what it inherits is replaced there only)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        head = _head_commit(api, repo_id, revision)
        if revision is None and not force:
            present, remote = _remote_weights(api, repo_id, head)
            if present and remote != local:
                raise WeightsExistError(f'{where} received other weights meanwhile: nothing was uploaded')
    elif private:
        _logger.warning(f'{repo_id} exists: its visibility is left as it is')
    info = api.upload_folder(
        repo_id=repo_id, folder_path=folder, revision=revision, commit_message=commit_message, parent_commit=head)
    return info.commit_url, 'published'
