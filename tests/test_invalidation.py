"""Model-driven invalidation: signals, relations, bulk paths, transactions."""

import threading

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.http import Http404

import django_tiercache
from django_tiercache import cached_queryset, get_object, get_objects
from django_tiercache.orm.registry import NotRegistered
from django_tiercache.signals import tags_invalidated
from tests.testapp.models import Book, Category, Label, Product, Shelf, Unregistered

# Invalidation happens when transactions commit, so these tests let them commit
# (pytest-django's plain `db` wraps each test in a transaction that never does).
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()


@pytest.fixture
def invalidated():
    """Every tags_invalidated signal sent during the test: (sender, tags)."""
    sent = []

    def receiver(sender, tags, cache_alias, **kwargs):
        sent.append((sender, set(tags), cache_alias))

    tags_invalidated.connect(receiver)
    yield sent
    tags_invalidated.disconnect(receiver)


def tagged(tag):
    """Cache a marker under `tag`; returns a function telling whether it survived."""
    key = f"marker:{tag}"
    cache.set(key, "here", tags=[tag])
    return lambda: cache.get(key) == "here"


def test_tags_of_a_model_and_an_instance():
    product = Product.objects.create(name="p")
    assert django_tiercache.model_tag(Product) == "testapp.product"
    assert django_tiercache.instance_tag(product) == f"testapp.product:{product.pk}"


def test_get_object__caches_and_save_invalidates(django_assert_num_queries):
    product = Product.objects.create(name="before")
    assert get_object(Product, product.pk).name == "before"
    with django_assert_num_queries(0):
        assert get_object(Product, str(product.pk)).name == "before"
    product.name = "after"
    product.save()
    assert get_object(Product, product.pk).name == "after"


def test_get_object__caches_a_missing_row_until_it_is_created(django_assert_num_queries):
    with pytest.raises(Product.DoesNotExist):
        get_object(Product, 4242)
    with django_assert_num_queries(0), pytest.raises(Product.DoesNotExist):
        get_object(Product, 4242)
    Product.objects.create(pk=4242, name="now-here")
    assert get_object(Product, 4242).name == "now-here"


def test_delete__invalidates():
    product = Product.objects.create(name="doomed")
    get_object(Product, product.pk)
    product.delete()
    with pytest.raises(Product.DoesNotExist):
        get_object(Product, product.pk)


def test_get_objects__one_multi_get_and_one_query_for_the_misses(django_assert_num_queries):
    products = [Product.objects.create(name=f"p{i}") for i in range(5)]
    get_object(Product, products[0].pk)
    with django_assert_num_queries(1):
        found = get_objects(Product, [p.pk for p in products] + [999])
    assert sorted(found) == sorted(p.pk for p in products)
    with django_assert_num_queries(0):
        assert len(get_objects(Product, [p.pk for p in products])) == 5


def test_unregistered_models_are_refused():
    with pytest.raises(NotRegistered, match="register"):
        get_object(Unregistered, 1)
    with pytest.raises(TypeError, match="registered"):
        cached_queryset(Unregistered.objects.all())


def test_cached_queryset__is_invalidated_by_any_change_to_a_model_it_reads():
    food = Category.objects.create(name="food")
    Product.objects.create(name="apple", category=food)
    query = Product.objects.select_related("category").order_by("name")
    assert [p.name for p in cached_queryset(query)] == ["apple"]
    Product.objects.create(name="banana", category=food)
    assert [p.name for p in cached_queryset(query)] == ["apple", "banana"]
    food.name = "fruit"
    food.save()  # the query joins categories: their model tag covers it
    assert cached_queryset(query)[0].category.name == "fruit"


def test_a_changed_parent_invalidates_the_old_and_the_new_parent():
    old, new = Category.objects.create(name="old"), Category.objects.create(name="new")
    product = Product.objects.create(name="moving", category=old)
    product = Product.objects.get(pk=product.pk)  # loaded: the old parent is remembered
    old_alive = tagged(django_tiercache.instance_tag(old))
    new_alive = tagged(django_tiercache.instance_tag(new))
    product.category = new
    product.save()
    assert not old_alive()
    assert not new_alive()


