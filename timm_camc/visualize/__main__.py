""" python -m timm_camc.visualize

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import logging
import sys

from timm.utils import setup_default_logging

from .cli import main

_logger = logging.getLogger('timm_camc.visualize')

setup_default_logging()
try:
    sys.exit(main())
except (FileNotFoundError, ValueError, ImportError) as e:  # bad input or missing extra: the message says what
    _logger.error(f'{type(e).__name__}: {e}')
    sys.exit(2)
