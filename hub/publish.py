#!/usr/bin/env python3
""" Publish trained CAMC weights to the Hugging Face Hub, with a model card

    python hub/publish.py --checkpoint output/train/<run>/last.pth.tar --metrics output/train/<run>/results.json \\
        --ema --repo-id <you>/resnet32_camc_lt.my_run --tag my_run             # your own weights
    python hub/publish.py --checkpoint ... --metrics ... --raw --out hub_folder/   # write the folder only
    python hub/publish.py --checkpoint ... --metrics ... --ema --official --repo-id timm-camc/<arch>.<tag>
    python hub/publish.py --folder hub/staged/<arch>.<tag> --official --repo-id timm-camc/<arch>.<tag>  # upload

The folder holds ``model.safetensors`` (the EMA or the raw weights, chosen explicitly), timm's ``config.json`` (with
the CAMC head in ``model_args`` so ``timm.create_model('hf-hub:<repo>', pretrained=True)`` rebuilds it, and the
weights' sha256) and a ``README.md`` model card made from the one metrics record given (a validate.py results
JSON measured on the same weights).

Labels come from the checkpoint's own training options: a run is published under a user tag (``custom`` unless
``--tag``) and the dataset its options record. A timm-camc registry tag (``--official``, or ``--tag`` naming one) and
the ``timm-camc`` organisation are only used when asked for, and only for a run whose options are the registry
recipe's; a contradiction (imbalance ratio, class count, recipe option) is refused, naming each difference.

Pushing creates the repository (and ``--revision`` branch) if needed and uploads everything as one commit; weights
already in the repository are only replaced with ``--force``. The token comes from ``HF_TOKEN`` or ``hf auth login``
and is never printed or written. After publishing registry weights, the record to add to ``timm_camc/weights.py``
is printed.

``--folder`` uploads a folder written earlier with ``--out`` (e.g. the staged registry weights in ``hub/staged/``) as
it is, after checking its weights against the sha256 its config and card record (and, for the registry's
repositories, against ``timm_camc.weights``), with the same one-commit, no-silent-replace rules.

Exit status: 0 published (or written, or already identical), 1 the upload failed (nothing was published; running
again is safe), 2 invalid input or no token (nothing was done), 3 refused: the repository already has weights.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import argparse
import json
import logging
import os
import shutil
import sys
import tempfile

from huggingface_hub import get_token

from timm_camc.pretrained import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, PretrainedWeightsError, verify_weights
from timm_camc.publish import (
    WeightsExistError, build_trained_model, check_metrics, export_folder, load_trained_checkpoint, push_folder,
    read_metrics, resolve_label, validate_repo_id,
)
from timm_camc.weights import HUB_ORG, find_weights

_logger = logging.getLogger('publish')

EXIT_FAILED, EXIT_INVALID, EXIT_REFUSED = 1, 2, 3
_HUB_FOLDER_FILES = {WEIGHTS_FILE, CONFIG_FILE, CARD_FILE, '.gitattributes'}  # what --force may replace in --out
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the registry recipes: configs/*.yaml

parser = argparse.ArgumentParser(
    description='Publish trained CAMC weights to the Hugging Face Hub, with a model card',
    epilog='exit status: 0 published / written, 1 upload failed (nothing published, safe to rerun), 2 invalid input '
           'or no token, 3 refused (weights exist, no --force)')
group = parser.add_argument_group('Inputs')
group.add_argument('--checkpoint', metavar='PATH', help='train.py checkpoint (<run>/last.pth.tar); required')
group.add_argument('--metrics', metavar='PATH',
                   help='validate.py results JSON of the same weights (the model card is made from it); required')
group.add_argument('--folder', metavar='DIR',
                   help='instead of a checkpoint: upload this folder written by --out (e.g. hub/staged/<arch>.<tag>) '
                        'as it is, to --repo-id')
weights = group.add_mutually_exclusive_group()
weights.add_argument('--ema', action='store_true', help='publish the EMA weights (state_dict_ema)')
weights.add_argument('--raw', action='store_true', help='publish the raw weights (state_dict)')
group.add_argument('--notes', metavar='PATH', default=None,
                   help='markdown file for the model card\'s "Notes" section (how the weights were made, comparisons)')
group.add_argument('--model-name', metavar='ARCH', default=None,
                   help='architecture the checkpoint must be (default: the one it was trained as)')
group = parser.add_argument_group('Label (from the checkpoint\'s training options; contradictions are refused)')
group.add_argument('--tag', metavar='TAG', default=None,
                   help='pretrained tag (default: "custom"; a timm_camc.weights tag labels the weights as the '
                        'registry\'s, which the run must match)')
group.add_argument('--official', action='store_true',
                   help='these are timm-camc\'s registry weights: the tag (inferred if not given) and repository are '
                        'the registry\'s, and the run must be its recipe')
group.add_argument('--dataset', metavar='NAME', default=None,
                   help='dataset key of timm_camc.weights.DATASETS, or a name (default: what the run records)')
group = parser.add_argument_group('Destination')
group.add_argument('--out', metavar='DIR', default=None, help='write the Hub folder here, push nothing')
group.add_argument('--repo-id', metavar='ORG/NAME', default=None,
                   help='Hub model repository: pushed to, or with --out the one the card names')
group.add_argument('--revision', metavar='BRANCH', default=None,
                   help='branch to commit to, created if missing (default: the default branch)')
group.add_argument('--force', action='store_true',
                   help='replace weights already in the repository (or a non-empty --out folder)')
group.add_argument('--private', action='store_true', help='create the repository private')


def _write_folder(export_args: dict, out: str, force: bool):
    """Export into a new folder next to ``out``, then move it into place (no half-written folder on errors)."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.publish-', dir=parent)
    try:
        export = export_folder(folder=staging, **export_args)
        umask = os.umask(0)
        os.umask(umask)
        for path in [staging] + [os.path.join(staging, f) for f in os.listdir(staging)]:
            os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)  # mkdtemp's private modes
        if os.path.exists(out):
            if force:
                shutil.rmtree(out)
            else:
                os.rmdir(out)  # empty (checked before): a race that filled it fails here
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return export


