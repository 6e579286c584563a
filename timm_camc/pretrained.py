""" Pretrained CAMC weights: the checks a model runs before timm loads them

``timm.create_model('<arch>.<tag>' | 'hf-hub:<org>/<repo>' | 'local-dir:<dir>', pretrained=True)`` is timm's own
loader. The CAMC models' factory calls ``prepare_pretrained`` first; it finds the weights file, checks it and hands
timm that very file (a ``file`` source), so what is loaded is what was checked. This module is the only part of the
weights handling that ``import timm_camc`` loads: it never writes, uploads or builds model cards
(``timm_camc.publish`` does).

The rules:
    * Safetensors only. Pickle weights (``pytorch_model.bin`` and the like) are refused unless
      ``TIMM_CAMC_ALLOW_PICKLE=1``; timm then reads them with ``torch.load(weights_only=True)``.
    * A recorded sha256 is enforced for whatever file is loaded: ``config.json`` records ``weights_sha256``
      (``{filename: sha256}``), the model card a ``Files`` line, and ``timm_camc.weights`` the digest of each published
      tag. A file whose name has no recorded digest while the folder records one for another file (a
      ``pytorch_model.bin`` put where the exported ``model.safetensors`` was) is refused.
    * A ``local-dir:`` folder must record the digest of its weights: one that records none is refused, unless
      ``TIMM_CAMC_ALLOW_UNVERIFIED=1`` (then it loads with a warning). A Hub repository that records none loads with a
      warning (third-party timm repositories record none; the download itself is what the repository holds).
    * Hub weights are downloaded once, and everything is read at one commit: for ``hf-hub:`` ids the commit of the
      ``config.json`` timm built the model from, for tags the commit the weights came from. A push to the branch in
      between cannot swap the file that is checked, the one that is loaded, or the config the model was built from.
    * A tag that ``timm_camc.weights`` lists as a recipe only fails at once, without touching the network, naming
      the command that trains it. A ``'staged'`` tag (exported into the repository, not yet uploaded) loads from its
      folder in a source checkout (``hub/staged/<arch>.<tag>/``, checked against the folder's and the record's
      sha256); without a checkout it fails, naming the folder.

``verify_weights`` checks a repository or folder against both records (config and model card) on demand.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from huggingface_hub import file_exists, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError,
)

from timm.models import resolve_pretrained_cfg
# timm's own rule for where pretrained weights come from (hf-hub, local-dir, file, url): no public equivalent
from timm.models._builder import _resolve_pretrained_source

from .version import __version__
from .weights import HUB_ORG, WEIGHTS, PretrainedWeights, find_weights

__all__ = [
    'ALLOW_PICKLE_ENV', 'ALLOW_UNVERIFIED_ENV', 'CARD_FILE', 'CONFIG_FILE', 'PICKLE_FILE', 'SHA256_KEY', 'WEIGHTS_FILE',
    'PretrainedWeightsError', 'WeightsNotPublishedError', 'UnsafeWeightsError', 'WeightsIntegrityError',
    'card_sha256_line', 'prepare_pretrained', 'read_card_sha256', 'sha256_file', 'verify_weights',
]

_logger = logging.getLogger(__name__)

WEIGHTS_FILE = 'model.safetensors'
PICKLE_FILE = 'pytorch_model.bin'
CONFIG_FILE = 'config.json'
CARD_FILE = 'README.md'
SHA256_KEY = 'weights_sha256'  # config.json: {filename: sha256 hex digest}
ALLOW_PICKLE_ENV = 'TIMM_CAMC_ALLOW_PICKLE'
ALLOW_UNVERIFIED_ENV = 'TIMM_CAMC_ALLOW_UNVERIFIED'
_PICKLE_SUFFIXES = ('.bin', '.pth', '.pth.tar', '.pt', '.ckpt')  # what timm's local-dir loader would torch.load
_SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the repository root when running from a checkout


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights cannot be loaded (not published, not downloadable, unsafe or corrupt)."""


