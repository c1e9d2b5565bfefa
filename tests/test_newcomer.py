"""A newcomer's first project: the Getting started walkthrough (docs/getting-started.md), run
against the built wheel.

The wheel is built from a copy of the package's files and installed in a fresh
virtualenv that borrows only its dependencies (Django, redis, django-redis)
from the environment running the tests, so no network is needed and
django_tiercache cannot be imported from the source tree. The project is made
of the walkthrough's marked snippets (``<!-- walkthrough: ... -->``), so the guide
and this test cannot drift apart.

It runs once, on the SQLite pass (the new project has its own SQLite database),
and only from a checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.redis_servers import SHARED_REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = re.compile(
    r"<!-- walkthrough: (?P<action>\w+) (?P<arg>\S+) -->\n```\w+\n(?P<body>.*?)```", re.S
)
PACKAGE_FILES = ("setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE")

pytestmark = [
    pytest.mark.skipif(
        bool(os.environ.get("DATABASE_URL")),
        reason="runs once, on the SQLite pass (the new project has its own SQLite database)",
    ),
    pytest.mark.skipif(
        not (ROOT / "django_tiercache").is_dir(),
        reason="builds the wheel, so needs the source tree (tox's wheel env runs a copy of tests/)",
    ),
]


def run(args, cwd, env=None, timeout=120):
    """Run a command; on failure the assertion shows its output."""
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel path, build output): the wheel built from a copy of the package's files."""
    source = tmp_path_factory.mktemp("source")
    for name in PACKAGE_FILES:
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "django_tiercache",
        source / "django_tiercache",
        ignore=shutil.ignore_patterns("__pycache__", "*.py[cod]"),
    )
    dist = tmp_path_factory.mktemp("dist")
    done = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--verbose", "-w", dist, source],
        cwd=source,
        timeout=300,
    )
    (wheel,) = dist.glob("django_tiercache-*.whl")
    return wheel, done.stdout + done.stderr


