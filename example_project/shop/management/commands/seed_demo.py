from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction

from shop.models import Customer, Product

PRODUCTS = [
    ("Espresso beans, 1 kg", Decimal("24.50"), "Dark roast, for espresso machines.", 40),
    ("Pour-over kettle", Decimal("39.00"), "Gooseneck spout, 1 litre.", 12),
    ("Hand grinder", Decimal("59.90"), "Conical burrs, 30 grind settings.", 8),
    ("Paper filters, 100 pack", Decimal("5.20"), "Unbleached, size 02.", 150),
]

CUSTOMERS = [
    ("Ada Example", "ada@example.com"),
    ("Grace Example", "grace@example.com"),
]


class Command(BaseCommand):
    help = (
        "Create the demo products when the shop has none, and the demo customers that are "
        "missing. Products are not matched by name, so renaming one in the site and running "
        "this again does not bring the old one back."
    )

    @transaction.atomic
    def handle(self, *args: object, **options: object) -> None:
        created = 0
        if not Product.objects.exists():
            Product.objects.bulk_create(
                Product(name=name, price=price, description=description, stock=stock)
                for name, price, description, stock in PRODUCTS
            )
            created += len(PRODUCTS)
        for name, email in CUSTOMERS:
            _, was_created = Customer.objects.get_or_create(email=email, defaults={"name": name})
            created += was_created
        self.stdout.write(self.style.SUCCESS(f"seed_demo: {created} rows created"))
