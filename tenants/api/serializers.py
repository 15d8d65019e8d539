from rest_framework import serializers

from tenants.models import ApiKey, AuditEvent
from tenants.scopes import ALL_SCOPES


class ApiKeySerializer(serializers.ModelSerializer):
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    expiresAt = serializers.DateTimeField(source="expires_at", read_only=True)
    revokedAt = serializers.DateTimeField(source="revoked_at", read_only=True)
    lastUsedAt = serializers.DateTimeField(source="last_used_at", read_only=True)
    createdBy = serializers.CharField(source="created_by", read_only=True)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ALL_SCOPES), read_only=True)

    class Meta:
        model = ApiKey
        fields = ["prefix", "name", "scopes", "createdAt", "createdBy", "expiresAt", "revokedAt", "lastUsedAt"]


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The key itself: shown once, store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = ApiKeySerializer.Meta.fields + ["key"]


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=ALL_SCOPES), required=False, allow_empty=True,
        help_text="Omit (or send []) for every scope.",
    )
    expiresAt = serializers.DateTimeField(required=False, allow_null=True)


class AuditEventSerializer(serializers.ModelSerializer):
    objectType = serializers.CharField(source="object_type")
    objectId = serializers.CharField(source="object_id")
    createdAt = serializers.DateTimeField(source="created_at")

    class Meta:
        model = AuditEvent
        fields = ["id", "principal", "action", "objectType", "objectId", "summary", "createdAt"]


class TokenObtainSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)
    tenant = serializers.CharField(
        required=False, help_text="Slug of one tenant; omit for a token covering all your tenants."
    )


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class RefreshSerializer(serializers.Serializer):
    refresh = serializers.CharField(help_text="A refresh token from /api/auth/token or the last /api/auth/refresh.")
