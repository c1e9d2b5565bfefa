"""Passwords out of anything the statistics show or log.

Partition names default to their URL (redacted when the cache is built), but
names given by hand, the hot-key record's LOCATION and the text of errors can
carry a URL too; every string a statistics view shows goes through here.
"""

from __future__ import annotations

import re

from ..storage.options import redact

URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>,()]+", re.IGNORECASE)


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return URL.sub(lambda found: redact(found.group(0)), text)