@pytest.fixture(scope="module")
def newcomer_venv(built, tmp_path_factory):
    """A fresh virtualenv with the wheel installed; dependencies come from this environment."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv)
    python = venv / "bin" / "python"
    purelib = run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=venv
    ).stdout.strip()
    # Paths listed in a .pth file are added to sys.path after the venv's own
    # site-packages, and .pth files inside them are not run: the editable install
    # of the source tree that this environment holds stays invisible.
    borrowed = [*site.getsitepackages(), sysconfig.get_path("purelib")]
    Path(purelib, "borrowed_dependencies.pth").write_text("\n".join(dict.fromkeys(borrowed)))
    return venv


def walkthrough() -> list[tuple[str, str, str]]:
    # Getting started, then the warming guide's warmer for the same shop.
    guides = ("getting-started.md", "topics/warming.md")
    readme = "\n".join((ROOT / "docs" / guide).read_text() for guide in guides)
    return [(m["action"], m["arg"], m["body"]) for m in SNIPPET.finditer(readme)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}


def wait_for_server(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, f"runserver exited: {server.communicate()}"
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - loopback
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise AssertionError("runserver did not answer within 60 s")


class Walkthrough:
    """Runs the walkthrough's snippets in a temporary directory, as a newcomer would."""

    def __init__(self, home: Path, venv: Path, wheel: Path):
        self.cwd, self.venv, self.wheel = home, venv, wheel
        self.port = free_port()
        self.server: subprocess.Popen | None = None
        self.installed = False
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "DATABASE_URL", "PYTHONHOME")
        }
        # The venv first; django-admin (a script of the borrowed Django) after it.
        self.env["PATH"] = os.pathsep.join(
            [str(venv / "bin"), str(Path(sys.executable).parent), self.env.get("PATH", "")]
        )
        self.env["VIRTUAL_ENV"] = str(venv)

    def do(self, action: str, arg: str, body: str) -> None:
        if action == "shell":
            for line in body.splitlines():
                self.shell(line)
        elif action == "write":
            (self.cwd / arg).write_text(body)
        elif action == "append":
            with (self.cwd / arg).open("a") as settings:
                settings.write("\n" + body)
                if arg.endswith("settings.py"):
                    # The test's Redis database and a key prefix of its own.
                    settings.write(
                        f'\nCACHES["default"]["LOCATION"] = {SHARED_REDIS_URL!r}\n'
                        f'CACHES["default"]["KEY_PREFIX"] = "newcomer-{uuid.uuid4().hex[:8]}"\n'
                    )
        else:
            raise AssertionError(
                f"unknown walkthrough action {action!r} in docs/getting-started.md"
            )

    def shell(self, line: str) -> None:
        if line.startswith("pip install django-tiercache"):
            python = self.venv / "bin" / "python"
            # pip comes from the borrowed environment; --ignore-installed leaves the
            # source tree's editable install there alone.
            run(
                [python, "-m", "pip", "install", "--no-deps", "--no-index"]
                + ["--ignore-installed", "--quiet", self.wheel],
                cwd=self.cwd,
                env=self.env,
            )
            self.installed = True
        elif line.startswith("cd "):
            self.cwd = self.cwd / line[3:].strip()
        elif line.strip() == "python manage.py runserver":
            self.server = subprocess.Popen(
                ["python", "manage.py", "runserver", "--noreload", f"127.0.0.1:{self.port}"],
                cwd=self.cwd,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            wait_for_server(self.url("/products/1/"), self.server)
        else:
            run(["bash", "-ec", line], cwd=self.cwd, env=self.env)

    def manage(self, *args: str) -> str:
        return run(["python", "manage.py", *args], cwd=self.cwd, env=self.env).stdout

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.communicate(timeout=30)


def test_wheel__builds_without_setuptools_warnings_and_ships_its_data(built):
    wheel, output = built
    assert "would be ignored" not in output
    names = zipfile.ZipFile(wheel).namelist()
    assert "django_tiercache/py.typed" in names
    assert "django_tiercache/templates/django_tiercache/stats.html" in names
    assert "django_tiercache/redis_compat.py" in names
    assert not [n for n in names if n.startswith(("tests/", "example_project/", "benchmarks/"))]


def test_wheel__metadata_promises_only_what_exists_and_names_the_repository(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    summary = next(line for line in text.splitlines() if line.startswith("Summary:"))
    assert "in-process" not in summary
    assert "Project-URL: Source, https://github.com/" in text
    # The README travels as the long description: its paths point at the repository.
    assert "are in the\n[source repository](https://github.com/" in text
    assert "](docs/" not in text


def test_readme_walkthrough__from_pip_install_to_a_cached_hit_and_its_invalidation(
    built, newcomer_venv, tmp_path
):
    steps = walkthrough()
    assert [a for a, _, _ in steps].count("shell") >= 4, (
        "the walkthrough markers in docs/getting-started.md moved"
    )
    walk = Walkthrough(tmp_path, newcomer_venv, built[0])
    try:
        for action, arg, body in steps:
            walk.do(action, arg, body)
            if arg == "migrate":
                where = run(
                    ["python", "-c", "import django_tiercache; print(django_tiercache.__file__)"],
                    cwd=walk.cwd,
                    env=walk.env,
                ).stdout.strip()
                assert Path(where).is_relative_to(newcomer_venv), where
                assert "shop.Product" in walk.manage("warm_cache", "--list")  # registered
            if arg == "serve":
                assert fetch(walk.url("/products/1/")) == (200, {"name": "Teapot"})  # a miss
                # Changed behind Django's back: only a cache hit still answers "Teapot".
                with sqlite3.connect(walk.cwd / "db.sqlite3") as db:
                    db.execute("UPDATE shop_product SET name = 'Sneaky' WHERE id = 1")
                assert fetch(walk.url("/products/1/")) == (200, {"name": "Teapot"})  # a hit
                assert fetch(walk.url("/products/999/"))[0] == 404
        assert walk.installed and walk.server is not None
        # Step 8 saved the product through Django: its tag is invalidated.
        assert fetch(walk.url("/products/1/")) == (200, {"name": "Kettle"})
        # The warmers of "Cache warming" ran above, as written; their counts:
        # the card is written again; the product, cached by the last request and
        # current, is skipped.
        out = walk.manage("warm_cache", "product-cards", "products")
        rows = {line.split()[0]: line.split()[2:6] for line in out.splitlines()[1:-1]}
        assert rows == {"product-cards": ["1", "1", "0", "0"], "products": ["1", "0", "1", "0"]}
        assert out.endswith("1 entry written.\n"), out
        out = walk.manage("warm_cache", "--all", "--dry-run")
        assert "Dry run: 1 entry would be warmed; nothing was written." in out, out
    finally:
        walk.stop()
