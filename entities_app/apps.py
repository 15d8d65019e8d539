from django.apps import AppConfig


class EntitiesConfig(AppConfig):
    name = "entities_app"
    verbose_name = "Entities and apps"
