"""Settings for the correctness cases' worker process: the test's own database (CORR_DB_NAME)."""

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

DATABASES["default"]["NAME"] = os.environ["CORR_DB_NAME"]
DATABASES["default"]["TEST"] = {"NAME": os.environ["CORR_DB_NAME"]}
