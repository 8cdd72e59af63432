"""localstripe on loopback, plus stand-ins for the two Stripe APIs it does not implement.

Run with ``python -m tests.accounts.localstripe_server --port N`` from the repository root (the
tests' ``localstripe`` fixture does). What is real localstripe (1.15): customers, payment
methods, products and plans (a plan id is accepted wherever Stripe takes a price id),
subscriptions (create, update, cancel with DELETE, list), invoices and charges, events, and
webhooks signed with a secret we choose (``POST /_config/webhooks/<id>`` with url, secret,
events). It has no Checkout Sessions, no Customer Portal sessions, no Price objects and no
clock.

The stand-ins, all named StandIn... and serving only the fields our code uses, fill the two
missing APIs with Stripe's request and response shapes and refuse parameters Stripe would
refuse:
- ``POST /v1/checkout/sessions``, ``GET /v1/checkout/sessions/<id>``;
- ``POST /v1/billing_portal/sessions``;
- ``POST /_config/standin/checkout/<id>/pay``: what the customer does on Stripe's Checkout page
  (a card becomes the default payment method, a real localstripe subscription is created, the
  session completes and checkout.session.completed is sent), answered with a 303 to the
  session's success_url like Checkout;
- ``POST /_config/standin/portal/<id>/cancel``: what the customer does in the portal with its
  default settings (cancel at the period's end; customer.subscription.updated is sent, as
  Stripe does; localstripe itself sends nothing for updates), answered with a 303 back.
The store stays in memory (localstripe otherwise pickles it to /tmp after every write).
"""

from __future__ import annotations

import argparse
import html
import time
from typing import Any

from aiohttp import web
from localstripe import server as ls
from localstripe.errors import UserError
from localstripe.resources import (
    Customer,
    Event,
    PaymentMethod,
    Plan,
    StripeObject,
    Subscription,
    store,
)
from localstripe.webhooks import schedule_webhook

store.dump_to_disk = lambda: None


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


class StandInCheckoutSession(StripeObject):
    """Stripe's checkout.session, subscription mode only."""

    object = "checkout.session"
    _id_prefix = "cs_test_"

    def __init__(
        self,
        *,
        origin: str,
        mode: str | None = None,
        line_items: Any = None,
        success_url: str | None = None,
        cancel_url: str | None = None,
        customer: str | None = None,
        customer_email: str | None = None,
        client_reference_id: str | None = None,
        metadata: dict[str, str] | None = None,
        subscription_data: dict[str, Any] | None = None,
        **unexpected: Any,
    ) -> None:
        if unexpected:
            raise UserError(400, "Unexpected " + ", ".join(unexpected))
        if mode != "subscription":
            raise UserError(400, "The stand-in supports mode=subscription only")
        if not isinstance(line_items, list) or len(line_items) != 1:
            raise UserError(400, "line_items: exactly one item is required")
        item = line_items[0]
        if not isinstance(item, dict) or set(item) - {"price", "quantity"}:
            raise UserError(400, "line_items[0]: price and quantity only")
        Plan._api_retrieve(str(item.get("price")))  # 404 for an unknown price
        quantity = int(item.get("quantity") or 1)
        if not success_url or not str(success_url).startswith(("http://", "https://")):
            raise UserError(400, "success_url: a full http(s) URL is required")
        if cancel_url is not None and not str(cancel_url).startswith(("http://", "https://")):
            raise UserError(400, "cancel_url: a full http(s) URL is required")
        if customer and customer_email:
            raise UserError(400, "customer and customer_email cannot both be given")
        if customer:
            Customer._api_retrieve(customer)  # 404 for an unknown customer
        if client_reference_id is not None and len(str(client_reference_id)) > 200:
            raise UserError(400, "client_reference_id: at most 200 characters")
        super().__init__()
        self.mode = mode
        self.status = "open"
        self.payment_status = "unpaid"
        self.customer = customer
        self.customer_email = customer_email
        self.client_reference_id = client_reference_id
        self.success_url = success_url
        self.cancel_url = cancel_url
        self.metadata = metadata or {}
        self.subscription = None
        self.url = f"{origin}/_config/standin/checkout/{self.id}"
        self.expires_at = int(time.time()) + 24 * 3600
        self._price = str(item["price"])
        self._quantity = quantity
        self._subscription_metadata = (subscription_data or {}).get("metadata") or {}
        trial_days = (subscription_data or {}).get("trial_period_days")
        self._trial_period_days = int(trial_days) if trial_days not in (None, "") else None


