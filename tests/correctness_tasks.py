"""The task an on_commit hook sends in the correctness cases: read a row through the cache."""

READ_VERSION = "tiercache_tests.read_version"


def read_version(pk):
    """The row's version as get_object() (the cache) gives it to the worker."""
    from django_tiercache import get_object
    from tests.testapp.models import Product

    return get_object(Product, pk).version


def register(app):
    return app.task(name=READ_VERSION)(read_version)