class WeightsNotPublishedError(PretrainedWeightsError):
    """The weights of a tag are planned (a recipe exists) but not on the Hub."""


class UnsafeWeightsError(PretrainedWeightsError):
    """Only pickle weights are offered and pickle was not allowed."""


class WeightsIntegrityError(PretrainedWeightsError):
    """Weights do not match their recorded sha256, or nothing records it where a record is required."""


# -------------------------------------------------------------------------------------------------------- digests

def sha256_file(path: str) -> str:
    """Hex sha256 digest of a file."""
    with open(path, 'rb') as f:
        if hasattr(hashlib, 'file_digest'):
            return hashlib.file_digest(f, 'sha256').hexdigest()
        # Python 3.10 (setup.cfg allows it) has no hashlib.file_digest
        digest = hashlib.sha256()
        while block := f.read(1 << 20):
            digest.update(block)
        return digest.hexdigest()


def card_sha256_line(filename: str, sha256: str, size: int) -> str:
    """The model card's record of a file: the one format ``read_card_sha256`` reads back."""
    return f'- `{filename}`: sha256 `{sha256}`, {size} bytes'


def read_card_sha256(card: str, filename: str = WEIGHTS_FILE) -> Optional[str]:
    """The sha256 a model card (``card_sha256_line``) records for ``filename``, or None."""
    match = re.search(rf'`{re.escape(filename)}`: sha256 `([0-9a-f]{{64}})`', card)
    return match.group(1) if match else None


def _config_digests(path: Optional[str]) -> Dict[str, str]:
    if not path or not os.path.isfile(path):
        return {}
    with open(path, encoding='utf-8') as f:
        recorded = json.load(f).get(SHA256_KEY)
    return {k: v for k, v in recorded.items() if v} if isinstance(recorded, dict) else {}


