"""What the admin pages' tests share: users with the statistics permissions, and
a TierCache as the default cache under a key prefix of its own."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import Permission
from django.core.cache import caches

TIERCACHE = "django_tiercache.backend.TierCache"


def make_user(django_user_model, name, *codenames, staff=True):
    user = django_user_model.objects.create_user(name, password="pw", is_staff=staff)
    for codename in codenames:
        user.user_permissions.add(
            Permission.objects.get(codename=codename, content_type__app_label="django_tiercache")
        )
    return user


def use_tiercache(settings, location, stem: str):
    """caches["default"], a TierCache over `location` with a KEY_PREFIX of its own
    (so that its statistics and keys start empty)."""
    settings.CACHES = {
        "default": {
            "BACKEND": TIERCACHE,
            "LOCATION": location,
            "KEY_PREFIX": f"{stem}-{uuid.uuid4().hex[:8]}",
        }
    }
    return caches["default"]
