"""Registering models: the class decorator, wiring at app readiness, bad parents=."""

import pytest
from django.apps import apps
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db.models.signals import post_save

import django_tiercache
from django_tiercache import get_object
from django_tiercache.orm import registry
from tests.testapp.models import Book, Label, Product, Shelf, Unregistered

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()


def test_register_decorator__save_invalidates_the_get_object_entry(django_assert_num_queries):
    shelf = Shelf.objects.create(name="before")
    assert get_object(Shelf, shelf.pk).name == "before"
    with django_assert_num_queries(0):
        assert get_object(Shelf, shelf.pk).name == "before"
    shelf.name = "after"
    shelf.save()
    assert get_object(Shelf, shelf.pk).name == "after"


def test_register_decorator_with_parents__a_child_save_invalidates_its_parent():
    shelf = Shelf.objects.create(name="fiction")
    get_object(Shelf, shelf.pk)
    entry = django_tiercache.instance_tag(shelf)
    cache.set("marker", "here", tags=[entry])
    Book.objects.create(title="new", shelf=shelf)
    assert cache.get("marker") is None


def test_register_decorator__many_to_many_through_model_is_wired():
    book = Book.objects.create(title="b", shelf=Shelf.objects.create(name="s"))
    label = Label.objects.create(name="l")
    assert get_object(Book, book.pk).title == "b"
    cache.set("marker", "here", tags=[django_tiercache.instance_tag(book)])
    book.readers.add(label)
    assert cache.get("marker") is None


def test_app_ready__wires_each_decorated_model_once():
    uid = "django_tiercache:_after_save:testapp.shelf"

    def connected():
        return [r for r in post_save.receivers if r[0][0] == uid]

    apps.get_app_config("django_tiercache").ready()
    apps.get_app_config("django_tiercache").ready()
    assert len(connected()) == 1


def test_register_after_ready__bad_parents_raise_a_clear_error_and_register_nothing():
    with pytest.raises(ImproperlyConfigured, match=r"tiercache\.E007.*Unregistered\.name.*HINT"):
        django_tiercache.register(Unregistered, parents=["name"])
    with pytest.raises(ImproperlyConfigured, match="no such field"):
        django_tiercache.register(Unregistered, parents=["nothing"])
    assert not registry.is_registered(Unregistered)


def test_wire_pending__a_decorated_model_with_bad_parents_fails_at_ready():
    # What @register(parents=["name"]) on a model in models.py leaves behind.
    registry._registry[Unregistered] = registry.Registration(Unregistered, parents=("name",))
    registry._pending.append(Unregistered)
    try:
        with pytest.raises(ImproperlyConfigured, match=r"tiercache\.E007.*ForeignKey"):
            apps.get_app_config("django_tiercache").ready()
        assert not registry.is_registered(Unregistered)
    finally:
        registry.unregister(Unregistered)


def test_registered_while_models_load__decorated_models_are_registered():
    assert registry.registration_for(Book).parents == ("shelf",)
    assert registry.is_registered(Shelf)
    assert registry.is_registered(Product)