def _recorded(config: Optional[str], card: Optional[str], filename: str) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(source -> recorded sha256 of ``filename``, every file -> sha256 recorded by either source)."""
    in_config = _config_digests(config)
    in_card = {}
    if card and os.path.isfile(card):
        text = Path(card).read_text(encoding='utf-8')
        names = {filename, WEIGHTS_FILE, *in_config}
        in_card = {name: digest for name in names if (digest := read_card_sha256(text, name))}
    of_file = {source: digests[filename] for source, digests in ((CONFIG_FILE, in_config), (CARD_FILE, in_card))
               if filename in digests}
    return of_file, {**in_card, **in_config}


def _check_sha256(path: str, recorded: Mapping[str, str], what: str, advice: str) -> str:
    actual = sha256_file(path)
    wrong = [f'{source} records {digest}' for source, digest in recorded.items() if digest != actual]
    if wrong:
        raise WeightsIntegrityError(
            f'{what}: sha256 of {os.path.basename(path)} is {actual}, but ' + '; '.join(wrong) + f'. {advice}')
    return actual


_LOCAL_ADVICE = 'The file was changed or replaced after its digest was recorded: refusing to load it.'
_HUB_ADVICE = ('Refusing to load it: if the cached copy is damaged, delete it (`hf cache delete`) and download it '
               'again; if the repository serves these bytes, its weights do not match its record.')


def _env_flag(name: str) -> bool:
    return os.environ.get(name, '').strip().lower() in ('1', 'true', 'yes', 'on')


def _require_pickle_opt_in(name: str, where: str, filename: str, cause: Optional[Exception] = None) -> None:
    if not _env_flag(ALLOW_PICKLE_ENV):
        raise UnsafeWeightsError(
            f'{name}: refusing to load pickle weights ({filename} from {where}, no {WEIGHTS_FILE} to use instead or '
            f'{filename} was asked for); set {ALLOW_PICKLE_ENV}=1 to allow them (read with '
            f'torch.load(weights_only=True)) if you trust {where}.') from cause
    _logger.warning(f'{name}: loading pickle weights ({filename}) from {where}, as {ALLOW_PICKLE_ENV} allows')


# ---------------------------------------------------------------------------------------------------- local-dir

def _local_weights(folder: Path) -> Path:
    """The weights file of a folder: ``model.safetensors``, else (with the pickle opt-in) its one pickle file."""
    if not folder.is_dir():
        raise PretrainedWeightsError(f'local-dir:{folder} is not a folder')
    weights = folder / WEIGHTS_FILE
    if weights.is_file():
        return weights
    pickles = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_PICKLE_SUFFIXES))
    if not pickles:
        others = sorted(p.name for p in folder.glob('*.safetensors'))
        found = f' (it has {", ".join(others)}: name the weights {WEIGHTS_FILE})' if others else ''
        raise PretrainedWeightsError(f'local-dir:{folder} has no {WEIGHTS_FILE}{found}')
    chosen = folder / PICKLE_FILE if (folder / PICKLE_FILE).is_file() else pickles[0]
    if len(pickles) > 1 and chosen.name != PICKLE_FILE:
        raise PretrainedWeightsError(
            f'local-dir:{folder} has no {WEIGHTS_FILE} and several pickle files ({", ".join(p.name for p in pickles)})')
    _require_pickle_opt_in(f'local-dir:{folder}', str(folder), chosen.name)
    return chosen


def _prepare_local_dir(folder: Path) -> str:
    """Check a folder's weights against the digest it records (required); returns the checked file."""
    weights = _local_weights(folder)
    of_file, every = _recorded(str(folder / CONFIG_FILE), str(folder / CARD_FILE), weights.name)
    if of_file:
        _check_sha256(str(weights), of_file, f'local-dir:{folder}', _LOCAL_ADVICE)
    elif every:
        raise WeightsIntegrityError(
            f'local-dir:{folder}: the recorded sha256 is for {", ".join(sorted(every))}, not for {weights.name}, the '
            f'file that would be loaded: refusing it (it is not the exported weights file).')
    elif _env_flag(ALLOW_UNVERIFIED_ENV):
        _logger.warning(f'local-dir:{folder}: nothing records the sha256 of {weights.name}; loading it unchecked, as '
                        f'{ALLOW_UNVERIFIED_ENV} allows')
    else:
        raise WeightsIntegrityError(
            f'local-dir:{folder}: neither {CONFIG_FILE} nor {CARD_FILE} records the sha256 of {weights.name}, so a '
            f'changed file cannot be detected: export the folder with hub/publish.py, or set {ALLOW_UNVERIFIED_ENV}=1 '
            f'to load it unchecked.')
    return str(weights)


# ---------------------------------------------------------------------------------------------------------- Hub

def _split_revision(hub_id: str) -> Tuple[str, Optional[str]]:
    """``'org/name@revision'`` -> ``('org/name', 'revision')``, revision None when not given."""
    repo_id, _, revision = hub_id.partition('@')
    return repo_id, revision or None


def _snapshot_commit(path: str) -> Optional[str]:
    """The commit of a file in the Hugging Face cache (``.../snapshots/<commit>/<filename>``), None elsewhere."""
    parent = Path(path).parent
    return parent.name if parent.parent.name == 'snapshots' and re.fullmatch(r'[0-9a-f]{40}', parent.name) else None


def _download(repo_id: str, filename: str, revision: Optional[str], cache_dir: Optional[str]) -> str:
    return hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                           library_name='timm_camc', library_version=__version__)


def _try_download(repo_id: str, filename: str, revision: Optional[str], cache_dir: Optional[str]) -> Optional[str]:
    try:
        return _download(repo_id, filename, revision, cache_dir)
    except (EntryNotFoundError, OSError):
        # not in the repository, or not reachable: nothing recorded to check against
        return None


def _registry_record(cfg: Mapping[str, Any], repo_id: str) -> Optional[PretrainedWeights]:
    record = WEIGHTS.get(f'{cfg.get("architecture")}.{cfg.get("tag")}')
    if record is not None and record.hub_id == repo_id:
        return record
    return next(find_weights(hub_id=repo_id), None)


