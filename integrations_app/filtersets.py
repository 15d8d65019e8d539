import django_filters
from django.db.models import Q

from integrations_app.models import Integration, Route, Secret


class IntegrationFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter()
    search = django_filters.CharFilter(method="filter_search", help_text="Text in name, display name or description.")

    class Meta:
        model = Integration
        fields = ["name", "search"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(display_name__icontains=value) | Q(description__icontains=value))


class RouteFilterSet(django_filters.FilterSet):
    path = django_filters.CharFilter()
    method = django_filters.CharFilter(method="filter_method", help_text="HTTP method, any case.")

    class Meta:
        model = Route
        fields = ["path", "method"]

    def filter_method(self, queryset, name, value):
        return queryset.filter(method=value.lower())


class SecretFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter()

    class Meta:
        model = Secret
        fields = ["name"]
