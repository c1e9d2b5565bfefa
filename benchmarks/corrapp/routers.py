"""Where bench_correctness.py's cases put Item: set ``MODE`` before a case runs.

- "default": everything on "default";
- "second": Item read and written on "other", a second database;
- "replica": Item written on "default" (the primary) and read from "other", a
  replica the benchmark copies rows to behind Django's back, after the reads it
  measures; a read carrying django_tiercache's load hint goes to the primary.
"""

MODE = "default"


class ItemRouter:
    def db_for_read(self, model, **hints):
        if model._meta.label_lower != "corrapp.item" or MODE == "default":
            return None
        if MODE == "replica" and hints.get("tiercache_load"):
            return "default"
        return "other"

    def db_for_write(self, model, **hints):
        if model._meta.label_lower == "corrapp.item" and MODE == "second":
            return "other"
        return None

    def allow_relation(self, obj1, obj2, **hints):
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return True
