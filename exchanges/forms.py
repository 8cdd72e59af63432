"""Forms of the exchange pages. Secret fields are password inputs that never render a value
back, so a page answering a refused form does not contain what was typed."""

from __future__ import annotations

from typing import Any

from django import forms

from exchanges.services import LINKABLE_EXCHANGES


def _secret(label: str, *, required: bool = True, help_text: str = "") -> forms.CharField:
    return forms.CharField(
        label=label,
        required=required,
        max_length=1024,
        strip=True,
        help_text=help_text,
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": "off", "spellcheck": "false"}
        ),
    )


class KeyFields(forms.Form):
    api_key = _secret("API key")
    secret = _secret("API secret")
    passphrase = _secret(
        "Passphrase",
        required=False,
        help_text="Only for exchanges whose keys come with one (OKX, KuCoin).",
    )

    def key_kwargs(self) -> dict[str, Any]:
        d = self.cleaned_data
        return {"api_key": d["api_key"], "secret": d["secret"], "passphrase": d["passphrase"]}


class LinkForm(KeyFields):
    exchange = forms.ChoiceField(choices=LINKABLE_EXCHANGES)
    label = forms.CharField(label="Name", max_length=80, help_text="Your name for this account.")
    sandbox = forms.BooleanField(
        label="Use the exchange's sandbox/testnet",
        required=False,
        help_text="Only where the exchange offers one.",
    )
    save_unverified = forms.BooleanField(
        label="Save as not verified yet if the exchange cannot be reached",
        required=False,
        help_text="The connection is then tested later (daily, or with “Test now”).",
    )
    field_order = ("exchange", "label", "api_key", "secret", "passphrase", "sandbox",
                   "save_unverified")  # fmt: skip

    def link_kwargs(self) -> dict[str, Any]:
        d = self.cleaned_data
        return {
            "exchange": d["exchange"],
            "label": d["label"],
            "sandbox": d["sandbox"],
            "save_unverified": d["save_unverified"],
            **self.key_kwargs(),
        }


class RenameForm(forms.Form):
    label = forms.CharField(label="Name", max_length=80)
