"""Primary keys of any value in instance tags and object keys."""

import warnings

import pytest
from django.core.cache import cache
from django.core.cache.backends.base import CacheKeyWarning

from django_tiercache import get_object, instance_tag
from django_tiercache.orm.cache_aside import object_key
from django_tiercache.orm.registry import family_tag, pk_tag
from django_tiercache.storage.tags import validate_tags
from tests.testapp.models import Redemption, Voucher

pytestmark = pytest.mark.django_db(transaction=True)

ODD_PKS = {
    "space": "with space",
    "long": "x" * 300,
    "unicode": "ünïcødé-ключ-鍵",
    "control": "ctl\x01\x07\x1f",
    "tab": "tab\there",
    "newline": "new\nline",
    "hash": "#looks-hashed",
    "star": "*",
}


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()


@pytest.fixture(autouse=True)
def cache_key_warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheKeyWarning)
        yield


@pytest.mark.parametrize("pk", ODD_PKS.values(), ids=ODD_PKS.keys())
def test_any_primary_key__is_cached_and_invalidated(pk):
    voucher = Voucher.objects.create(code=pk, name="before")  # saving sends its tags
    assert get_object(Voucher, pk).name == "before"
    voucher.name = "after"
    voucher.save()
    assert get_object(Voucher, pk).name == "after"
    Redemption.objects.create(voucher=voucher)  # a child invalidates its parent's tag
    tag = instance_tag(voucher)
    assert validate_tags([tag]) == (tag,)
    voucher.delete()
    with pytest.raises(Voucher.DoesNotExist):
        get_object(Voucher, pk)


def test_readable_primary_keys__stay_readable():
    assert pk_tag(Voucher, "summer-sale_2026") == "testapp.voucher:summer-sale_2026"
    assert pk_tag(Voucher, "ünïcødé") == "testapp.voucher:ünïcødé"
    assert pk_tag(Voucher, 7) == "testapp.voucher:7"
    assert object_key(Voucher, "sale") == "tiercache:object:testapp.voucher:sale"


def test_other_primary_keys__are_hashed_the_same_in_every_process():
    # A literal, not a recomputation: Python's hash() would differ between processes.
    hashed = "#055ec8f4e53b1e1a9e3de2f9c873d026"
    assert pk_tag(Voucher, "with space") == f"testapp.voucher:{hashed}"
    assert object_key(Voucher, "with space") == f"tiercache:object:testapp.voucher:{hashed}"


def test_hashed_primary_keys__never_meet_readable_ones_or_the_family():
    tags = {pk: pk_tag(Voucher, pk) for pk in ODD_PKS.values()}
    assert len(set(tags.values())) == len(ODD_PKS)
    spelled = tags["with space"].split(":", 1)[1]  # a pk that spells another pk's hash...
    assert pk_tag(Voucher, spelled) != tags["with space"]  # ...is hashed itself
    assert tags["*"] != family_tag(Voucher)
