"""Sphinx configuration: `make docs` builds docs/_build/html, warnings as errors."""

import os
import sys
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "docs" / "_ext")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

project = "django_tiercache"
author = "the django_tiercache authors"
copyright = "2026, the django_tiercache authors"  # noqa: A001 - Sphinx's name
release = "0.1.0"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.graphviz", "tiercache_reference"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_generated"]
html_theme = "furo"
html_title = "django_tiercache"
autodoc_member_order = "bysource"
graphviz_output_format = "svg"
