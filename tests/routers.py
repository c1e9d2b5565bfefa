"""A database router for the two-databases correctness cases: Product lives on "other"."""


class ProductsOnOther:
    def db_for_read(self, model, **hints):
        return "other" if model._meta.label_lower == "testapp.product" else None

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return True  # every table on both databases: the cases write a model on either


class LaggingReplicaOnOther:
    """Product written on "default" (the primary) and read from "other", a replica the
    writes have not reached yet; the cache's own reads go to the primary."""

    def db_for_read(self, model, **hints):
        if model._meta.label_lower != "testapp.product":
            return None
        return "default" if hints.get("tiercache_load") else "other"

    def db_for_write(self, model, **hints):
        return None

    def allow_relation(self, obj1, obj2, **hints):
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return True
