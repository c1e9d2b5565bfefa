"""Models for the model-invalidation tests (tables made by pytest-django, no migrations)."""

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


@django_tiercache.register(write_behind=True)
class Counter(models.Model):
    """A write-heavy row for the write-behind tests: a unique name and a count."""

    name = models.CharField(max_length=20, unique=True)
    hits = models.IntegerField(default=0)
    note = models.CharField(max_length=50, blank=True, default="")

    def __str__(self) -> str:
        return self.name
