"""Moved to `aiogovernor.testing.servers` (the ``testing`` extra); this name is kept for a while."""

from __future__ import annotations

import warnings

from aiogovernor.testing.servers import LocalUpstream as LocalUpstream
from aiogovernor.testing.servers import UpstreamConfig as UpstreamConfig
from aiogovernor.testing.servers import UpstreamState as UpstreamState
from aiogovernor.testing.servers import make_app as make_app

__all__ = ["LocalUpstream", "UpstreamConfig", "UpstreamState", "make_app"]

warnings.warn(
    "aiogovernor._testserver moved to aiogovernor.testing.servers (pip install 'aiogovernor[testing]')",
    DeprecationWarning,
    stacklevel=2,
)
