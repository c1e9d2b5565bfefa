"""django-redis' own backend tests, run against TierCache.

The tests come from django-redis' source distribution (a pinned version,
downloaded once with pip into a cache directory, never copied into this
repository) and run in a pytest subprocess of their own, with a conftest and
settings written here that make TierCache the cache they test. The result is
each test's outcome by name, so a test module can compare it with the short
list of tests that cannot pass (see README, "Coming from django-redis").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

VERSION = "7.0.0"
SUITE = "tests/test_backend.py"
CACHE_DIR = Path(
    os.environ.get("TIERCACHE_SUITE_CACHE", Path.home() / ".cache" / "django_tiercache")
)

CONFTEST = '''\
"""Written by django_tiercache's tests/django_redis_suite.py."""
import sys
from os import environ
from pathlib import Path

import pytest

from tests.settings_wrapper import SettingsWrapper


def pytest_configure(config):
    sys.path.insert(0, str(Path(__file__).absolute().parent))


@pytest.fixture()
def settings():
    wrapper = SettingsWrapper()
    yield wrapper
    wrapper.finalize()


@pytest.fixture()
def cache(cache_settings):
    from django import setup

    environ["DJANGO_SETTINGS_MODULE"] = f"settings.{cache_settings}"
    setup()
    from django.core.cache import cache as default_cache

    yield default_cache
    default_cache.clear()


def pytest_generate_tests(metafunc):
    if "cache" in metafunc.fixturenames or "session" in metafunc.fixturenames:
        metafunc.parametrize("cache_settings", ["tiercache"])
'''

SETTINGS = '''\
"""Written by django_tiercache's tests/django_redis_suite.py."""
import os

SECRET_KEY = "django_tiercache: django-redis suite"
LOCATION = os.environ["TIERCACHE_SUITE_LOCATION"].split(",")
BACKEND = "django_tiercache.backend.TierCache"
CACHES = {
    "default": {"BACKEND": BACKEND, "LOCATION": LOCATION},
    "doesnotexist": {"BACKEND": BACKEND, "LOCATION": os.environ["TIERCACHE_SUITE_CLOSED"]},
    "sample": {"BACKEND": BACKEND, "LOCATION": LOCATION},
    "with_prefix": {"BACKEND": BACKEND, "LOCATION": LOCATION, "KEY_PREFIX": "test-prefix"},
}
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]
USE_TZ = False
'''


def suite_root() -> Path:
    """A directory holding django-redis' tests/ (downloaded at the first call)."""
    root = CACHE_DIR / f"django-redis-{VERSION}"
    if (root / SUITE).exists():
        return root
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             ":all:", f"django-redis=={VERSION}", "-d", download],
            check=True, timeout=300,
        )  # fmt: skip
        (archive,) = Path(download).glob("*.tar.gz")
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=CACHE_DIR))
        with tarfile.open(archive) as sdist:
            members = [m for m in sdist.getmembers() if "/tests/" in m.name]
            sdist.extractall(staging, members=members, filter="data")
        (top,) = staging.iterdir()
        try:
            top.rename(root)
        except OSError:  # another test process got there first
            if not (root / SUITE).exists():
                raise
        shutil.rmtree(staging, ignore_errors=True)
    return root


def run_suite(locations: list[str], closed_url: str, workdir: Path) -> dict[str, str]:
    """Run django-redis' backend tests on TierCache over `locations`: {test name: outcome}.

    Outcomes are "passed", "failed", "error" or "skipped".
    """
    source = suite_root()
    tests = workdir / "tests"
    shutil.copytree(source / "tests", tests)
    (tests / "conftest.py").write_text(CONFTEST)
    (tests / "settings" / "tiercache.py").write_text(SETTINGS)
    (workdir / "pytest.ini").write_text("[pytest]\n")
    report = workdir / "report.xml"
    env = {
        **os.environ,
        "TIERCACHE_SUITE_LOCATION": ",".join(locations),
        "TIERCACHE_SUITE_CLOSED": closed_url,
        "PYTHONPATH": os.pathsep.join([str(workdir), str(Path(__file__).parent.parent)]),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:django",
         "-p", "no:xdist", "-p", "no:cov", f"--junitxml={report}", SUITE],
        cwd=workdir, env=env, timeout=600, capture_output=True,
    )  # fmt: skip
    return outcomes(report)


def outcomes(report: Path) -> dict[str, str]:
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 - our own report
        name = case.get("name", "").split("[")[0]
        kinds = {child.tag for child in case}
        if "failure" in kinds:
            results[name] = "failed"
        elif "error" in kinds:
            results[name] = "error"
        elif "skipped" in kinds:
            results[name] = "skipped"
        else:
            results[name] = "passed"
    return results