def _get_token():
    """The Hub token, or None after logging why there is none."""
    try:
        token = get_token()
    except Exception as e:  # e.g. a failed OIDC token exchange
        _logger.error(f'Cannot get a Hugging Face token ({type(e).__name__}). Nothing was done.')
        return None
    if not token:
        _logger.error('No Hugging Face token: set HF_TOKEN or log in with `hf auth login` (a token with write '
                      'access to the repository). Nothing was done.')
    return token or None


def upload_folder(args) -> int:
    """``--folder``: check an exported folder and push it as it is."""
    folder = args.folder
    try:
        validate_repo_id(args.repo_id)
        if not os.path.isdir(folder):
            raise ValueError(f'{folder} is not a folder')
        extra = sorted(set(os.listdir(folder)) - _HUB_FOLDER_FILES)
        if extra:
            raise ValueError(f'{folder} holds files that are not part of a Hub folder: {", ".join(extra)}')
        sha256 = verify_weights(folder)  # the config's and the card's records
        with open(os.path.join(folder, CONFIG_FILE), encoding='utf-8') as f:
            config = json.load(f)
        name = f'{config.get("architecture")}.{(config.get("pretrained_cfg") or {}).get("tag")}'
        official = args.repo_id.split('/')[0] == HUB_ORG
        if official != args.official:
            raise ValueError(f'{HUB_ORG}/ holds the registry weights: --official goes with a {HUB_ORG}/ repository, '
                             f'and only with one')
        if official:
            record = next(find_weights(hub_id=args.repo_id), None)
            if record is None or not record.trained:
                raise ValueError(f'timm_camc.weights has no staged or published record for {args.repo_id}')
            if record.sha256 != sha256:
                raise ValueError(f'{folder} holds other weights (sha256 {sha256}) than the record of {record.name} '
                                 f'({record.sha256})')
    except (ValueError, OSError, PretrainedWeightsError) as e:
        _logger.error(f'{e}. Nothing was done.')
        return EXIT_INVALID
    token = _get_token()
    if token is None:
        return EXIT_INVALID
    try:
        url, status = push_folder(folder, args.repo_id, token=token, revision=args.revision, private=args.private,
                                  force=args.force, commit_message=f'Add {name} (sha256 {sha256[:12]})')
    except WeightsExistError as e:
        _logger.error(str(e))
        return EXIT_REFUSED
    except Exception as e:  # the Hub refused or failed a request, the connection broke
        _logger.error(f'Uploading to {args.repo_id} failed, nothing was published ({type(e).__name__}: {e}). '
                      f'The upload is a single commit: running the same command again is safe.')
        return EXIT_FAILED
    where = f'{args.repo_id}' + (f'@{args.revision}' if args.revision else '')
    if status == 'unchanged':
        print(f'{where} already holds these weights (sha256 {sha256}): nothing to do. {url}')
    else:
        print(f'Uploaded {folder} (sha256 {sha256}) to {where}: {url}')
    if args.official:
        print(f'Set status=\'published\' in the record of {name} in timm_camc/weights.py.')
    return 0


