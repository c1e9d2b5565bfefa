"""The reference in docs/ covers every option, setting and check id, from the code.

docs/_ext/tiercache_reference.py generates the reference pages from the dicts
these tests read; a new option, setting or check id without its line of help
fails here (`make docs` builds the site itself, with warnings as errors).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from django_tiercache import conf
from django_tiercache.checks import CHECK_IDS
from django_tiercache.storage import options
from django_tiercache.write_behind import settings as write_behind_settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

import tiercache_reference  # noqa: E402


@pytest.mark.parametrize(
    ("defaults", "help_texts"),
    [
        ({**options.DEFAULTS, **dict.fromkeys(options.CONNECTION_OPTIONS)}, options.OPTION_HELP),
        (options.L1_DEFAULTS, options.L1_HELP),
        (options.SINGLE_FLIGHT_DEFAULTS, options.SINGLE_FLIGHT_HELP),
        (options.HOT_KEYS_DEFAULTS, options.HOT_KEYS_HELP),
        (conf.DEFAULTS, conf.SETTING_HELP),
        (write_behind_settings.DEFAULTS, write_behind_settings.SETTING_HELP),
    ],
    ids=["options", "l1", "single-flight", "hot-keys", "tiercache", "write-behind"],
)
def test_every_option_and_setting__has_one_line_of_help(defaults, help_texts):
    assert set(help_texts) == set(defaults)
    assert all(text.strip() and "\n" not in text for text in help_texts.values())


def test_every_check_id_in_the_code__is_in_the_reference():
    found = set()
    for path in (ROOT / "django_tiercache").rglob("*.py"):
        text = path.read_text()
        found |= set(re.findall(r"tiercache\.([EW]\d{3})", text))
        found |= set(re.findall(r"Problem\(\s*\"([EW]\d{3})\"", text))
    assert found, "no check id found: the pattern no longer matches the code"
    assert found == set(CHECK_IDS)


def test_the_generated_pages__name_every_entry():
    pages = (
        tiercache_reference.options_page()
        + tiercache_reference.settings_page()
        + tiercache_reference.checks_page()
    )
    names = [
        *options.DEFAULTS,
        *options.CONNECTION_OPTIONS,
        *options.L1_DEFAULTS,
        *conf.DEFAULTS,
        *write_behind_settings.DEFAULTS,
    ]
    assert all(f"| `{name}` |" in pages for name in names)
    assert all(f"`tiercache.{check_id}`" in pages for check_id in CHECK_IDS)