def test_registered_tags_function_adds_tags():
    alive = tagged("product-name:special")
    Product.objects.create(name="special")
    assert not alive()


@pytest.mark.parametrize("action", ["add", "remove", "clear"])
def test_many_to_many_changes_invalidate_both_sides(action):
    product = Product.objects.create(name="p")
    label = Label.objects.create(name="l")
    if action != "add":
        product.labels.add(label)
    product_alive = tagged(django_tiercache.instance_tag(product))
    label_alive = tagged(django_tiercache.instance_tag(label))
    if action == "clear":
        product.labels.clear()
    else:
        getattr(label.products, action)(product)  # from the other side
    assert not product_alive()
    assert not label_alive()


@pytest.mark.parametrize("action", ["add", "remove", "clear"])
@pytest.mark.parametrize("side", ["forward", "reverse"])
def test_many_to_many_changes__invalidate_the_same_from_either_side(side, action):
    """What a change to a product invalidates (its parent category, its registered
    tags) goes with an m2m change from the label's side too."""
    category = Category.objects.create(name="c")
    product = Product.objects.create(name="m2m-product", category=category)
    label = Label.objects.create(name="m2m-label")
    if action != "add":
        product.labels.add(label)
    markers = {
        "product": tagged(django_tiercache.instance_tag(product)),
        "label": tagged(django_tiercache.instance_tag(label)),
        "category (product's parent)": tagged(django_tiercache.instance_tag(category)),
        "product's registered tag": tagged("product-name:m2m-product"),
    }
    manager, other = (product.labels, label) if side == "forward" else (label.products, product)
    if action == "clear":
        manager.clear()
    else:
        getattr(manager, action)(other)
    assert [name for name, alive in markers.items() if alive()] == []


def test_queryset_update__invalidates_every_instance_and_query():
    products = [Product.objects.create(name=f"u{i}") for i in range(3)]
    unrelated = tagged("label-like:1")
    for p in products:
        get_object(Product, p.pk)
    Product.objects.filter(name="u1").update(version=7)
    assert get_object(Product, products[1].pk).version == 7
    assert unrelated()


def test_bulk_update_and_bulk_create_invalidate():
    products = [Product.objects.create(name=f"b{i}") for i in range(3)]
    for p in products:
        get_object(Product, p.pk)
        p.version = 5
    Product.objects.bulk_update(products, ["version"])
    assert all(get_object(Product, p.pk).version == 5 for p in products)
    query = Product.objects.order_by("name")
    assert len(cached_queryset(query)) == 3
    Product.objects.bulk_create(Product(name=f"g{i}") for i in range(2))  # a generator
    assert len(cached_queryset(query)) == 5


def test_bulk_update_of_ten_thousand_rows__locks_their_tags_and_invalidates_the_cached_rows(
    settings,
):
    """One call locks, then releases, a tag per row: more values than a Redis Function
    can unpack at once (about 8,000), which once failed the whole write."""
    # The default lock timeout (30 s), not the suite's short one: on a loaded
    # machine 10,000 locks can take longer than 6 s less the query's room to be
    # confirmed, and the save then rightly stops (tests/test_lock_outliving.py).
    settings.TIERCACHE = {**settings.TIERCACHE, "WRITE_LOCK_TIMEOUT": 30}
    products = Product.objects.bulk_create(Product(name=f"many{i}") for i in range(10_000))
    cached = products[::997]  # spread over the rows, cached before the update
    assert [get_object(Product, p.pk).version for p in cached] == [0] * len(cached)
    for p in products:
        p.version = 9
    Product.objects.bulk_update(products, ["version"])
    assert [get_object(Product, p.pk).version for p in cached] == [9] * len(cached)