def main(argv=None) -> int:
    args = parser.parse_args(argv)
    if args.folder is not None:
        given = [f'--{k.replace("_", "-")}' for k in ('checkpoint', 'metrics', 'ema', 'raw', 'model_name', 'notes',
                                                     'tag', 'dataset', 'out') if getattr(args, k)]
        if given:
            parser.error(f'--folder uploads a written folder as it is: {", ".join(given)} cannot go with it')
        if args.repo_id is None:
            parser.error('--folder needs --repo-id')
        return upload_folder(args)
    missing = [f'--{k}' for k in ('checkpoint', 'metrics') if getattr(args, k) is None]
    if missing or not (args.ema or args.raw):
        parser.error(f'the following arguments are required: {", ".join(missing + ["--ema or --raw"])}')
    if args.out is None and args.repo_id is None:
        parser.error('give --repo-id (push) or --out (write the folder)')

    # checks that need no work: destination, credentials
    token = None
    if args.repo_id is not None:
        try:
            validate_repo_id(args.repo_id)
        except ValueError as e:
            _logger.error(str(e))
            return EXIT_INVALID
        if args.repo_id.split('/')[0] == HUB_ORG and not args.official:
            _logger.error(f'{HUB_ORG}/ holds the registry weights: add --official (the run is then checked against '
                          f'the registry recipe) or publish to your own repository. Nothing was done.')
            return EXIT_INVALID
    if args.out is None:
        token = _get_token()
        if token is None:
            return EXIT_INVALID
    elif os.path.isdir(args.out) and os.listdir(args.out):
        if not args.force:
            _logger.error(f'{args.out} is not empty: choose a new folder, or --force to replace a Hub folder')
            return EXIT_INVALID
        if not set(os.listdir(args.out)) <= _HUB_FOLDER_FILES:
            _logger.error(f'{args.out} holds other files than a Hub folder: not replacing it, even with --force')
            return EXIT_INVALID
    elif os.path.exists(args.out) and not os.path.isdir(args.out):
        _logger.error(f'{args.out} exists and is not a folder')
        return EXIT_INVALID

    # inputs: the checkpoint, the one metrics record measured on it, the tag
    try:
        checkpoint = load_trained_checkpoint(args.checkpoint, use_ema=args.ema, model_name=args.model_name)
        metrics = read_metrics(args.metrics)
        check_metrics(checkpoint, metrics)
        label = resolve_label(checkpoint, metrics, tag=args.tag, dataset=args.dataset, official=args.official,
                              repo_root=_REPO_ROOT)
        model = build_trained_model(checkpoint, label.tag)
        notes = None
        if args.notes is not None:
            with open(args.notes, encoding='utf-8') as f:
                notes = f.read()
    except (ValueError, OSError) as e:
        _logger.error(f'{e}. Nothing was done.')
        return EXIT_INVALID
    name = f'{checkpoint.arch}.{label.tag}'
    # a user's weights never point at the registry's repository; with --out and no --repo-id the card has a placeholder
    hub_id = args.repo_id or (label.record.hub_id if label.official else None)
    export_args = dict(model=model, checkpoint=checkpoint, metrics=metrics, label=label, hub_id=hub_id,
                       secrets=(token,) if token else (), notes=notes)
    kind = 'EMA' if checkpoint.use_ema else 'raw'

    try:
        if args.out is not None:
            export = _write_folder(dict(export_args, status='staged'), args.out, args.force)
            print(f'Wrote {name} ({kind} weights, sha256 {export.sha256}) to {args.out}')
        else:
            with tempfile.TemporaryDirectory(prefix='publish-') as folder:
                export = export_folder(folder=folder, **export_args)
                _logger.info(f'Pushing {name} ({kind} weights, sha256 {export.sha256}) to {args.repo_id}')
                url, status = push_folder(
                    folder, args.repo_id, token=token, revision=args.revision, private=args.private,
                    force=args.force, commit_message=f'Add {name} ({kind} weights, top-1 {metrics["top1"]:.2f})')
            where = f'{args.repo_id}' + (f'@{args.revision}' if args.revision else '')
            if status == 'unchanged':
                print(f'{where} already holds these weights (sha256 {export.sha256}): nothing to do. {url}')
            else:
                print(f'Published {name} ({kind} weights, sha256 {export.sha256}) to {where}: {url}')
    except WeightsExistError as e:
        _logger.error(str(e))
        return EXIT_REFUSED
    except Exception as e:  # the Hub refused or failed a request, the connection broke, a disk error
        if args.out is not None:
            _logger.error(f'Writing {args.out} failed, nothing was written ({type(e).__name__}: {e})')
        else:
            _logger.error(f'Publishing to {args.repo_id} failed, nothing was published ({type(e).__name__}: {e}). '
                          f'The upload is a single commit: running the same command again is safe.')
        return EXIT_FAILED

    if export.record is not None:
        staged = (f' (status "staged": export into {export.record.staged_dir} in the repository; set "published" '
                  f'once the folder is uploaded)') if args.out else ''
        print(f'\nTo list these weights in timm_camc (README table, pretrained=True by tag), put this record in '
              f'WEIGHTS of timm_camc/weights.py{staged}:\n')
        print(export.record.to_python())
    return 0


if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    for name in ('httpx', 'httpx2'):  # one line per HTTP request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    sys.exit(main())
