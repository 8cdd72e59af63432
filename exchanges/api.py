"""/api/v1/exchange-accounts/: linked exchange accounts.

    GET    exchange-accounts/                 my accounts (paginated)
    POST   exchange-accounts/                 link one with an API key (tested first) -> 201
    GET    exchange-accounts/<id>/            one account
    PATCH  exchange-accounts/<id>/            rename ({"label": ...})
    DELETE exchange-accounts/<id>/            delete (stops what runs on it) -> 204
    POST   exchange-accounts/<id>/test/       test the connection now
    POST   exchange-accounts/<id>/rotate-key/ replace the key (tested first)

Secrets are write-only: no answer carries them; the API key shows as its last 4 characters.
A key that can withdraw is refused (400); the exchange's refusal of a key is a 400 in its own
words; an exchange that cannot be reached is a 503 unless ``save_unverified`` is true.
Deleting needs only a sign-in (an owner can always remove their keys); the rest needs Pro.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.urls import path, reverse
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.gating import AuthenticatedRequest
from backtester.api.parsing import validated
from exchanges.models import ExchangeAccount
from exchanges.selectors import account_get, accounts_for
from exchanges.services import (
    account_delete,
    account_link,
    account_rename,
    account_rotate_key,
    account_test,
)

TAG = ["exchange accounts"]


class ExchangeAccountSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    permissions = serializers.JSONField(
        help_text="What the exchange reports about the key, or {'unverifiable': reason}."
    )
    balances = serializers.JSONField(help_text='{"USDT": {"free": "100", "used": "0"}}, strings')

    class Meta:
        model = ExchangeAccount
        fields = ("id", "url", "kind", "exchange", "label", "sandbox", "status",
                  "status_message", "can_trade", "can_withdraw", "permissions", "balances",
                  "checked_at", "key_last4", "paper_quote", "paper_starting_balance",
                  "created_at", "updated_at")  # fmt: skip
        read_only_fields = fields

    def get_url(self, obj: ExchangeAccount) -> str:
        return reverse("api_exchange_account_detail", kwargs={"pk": obj.pk})


def _secret(**kw: Any) -> serializers.CharField:
    return serializers.CharField(
        write_only=True, max_length=1024, style={"input_type": "password"}, **kw
    )


class KeySerializer(serializers.Serializer):
    api_key = _secret()
    secret = _secret()
    passphrase = _secret(required=False, allow_blank=True, default="")


class LinkSerializer(KeySerializer):
    exchange = serializers.CharField(max_length=40, help_text="A ccxt id: binance, okx, ...")
    # DRF's metaclass takes declared fields off the class: "label" shadows no Field.label.
    label = serializers.CharField(max_length=80)  # type: ignore[assignment]
    sandbox = serializers.BooleanField(default=False)
    save_unverified = serializers.BooleanField(
        default=False, help_text="Store as 'not verified yet' if the exchange cannot be reached."
    )


class RenameSerializer(serializers.Serializer):
    # DRF's metaclass takes declared fields off the class: "label" shadows no Field.label.
    label = serializers.CharField(max_length=80)  # type: ignore[assignment]


def _json(account: ExchangeAccount) -> dict[str, Any]:
    return dict(ExchangeAccountSerializer(account).data)


@extend_schema(tags=TAG)
@extend_schema_view(get=extend_schema(summary="My exchange accounts"))
class ExchangeAccountListView(ListAPIView):
    request: AuthenticatedRequest

    serializer_class = ExchangeAccountSerializer

    def get_queryset(self) -> Any:
        return accounts_for(self.request.user)

    @extend_schema(
        request=LinkSerializer,
        responses={201: ExchangeAccountSerializer},
        summary="Link an account with an API key (tested before it is stored)",
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        data = validated(LinkSerializer, request.data)
        account = account_link(user=request.user, trigger="api", **data)
        return Response(_json(account), status=status.HTTP_201_CREATED)


@extend_schema(tags=TAG)
class ExchangeAccountDetailView(APIView):
    def get_permissions(self) -> Sequence[Any]:
        if self.request.method == "DELETE":
            return [IsAuthenticated()]
        return super().get_permissions()

    @extend_schema(responses=ExchangeAccountSerializer, summary="One exchange account")
    def get(self, request: AuthenticatedRequest, pk: int) -> Response:
        return Response(_json(account_get(user=request.user, pk=pk)))

    @extend_schema(request=RenameSerializer, responses=ExchangeAccountSerializer, summary="Rename")
    def patch(self, request: AuthenticatedRequest, pk: int) -> Response:
        account = account_get(user=request.user, pk=pk)
        data = validated(RenameSerializer, request.data)
        return Response(_json(account_rename(user=request.user, account=account, **data)))

    @extend_schema(responses={204: None}, summary="Delete (erases its keys, stops live use)")
    def delete(self, request: AuthenticatedRequest, pk: int) -> Response:
        account = account_get(user=request.user, pk=pk)
        account_delete(user=request.user, account=account, trigger="api")
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=TAG)
class ExchangeAccountTestView(APIView):
    @extend_schema(
        request=None, responses=ExchangeAccountSerializer, summary="Test the connection now"
    )
    def post(self, request: AuthenticatedRequest, pk: int) -> Response:
        account = account_get(user=request.user, pk=pk)
        return Response(_json(account_test(account=account, user=request.user, trigger="api")))


@extend_schema(tags=TAG)
class ExchangeAccountRotateView(APIView):
    @extend_schema(
        request=KeySerializer,
        responses=ExchangeAccountSerializer,
        summary="Replace the API key (tested first; the old one is kept if refused)",
    )
    def post(self, request: AuthenticatedRequest, pk: int) -> Response:
        account = account_get(user=request.user, pk=pk)
        data = validated(KeySerializer, request.data)
        rotated = account_rotate_key(user=request.user, account=account, trigger="api", **data)
        return Response(_json(rotated))


urlpatterns = [
    path("exchange-accounts/", ExchangeAccountListView.as_view(), name="api_exchange_account_list"),
    path(
        "exchange-accounts/<int:pk>/",
        ExchangeAccountDetailView.as_view(),
        name="api_exchange_account_detail",
    ),
    path(
        "exchange-accounts/<int:pk>/test/",
        ExchangeAccountTestView.as_view(),
        name="api_exchange_account_test",
    ),
    path(
        "exchange-accounts/<int:pk>/rotate-key/",
        ExchangeAccountRotateView.as_view(),
        name="api_exchange_account_rotate",
    ),
]