def _staged_weights(record: PretrainedWeights) -> str:
    """The checked weights file of a staged tag, from its folder in the repository this package runs from."""
    folder = _SOURCE_ROOT / record.staged_dir
    if not (folder / WEIGHTS_FILE).is_file():
        raise WeightsNotPublishedError(
            f'Pretrained weights {record.name} are staged in the timm-camc repository ({record.staged_dir}/) but not '
            f'yet uploaded to the Hugging Face Hub ({record.hub_id}), and this installation is not a checkout of the '
            f'repository: in a clone, use timm.create_model("local-dir:<clone>/{record.staged_dir}", pretrained=True).')
    path = _prepare_local_dir(folder)
    _check_sha256(path, {'timm_camc.weights': record.sha256}, record.name, _LOCAL_ADVICE)
    _logger.info(f'{record.name}: loading the staged weights from {folder} (not yet on the Hub)')
    return path


def _not_published(record: PretrainedWeights) -> str:
    """One line: the weights of a registry record are not published yet, and the command that trains them."""
    return (f'Pretrained weights {record.name} are not published yet (timm_camc.weights: {record.status!r}): train '
            f'them with `{record.train_command()}`, or create the model with pretrained=False.')


def _download_weights(
        name: str,
        repo_id: str,
        revision: Optional[str],
        filename: str,
        record: Optional[PretrainedWeights],
        cache_dir: Optional[str],
) -> Tuple[str, str]:
    """Download (or find cached) the weights; ``(path, filename)``, the pickle file only when it is allowed."""
    ours = record is not None or repo_id.split('/')[0] == HUB_ORG
    try:
        return _download(repo_id, filename, revision, cache_dir), filename
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise PretrainedWeightsError(
            f'Pretrained weights {name} ({repo_id}/{filename}) are not in the local Hugging Face cache and the Hub '
            f'cannot be reached (HF_HUB_OFFLINE is set, or no connection): load them once online, or point HF_HOME / '
            f'cache_dir at a cache that has them.') from e
    except EntryNotFoundError as e:
        if filename == WEIGHTS_FILE and file_exists(repo_id, PICKLE_FILE, revision=revision):
            _require_pickle_opt_in(name, repo_id, PICKLE_FILE, cause=e)
            return _download(repo_id, PICKLE_FILE, revision, cache_dir), PICKLE_FILE
        if ours:
            raise WeightsNotPublishedError(
                f'Pretrained weights {name} are not published yet: {repo_id} has no {filename} on the Hugging Face '
                f'Hub.') from e
        raise
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        if ours:
            missing = f'no revision {revision} of {repo_id}' if isinstance(e, RevisionNotFoundError) else \
                f'no repository {repo_id}'
            raise WeightsNotPublishedError(f'Pretrained weights {name} are not published yet: {missing} on the Hugging '
                                           f'Face Hub.') from e
        raise


def _prepare_hub(cfg: Mapping[str, Any], variant: str, cache_dir: Optional[str]) -> str:
    """Download and check Hub weights (see ``prepare_pretrained``); returns the checked file."""
    repo_id, revision = _split_revision(cfg['hf_hub_id'])
    name = f'{cfg.get("architecture") or variant}.{cfg["tag"]}' if cfg.get('tag') else repo_id
    record = _registry_record(cfg, repo_id)
    if record is not None and not record.published and cfg.get('source') != 'hf-hub':
        # a tag of ours that is not on the Hub: nothing to download (an explicit 'hf-hub:' id is still tried)
        if record.status == 'staged':
            return _staged_weights(record)
        raise WeightsNotPublishedError(_not_published(record))
    filename = cfg.get('hf_hub_filename') or WEIGHTS_FILE
    if not filename.endswith('.safetensors'):
        _require_pickle_opt_in(name, repo_id, filename)
    at = revision
    if cfg.get('source') == 'hf-hub':
        # timm has just built the model from the repository's config.json: take the weights from that same commit
        built_from = try_to_load_from_cache(repo_id, CONFIG_FILE, cache_dir=cache_dir, revision=revision)
        at = (_snapshot_commit(built_from) if isinstance(built_from, str) else None) or revision
    path, filename = _download_weights(name, repo_id, at, filename, record, cache_dir)

    # the record is read at the commit the weights came from, not at the branch (which may have moved since)
    config = _try_download(repo_id, CONFIG_FILE, _snapshot_commit(path) or at, cache_dir)
    recorded = {f'{repo_id}/{CONFIG_FILE}': digest for digest in [_config_digests(config).get(filename)] if digest}
    if record is not None and record.published and revision is None and filename == WEIGHTS_FILE:
        recorded['timm_camc.weights'] = record.sha256
    if recorded:
        _check_sha256(path, recorded, name, _HUB_ADVICE)
    else:
        _logger.warning(f'{name}: {repo_id} records no sha256 of {filename}; loading it unchecked')
    return path