def test_queryset_delete__invalidates():
    products = [Product.objects.create(name=f"d{i}") for i in range(3)]
    for p in products:
        get_object(Product, p.pk)
    Product.objects.filter(name__in=["d0", "d1"]).delete()
    assert set(get_objects(Product, [p.pk for p in products])) == {products[2].pk}


@pytest.fixture
def locks_sent(monkeypatch):
    """The tag sets of every lock_tags call made during the test."""
    from django_tiercache.backend import TierCache

    sent = []
    lock_tags = TierCache.lock_tags

    def counted(self, writer, tags, *args, **kwargs):
        sent.append(set(tags))
        return lock_tags(self, writer, tags, *args, **kwargs)

    monkeypatch.setattr(TierCache, "lock_tags", counted)
    return sent


def test_queryset_delete__locks_the_family_once_and_no_row_on_its_own(
    locks_sent, django_assert_num_queries
):
    shelves = [Shelf.objects.create(name=f"gone{i}") for i in range(30)]
    kept = Shelf.objects.create(name="kept")
    for shelf in [*shelves, kept]:
        get_object(Shelf, shelf.pk)
    with django_assert_num_queries(0):  # served from the cache before the delete
        assert get_object(Shelf, shelves[0].pk).name == "gone0"
    under_pk_tag_alone = tagged(django_tiercache.instance_tag(shelves[1]))
    locks_sent.clear()
    Shelf.objects.filter(name__startswith="gone").delete()
    # The rows' post_delete events found their instance tags under the family the
    # delete locked first: one lock for 30 rows, where each row cost one more.
    assert locks_sent == [{"testapp.shelf", "testapp.shelf:*"}]
    assert get_objects(Shelf, [s.pk for s in [*shelves, kept]]) == {kept.pk: kept}
    assert not under_pk_tag_alone()


def test_a_delete_cascading_to_many_rows__locks_them_all_in_two_calls(
    locks_sent, django_assert_num_queries
):
    shelf = Shelf.objects.create(name="parent")
    books = [Book.objects.create(title=f"b{i}", shelf=shelf) for i in range(20)]
    for book in books:
        get_object(Book, book.pk)
    with django_assert_num_queries(0):  # served from the cache before the delete
        assert get_object(Book, books[0].pk).title == "b0"
    locks_sent.clear()
    shelf.delete()
    # Every row's pre_delete comes before the queries: the first sends its lock,
    # the others wait for the first post_delete, which sends them in one call.
    assert len(locks_sent) == 2
    assert {django_tiercache.instance_tag(b) for b in books} <= set().union(*locks_sent)
    assert get_objects(Book, [b.pk for b in books]) == {}


def test_a_row_deleted_under_its_familys_lock__takes_no_fill_until_the_commit():
    shelf = Shelf.objects.create(name="doomed")
    tag = django_tiercache.instance_tag(shelf)

    def fill_from_another_thread():
        # Another request, which the transaction's own fill guard does not cover.
        cache.set("doomed-page", "old row", tags=[tag])

    with transaction.atomic():
        Shelf.objects.filter(pk=shelf.pk).delete()
        filler = threading.Thread(target=fill_from_another_thread)
        filler.start()
        filler.join()
        assert cache.get("doomed-page") is None  # refused: the family is locked
    assert cache.get("doomed-page") is None
    cache.set("doomed-page", "after", tags=[tag])  # released with the commit
    assert cache.get("doomed-page") == "after"


def test_a_model_we_do_not_own__auth_user():
    user = User.objects.create(username="alice")
    assert get_object(User, user.pk).username == "alice"
    User.objects.filter(pk=user.pk).update(username="alicia")
    assert get_object(User, user.pk).username == "alicia"


def test_explicit_invalidation_for_sql_django_never_sees():
    from tests.unseen_sql import unseen_sql

    product = Product.objects.create(name="raw")
    get_object(Product, product.pk)
    unseen_sql("UPDATE testapp_product SET version = 9")  # as another program would
    assert get_object(Product, product.pk).version == 0  # not seen...
    django_tiercache.invalidate_model(Product)
    assert get_object(Product, product.pk).version == 9  # ...until told
    alive = tagged(django_tiercache.instance_tag(product))
    django_tiercache.invalidate_instance(product)
    assert not alive()


