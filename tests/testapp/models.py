"""Models for the model-invalidation tests (tables made by pytest-django, no migrations)."""

import django
from django.db import models

import django_tiercache


class Category(models.Model):
    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.name


class Label(models.Model):
    name = models.CharField(max_length=50, unique=True)

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    name = models.CharField(max_length=50, unique=True)
    version = models.IntegerField(default=0)
    category = models.ForeignKey(Category, null=True, on_delete=models.CASCADE)
    labels = models.ManyToManyField(Label, related_name="products")

    def __str__(self) -> str:
        return self.name


class Voucher(models.Model):
    """A model whose primary key is free text: spaces, unicode, anything."""

    code = models.CharField(primary_key=True, max_length=400)
    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.code


class Redemption(models.Model):
    voucher = models.ForeignKey(Voucher, on_delete=models.CASCADE)

    def __str__(self) -> str:
        return f"{self.voucher_id} redeemed"


class Unregistered(models.Model):
    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.name


# Registered with the class decorator, as the README shows: registration happens
# while models load, and the signal wiring waits for the app registry.
@django_tiercache.register
class Shelf(models.Model):
    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.name


@django_tiercache.register(parents=["shelf"])
class Book(models.Model):
    title = models.CharField(max_length=50)
    shelf = models.ForeignKey(Shelf, on_delete=models.CASCADE, related_name="books")
    readers = models.ManyToManyField(Label, related_name="books")

    def __str__(self) -> str:
        return self.title


@django_tiercache.register
class Stamp(models.Model):
    """A row stamped by the database's clock (Now() updates, tests/test_correctness_cases.py)."""

    name = models.CharField(max_length=50)
    updated = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return self.name


@django_tiercache.register(write_behind=True)
class Counter(models.Model):
    """A write-heavy row for the write-behind tests: a unique name and a count."""

    name = models.CharField(max_length=20, unique=True)
    hits = models.IntegerField(default=0)
    note = models.CharField(max_length=50, blank=True, default="")

    def __str__(self) -> str:
        return self.name


_CHECK = "condition" if django.VERSION >= (5, 1) else "check"  # renamed in Django 5.1


# Write-behind rows keyed otherwise than by an integer, and rows whose database
# constraints a drain must isolate (deferred on PostgreSQL: checked at COMMIT).
@django_tiercache.register(write_behind=True)
class Badge(models.Model):
    """A text primary key."""

    code = models.CharField(primary_key=True, max_length=20)
    score = models.IntegerField(default=0)

    def __str__(self) -> str:
        return self.code


@django_tiercache.register(write_behind=True)
class Ticket(models.Model):
    """A UUID primary key, and a decimal field with its digits limited."""

    id = models.UUIDField(primary_key=True)
    price = models.DecimalField(max_digits=5, decimal_places=2, default=0)

    def __str__(self) -> str:
        return str(self.id)


@django_tiercache.register(write_behind=True)
class CounterProfile(models.Model):
    """A one-to-one primary key."""

    counter = models.OneToOneField(Counter, primary_key=True, on_delete=models.CASCADE)
    motto = models.CharField(max_length=20, default="")

    def __str__(self) -> str:
        return self.motto


@django_tiercache.register(write_behind=True)
class Tally(models.Model):
    """A deferred foreign key (Django's default), a deferred unique code, a CHECK."""

    counter = models.ForeignKey(Counter, null=True, on_delete=models.CASCADE)
    code = models.CharField(max_length=20)
    amount = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["code"], name="tally_code_unique", deferrable=models.Deferrable.DEFERRED
            ),
            # condition= or check=, by Django version (_CHECK): the stubs know one
            models.CheckConstraint(name="tally_amount_gte_0", **{_CHECK: models.Q(amount__gte=0)}),  # type: ignore[arg-type]
        ]

    def __str__(self) -> str:
        return self.code
