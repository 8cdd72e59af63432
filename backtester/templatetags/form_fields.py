"""``form|fields:"a b c"``: the bound fields of a form named in one string, in that order, so a
template can lay out a group of fields with one loop."""

from __future__ import annotations

from django import forms, template

register = template.Library()


@register.filter
def fields(form: forms.BaseForm, names: str) -> list[forms.BoundField]:
    return [form[name] for name in names.split()]
