"""/api/v1/me/: who the caller is, on which plan, with which limits and request rate.

Open to every signed-in user (Free too), so a new key can be tried before upgrading.
"""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.throttle import rate_for
from accounts.gating import user_has_pro
from accounts.models import ApiKey, Plan

LIMIT_FIELDS = (
    "max_concurrent_backtests",
    "max_candles_per_backtest",
    "max_optimization_combinations",
    "max_exchange_accounts",
    "max_followers",
)


class PlanSerializer(serializers.ModelSerializer):
    class Meta:
        model = Plan
        fields = ("code", "name", "price_cents", "currency", "interval", *LIMIT_FIELDS)


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()
    pro = serializers.BooleanField(help_text="Whether Pro features are open to you right now.")
    plan = PlanSerializer()
    rate_limit = serializers.CharField(
        allow_null=True, help_text='Requests allowed per period, e.g. "600/min".'
    )
    auth = serializers.ChoiceField(
        choices=["api_key", "session"], help_text="How this request was authenticated."
    )
    api_key_prefix = serializers.CharField(
        allow_null=True, help_text="The prefix of the key used, when a key was used."
    )


class MeView(APIView):
    permission_classes = (IsAuthenticated,)

    @extend_schema(responses=MeSerializer, summary="The caller's account, plan and rate limit")
    def get(self, request: Request) -> Response:
        user: Any = request.user
        key = request.auth if isinstance(request.auth, ApiKey) else None
        body = {
            "id": user.pk,
            "email": user.email,
            "pro": user_has_pro(user),
            "plan": user.plan,
            "rate_limit": rate_for(user),
            "auth": "api_key" if key is not None else "session",
            "api_key_prefix": key.prefix if key is not None else None,
        }
        return Response(MeSerializer(body).data)


urlpatterns = [path("me/", MeView.as_view(), name="api_me")]
