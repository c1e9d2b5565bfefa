"""The value the benchmarks cache: a dict of about 210 bytes pickled, as a
user record might be."""

VALUE = {
    "id": 48213,
    "username": "ada.lovelace",
    "email": "ada@example.org",
    "is_staff": False,
    "groups": ["editors", "reviewers"],
    "score": 97.25,
    "last_login": "2024-05-17T09:42:11Z",
    "flags": {"beta": True, "newsletter": False},
}