def test_tags_invalidated_signal(invalidated):
    product = Product.objects.create(name="signal")
    assert (
        Product,
        {"testapp.product", f"testapp.product:{product.pk}", "product-name:signal"},
        "default",
    ) in invalidated


# -- transactions --


def test_inside_a_transaction__others_see_the_old_row_and_nothing_uncommitted_is_cached(
    invalidated,
):
    product = Product.objects.create(name="v0")
    get_object(Product, product.pk)
    invalidated.clear()
    with transaction.atomic():
        product.name = "v1"
        product.save()
        # This connection sees its own write, but does not cache it.
        assert get_object(Product, product.pk).name == "v1"
        assert cache.get(f"tiercache:object:testapp.product:{product.pk}") is None
        # Nothing may be cached under the locked tags meanwhile, by anyone.
        cache.set("other-process-fill", "old", tags=[f"testapp.product:{product.pk}"])
        assert cache.get("other-process-fill") is None
        assert invalidated == []  # announced on commit, not before
    assert get_object(Product, product.pk).name == "v1"
    assert [sender for sender, _, _ in invalidated] == [Product]


def test_rollback__announces_nothing_and_caches_nothing_stale(invalidated):
    product = Product.objects.create(name="kept")
    get_object(Product, product.pk)
    invalidated.clear()
    with pytest.raises(RuntimeError), transaction.atomic():
        product.name = "rolled-back"
        product.save()
        raise RuntimeError
    assert invalidated == []
    assert get_object(Product, product.pk).name == "kept"
    # The next write releases the rolled-back transaction's locks: fills work again.
    Product.objects.create(name="next")
    get_object(Product, product.pk)
    assert cache.get(f"tiercache:object:testapp.product:{product.pk}") is not None


def test_savepoint_rollback__drops_only_its_own_events(invalidated):
    kept = Product.objects.create(name="outer")
    dropped = Product.objects.create(name="inner")
    invalidated.clear()
    with transaction.atomic():
        kept.version = 1
        kept.save()
        try:
            with transaction.atomic():
                dropped.version = 1
                dropped.save()
                raise RuntimeError
        except RuntimeError:
            pass
    announced = set().union(*(tags for _, tags, _ in invalidated))
    assert f"testapp.product:{kept.pk}" in announced
    assert f"testapp.product:{dropped.pk}" not in announced


def test_integrity_error__rolls_back_and_everything_keeps_working():
    Product.objects.create(name="unique")
    product = Product.objects.create(name="other")
    get_object(Product, product.pk)
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.create(name="unique")
    product.version = 3
    product.save()
    assert get_object(Product, product.pk).version == 3
    assert cache.get(f"tiercache:object:testapp.product:{product.pk}").version == 3


def test_on_commit_hooks_of_the_project_read_the_new_value():
    product = Product.objects.create(name="before")
    get_object(Product, product.pk)
    seen = []
    with transaction.atomic():
        transaction.on_commit(lambda: seen.append(get_object(Product, product.pk).name))
        product.name = "after"
        product.save()
    assert seen == ["after"]


def test_atomic_requests(client, settings):
    from django.db import connections

    product = Product.objects.create(name="req")
    get_object(Product, product.pk)
    connections["default"].settings_dict["ATOMIC_REQUESTS"] = True
    try:
        response = client.post(f"/test/rename/{product.pk}/", {"name": "renamed"})
    finally:
        connections["default"].settings_dict["ATOMIC_REQUESTS"] = False
    assert response.status_code == 200
    assert response.content == b"in transaction"
    assert get_object(Product, product.pk).name == "renamed"


def test_get_object_or_404__returns_the_row_or_raises_http404(django_assert_num_queries):
    product = Product.objects.create(name="here")
    assert django_tiercache.get_object_or_404(Product, product.pk) == product
    with pytest.raises(Http404, match="No Product matches"):
        django_tiercache.get_object_or_404(Product, 4243)
    with django_assert_num_queries(0), pytest.raises(Http404):
        django_tiercache.get_object_or_404(Product, 4243)  # the miss is cached too


