"""Reference pages generated from the code, so that docs and code cannot drift.

At build start this writes docs/_generated/*.md: every OPTIONS key (with the
nested L1, SINGLE_FLIGHT and HOT_KEYS keys), every TIERCACHE setting and
WRITE_BEHIND key, with its default, type and the one line of help the code
keeps beside it, and every system check id. The reference pages include them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
GENERATED = HERE / "_generated"


def _default(value: Any) -> str:
    text = repr(value)
    return f"`{text}`" if len(text) < 60 else f"`{text[:57]}...`"


def _type(value: Any) -> str:
    return "—" if value is None else type(value).__name__


def table(defaults: dict[str, Any], help_texts: dict[str, str], title: str = "name") -> str:
    rows = [f"| {title} | default | type | what it does |", "| --- | --- | --- | --- |"]
    for name in defaults:
        value = defaults[name]
        rows.append(f"| `{name}` | {_default(value)} | {_type(value)} | {help_texts[name]} |")
    return "\n".join(rows) + "\n"


def options_page() -> str:
    from django_tiercache.storage import options

    connection = dict.fromkeys(options.CONNECTION_OPTIONS)
    parts = [
        "## `OPTIONS` keys\n",
        table({**options.DEFAULTS, **connection}, options.OPTION_HELP, "option"),
        '\n## `OPTIONS["L1"]` as a dict\n',
        table(options.L1_DEFAULTS, options.L1_HELP, "key"),
        '\n## `OPTIONS["SINGLE_FLIGHT"]` as a dict\n',
        table(options.SINGLE_FLIGHT_DEFAULTS, options.SINGLE_FLIGHT_HELP, "key"),
        '\n## `OPTIONS["HOT_KEYS"]` as a dict\n',
        table(options.HOT_KEYS_DEFAULTS, options.HOT_KEYS_HELP, "key"),
    ]
    return "\n".join(parts)


def settings_page() -> str:
    from django_tiercache import conf
    from django_tiercache.write_behind import settings as write_behind

    return "\n".join(
        [
            "## `TIERCACHE` keys\n",
            table(conf.DEFAULTS, conf.SETTING_HELP, "setting"),
            '\n## `TIERCACHE["WRITE_BEHIND"]` keys\n',
            table(write_behind.DEFAULTS, write_behind.SETTING_HELP, "key"),
        ]
    )


def checks_page() -> str:
    from django_tiercache.checks import CHECK_IDS

    rows = ["| id | level | what it reports |", "| --- | --- | --- |"]
    for check_id, meaning in sorted(CHECK_IDS.items()):
        level = "error" if check_id.startswith("E") else "warning"
        rows.append(f"| `tiercache.{check_id}` | {level} | {meaning} |")
    return "\n".join(rows) + "\n"


def generate(app: Any = None) -> None:
    GENERATED.mkdir(exist_ok=True)
    (GENERATED / "options.md").write_text(options_page())
    (GENERATED / "settings.md").write_text(settings_page())
    (GENERATED / "checks.md").write_text(checks_page())


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", generate)
    return {"parallel_read_safe": True}
