from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_tiercache", "0002_missedinvalidation"),
    ]

    operations = [
        migrations.CreateModel(
            name="LandedIncrement",
            fields=[
                ("key", models.CharField(max_length=32, primary_key=True, serialize=False)),
                ("version", models.BigIntegerField()),
                ("landed_at", models.DateTimeField(db_index=True)),
            ],
        ),
    ]