def test_get_object_or_404__takes_djangos_arguments_and_caches_lookups_by_pk_alone(
    django_assert_num_queries,
):
    product = Product.objects.create(name="by-pk")
    for lookup in ({"pk": product.pk}, {"id": product.pk}, {"pk__exact": str(product.pk)}):
        assert django_tiercache.get_object_or_404(Product, **lookup) == product
    assert django_tiercache.get_object_or_404(Product.objects, pk=product.pk) == product
    assert django_tiercache.get_object_or_404(Product.objects.all(), pk=product.pk) == product
    with django_assert_num_queries(0):  # every one of them was the same cached entry
        django_tiercache.get_object_or_404(Product.objects.all(), id=product.pk)
    with pytest.raises(Http404, match="No Product matches"):
        django_tiercache.get_object_or_404(Product, pk=product.pk + 1000)
    with django_assert_num_queries(0), pytest.raises(Http404):
        django_tiercache.get_object_or_404(Product.objects, id=product.pk + 1000)  # cached miss


def test_get_object_or_404__other_lookups_go_to_the_database_as_djangos_do(
    django_assert_num_queries,
):
    from django.db.models import Q

    product = Product.objects.create(name="by-name")
    get_object(Product, product.pk)  # cached: none of the calls below may use it
    calls = [
        lambda: django_tiercache.get_object_or_404(Product, name="by-name"),
        lambda: django_tiercache.get_object_or_404(Product, Q(name="by-name")),
        lambda: django_tiercache.get_object_or_404(
            Product.objects.filter(version=0), pk=product.pk
        ),
        lambda: django_tiercache.get_object_or_404(Product, pk=product.pk, name="by-name"),
    ]
    for call in calls:
        with django_assert_num_queries(1):
            assert call() == product
    with pytest.raises(Http404):
        django_tiercache.get_object_or_404(Product.objects.filter(version=1), pk=product.pk)
    with pytest.raises(Http404):
        django_tiercache.get_object_or_404(Product, name="nobody")
    with pytest.raises(ValueError, match="must be a Model, Manager, or QuerySet, not 'str'"):
        django_tiercache.get_object_or_404("Product", pk=product.pk)


def test_an_explicit_invalidation_in_autocommit__is_made_before_it_returns(
    settings, clean_redis_servers
):
    """invalidate_model() after raw SQL is the tags' only invalidation: it must be
    done in Redis when it returns (a release sent without waiting could still be
    on its way when the caller reads again). With the server frozen, it waits."""
    import threading
    import time

    server = clean_redis_servers[0]
    settings.CACHES = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            # A database of its own: django-redis keeps one pool per URL, and an
            # earlier test's pool on this server may carry a short SOCKET_TIMEOUT.
            "LOCATION": f"redis://127.0.0.1:{server.port}/13",
            "KEY_PREFIX": "explicit",
            "OPTIONS": {"SOCKET_TIMEOUT": 10},
        }
    }
    product = Product.objects.create(name="raw")
    assert get_object(Product, product.pk).version == 0
    ready, go, returned = threading.Event(), threading.Event(), threading.Event()

    def caller():
        # This thread's cache built and connected, a release already sent (a
        # save's): an invalidation sent without waiting would need no new socket.
        product.save()
        get_object(Product, product.pk)
        time.sleep(0.05)
        ready.set()
        go.wait(10)
        django_tiercache.invalidate_model(Product)
        returned.set()

    thread = threading.Thread(target=caller)
    thread.start()
    assert ready.wait(10)
    server.pause()
    try:
        go.set()
        assert not returned.wait(0.5), "returned before Redis could have made it"
    finally:
        server.resume()
    assert returned.wait(10)
    thread.join()
    Product.objects.filter(pk=product.pk).update(version=9)
    assert get_object(Product, product.pk).version == 9
