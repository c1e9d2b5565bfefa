"""Settings for processes the write-behind tests start (a reader, a Celery worker).

They share the test's database (WB_DB_NAME) and journal (WB_KEY_PREFIX).
"""

import os

from tests.redis_servers import JOURNAL_REDIS_URL
from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, TIERCACHE

DATABASES["default"]["NAME"] = os.environ["WB_DB_NAME"]
DATABASES["default"]["TEST"] = {"NAME": os.environ["WB_DB_NAME"]}
TIERCACHE = {
    **TIERCACHE,
    "WRITE_BEHIND": {
        "KEY_PREFIX": os.environ["WB_KEY_PREFIX"],
        "REDIS_URL": JOURNAL_REDIS_URL,
        "TRIGGER": False,
        "BATCH_SIZE": int(os.environ.get("WB_BATCH_SIZE", "500")),
        "CLAIM_TIMEOUT": float(os.environ.get("WB_CLAIM_TIMEOUT", "60")),
    },
}
for _name, _kind in (("MAX_RETRIES", int), ("RETRY_BACKOFF", float)):
    if f"WB_{_name}" in os.environ:  # else the project's default
        TIERCACHE["WRITE_BEHIND"][_name] = _kind(os.environ[f"WB_{_name}"])