# ------------------------------------------------------------------------------------------------------ entry points

def prepare_pretrained(variant: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Pre-flight for ``pretrained=True`` loads of the CAMC models, called by their factory before timm loads.

    Hub weights (tags and ``hf-hub:`` ids) and ``local-dir:`` folders are found, checked against their recorded sha256
    (the rules are in the module docstring) and handed to timm as a ``file`` source, so timm loads the checked file
    and downloads nothing again. Other sources (``file``, ``url``, ``state_dict``) are left to timm.

    Args:
        variant: The model name (arch).
        kwargs: The factory's kwargs (``pretrained_cfg``, ``pretrained_cfg_overlay``, ``cache_dir``, ...).

    Returns:
        ``kwargs``, with ``pretrained_cfg_overlay`` pointing timm's loader at the checked file.

    Raises:
        WeightsNotPublishedError: A planned tag (or a ``timm-camc/`` repository) with no weights on the Hub yet.
        UnsafeWeightsError: Only pickle weights are offered.
        WeightsIntegrityError: The weights do not match their recorded sha256, or a folder records none.
        PretrainedWeightsError: The weights are neither cached nor downloadable (offline, unreachable Hub).
    """
    cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay')).to_dict()
    load_from, location = _resolve_pretrained_source(cfg)
    if load_from == 'local-dir':
        path = _prepare_local_dir(Path(location))
    elif load_from == 'hf-hub':
        path = _prepare_hub(cfg, variant, kwargs.get('cache_dir'))
    else:
        return kwargs
    kwargs['pretrained_cfg_overlay'] = dict(kwargs.get('pretrained_cfg_overlay') or {}, source='file', file=path)
    return kwargs


def verify_weights(source: str, revision: Optional[str] = None, cache_dir: Optional[str] = None) -> str:
    """Check ``model.safetensors`` against the sha256 its ``config.json`` and model card record.

    Args:
        source: A Hub repository (``'org/name'``, ``'hf-hub:org/name[@revision]'``) or a local folder
            (a path or ``'local-dir:<path>'``).
        revision: Hub revision (branch, tag or commit).
        cache_dir: Hugging Face cache folder.

    Returns:
        The verified sha256.

    Raises:
        WeightsIntegrityError: A recorded hash differs from the file's, or neither file records one.
    """
    if source.startswith('local-dir:') or os.path.isdir(source):
        folder = Path(source.removeprefix('local-dir:'))
        weights, config, card = (str(folder / f) for f in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE))
        if not os.path.isfile(weights):
            raise FileNotFoundError(f'No {WEIGHTS_FILE} in {folder}')
        advice = _LOCAL_ADVICE
    else:
        repo_id, at = _split_revision(source.removeprefix('hf-hub:'))
        weights = _download(repo_id, WEIGHTS_FILE, revision or at, cache_dir)
        commit = _snapshot_commit(weights) or revision or at
        config = _try_download(repo_id, CONFIG_FILE, commit, cache_dir)
        card = _try_download(repo_id, CARD_FILE, commit, cache_dir)
        advice = _HUB_ADVICE
    recorded, _ = _recorded(config, card, WEIGHTS_FILE)
    if not recorded:
        raise WeightsIntegrityError(f'{source}: neither {CONFIG_FILE} nor {CARD_FILE} records a sha256 of the weights')
    return _check_sha256(weights, recorded, source, advice)