class StandInPortalSession(StripeObject):
    """Stripe's billing_portal.session."""

    object = "billing_portal.session"
    _id_prefix = "bps_"

    def __init__(
        self,
        *,
        origin: str,
        customer: str | None = None,
        return_url: str | None = None,
        **unexpected: Any,
    ) -> None:
        if unexpected:
            raise UserError(400, "Unexpected " + ", ".join(unexpected))
        if not customer:
            raise UserError(400, "customer is required")
        Customer._api_retrieve(customer)
        if return_url is not None and not str(return_url).startswith(("http://", "https://")):
            raise UserError(400, "return_url: a full http(s) URL is required")
        super().__init__()
        self.customer = customer
        self.return_url = return_url
        self.url = f"{origin}/_config/standin/portal/{self.id}"


async def checkout_create(request: web.Request) -> web.Response:
    data = await ls.get_post_data(request) or {}
    data.pop("expand", None)
    session = StandInCheckoutSession(origin=_origin(request), **data)
    return ls.json_response(session._export())


async def checkout_retrieve(request: web.Request) -> web.Response:
    session = StandInCheckoutSession._api_retrieve(request.match_info["id"])
    return ls.json_response(session._export())


async def checkout_page(request: web.Request) -> web.Response:
    """Stand-in for Stripe's hosted page, so a person can click through by hand too."""
    session = StandInCheckoutSession._api_retrieve(request.match_info["id"])
    action = f"/_config/standin/checkout/{session.id}/pay"
    body = (
        "<!doctype html><title>Stand-in Checkout</title><h1>Stand-in Stripe Checkout</h1>"
        f"<p>Price {html.escape(session._price)}</p>"
        f'<form method="post" action="{action}"><button id="pay">Pay</button></form>'
    )
    return web.Response(text=body, content_type="text/html")


async def checkout_pay(request: web.Request) -> web.Response:
    session = StandInCheckoutSession._api_retrieve(request.match_info["id"])
    if session.status != "open":
        raise UserError(400, "This Checkout session is not open")
    data = await ls.get_post_data(request) or {}
    number = str(data.get("card") or "4242424242424242")
    customer_id = session.customer or Customer(email=session.customer_email).id
    method = PaymentMethod(
        type="card", card={"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}
    )
    PaymentMethod._api_attach(method.id, customer=customer_id)
    Customer._api_update(customer_id, invoice_settings={"default_payment_method": method.id})
    trial_days = session._trial_period_days
    subscription = Subscription(
        customer=customer_id,
        items=[{"plan": session._price, "quantity": session._quantity}],
        metadata=session._subscription_metadata,
        trial_period_days=trial_days,
    )
    if trial_days:
        # localstripe leaves a subscription with a trial "incomplete" and never invoices it;
        # this stand-in does what Stripe does: trialing until now + the trial days, no charge.
        now = int(time.time())
        subscription.status = "trialing"
        subscription.trial_start = now
        subscription.trial_end = now + trial_days * 24 * 3600
    if subscription.status not in ("active", "trialing"):
        raise UserError(402, "Your card was declined.", {"code": "card_declined"})
    session.customer = customer_id
    session.subscription = subscription.id
    session.status = "complete"
    session.payment_status = "paid"
    schedule_webhook(Event("checkout.session.completed", session))
    target = session.success_url.replace("{CHECKOUT_SESSION_ID}", session.id)
    raise web.HTTPSeeOther(target)


async def portal_create(request: web.Request) -> web.Response:
    data = await ls.get_post_data(request) or {}
    data.pop("expand", None)
    session = StandInPortalSession(origin=_origin(request), **data)
    return ls.json_response(session._export())


async def portal_cancel(request: web.Request) -> web.Response:
    session = StandInPortalSession._api_retrieve(request.match_info["id"])
    for subscription in Subscription._api_list_all(None, customer=session.customer)._list:
        if subscription.status in ("canceled", "incomplete_expired"):
            continue
        subscription.cancel_at_period_end = True
        schedule_webhook(Event("customer.subscription.updated", subscription))
    raise web.HTTPSeeOther(session.return_url or _origin(request))


ls.app.router.add_post("/v1/checkout/sessions", checkout_create)
ls.app.router.add_get("/v1/checkout/sessions/{id}", checkout_retrieve)
ls.app.router.add_post("/v1/billing_portal/sessions", portal_create)
ls.app.router.add_get("/_config/standin/checkout/{id}", checkout_page)
ls.app.router.add_post("/_config/standin/checkout/{id}/pay", checkout_pay)
ls.app.router.add_post("/_config/standin/portal/{id}/cancel", portal_cancel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(ls.app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
