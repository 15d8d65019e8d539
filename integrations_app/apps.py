from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations_app"
    verbose_name = "Integrations and routes"
