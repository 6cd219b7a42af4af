from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "API users, keys and quotas"

    def ready(self) -> None:
        from accounts import schema  # noqa: F401 - registers the OpenAPI auth extension
        from accounts.cache import connect_signals

        connect_signals()  # a change to a key, user or quota clears this process's cached identities
