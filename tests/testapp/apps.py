from django.apps import AppConfig


class TestAppConfig(AppConfig):
    name = "tests.testapp"
    label = "testapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.models import User

        import django_tiercache

        from .models import Category, Label, Product, Redemption, Voucher

        django_tiercache.register(Category)
        django_tiercache.register(Label)
        django_tiercache.register(
            Product, parents=["category"], tags=lambda p: [f"product-name:{p.name}"]
        )
        django_tiercache.register(Voucher)
        django_tiercache.register(Redemption, parents=["voucher"])
        django_tiercache.register(User)  # a model this project does not own
