"""write_through.save: the database, then get_object's entry; a cache failure never fails it."""

from __future__ import annotations

import pytest

from django_tiercache import get_object
from django_tiercache.exceptions import NotRegistered
from django_tiercache.write_behind import write_through
from tests.redis_servers import closed_port_url
from tests.testapp.models import Product, Unregistered

pytestmark = pytest.mark.django_db(transaction=True)


def test_save__commits_then_get_object_is_a_hit(django_assert_num_queries):
    product = Product(name="kettle", version=1)
    write_through.save(product)
    assert Product.objects.get(pk=product.pk).version == 1
    with django_assert_num_queries(0):
        assert get_object(Product, product.pk).version == 1
    product.version = 2
    write_through.save(product)
    with django_assert_num_queries(0):
        assert get_object(Product, product.pk).version == 2


def test_save__a_cache_failure_never_fails_the_save(settings):
    # The model layer only logs a missed invalidation here; the fill raises (RAISE_ERRORS).
    settings.CACHES = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": closed_port_url(),
            "OPTIONS": {"INVALIDATION_FAILURE": "log", "RAISE_ERRORS": True},
        }
    }
    failures = write_through.failures["count"]
    product = Product(name="teapot", version=3)
    write_through.save(product)
    assert Product.objects.get(pk=product.pk).version == 3
    assert write_through.failures["count"] == failures + 1


def test_save__refuses_an_unregistered_model_before_writing():
    with pytest.raises(NotRegistered):
        write_through.save(Unregistered(name="x"))
    assert not Unregistered.objects.exists()
