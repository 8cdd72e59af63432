"""Pieces every page draws the same way, each written once under ``templates/partials/``.

``{% page_header %}``: the heading block at the top of a page (eyebrow, title, lead line and
the buttons on its right).

    {% page_header eyebrow="Research" heading="Strategies" lead="Entry and exit rules." %}
      <a class="btn btn-primary" href="...">New strategy</a>
    {% endpage_header %}

``back="app:url_name"`` links the eyebrow to that page. What stands between the tags is the
``page-actions`` row; with nothing there the row is left out.

``{% empty_state title="No bots yet" text="..." action="app:url_name" label="..." %}``: what a
list shows while it has nothing in it, with an optional button to the page that starts one.
"""

from __future__ import annotations

from django import template
from django.template.base import FilterExpression, NodeList, Parser, Token
from django.template.context import Context
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

KNOWN_ARGUMENTS = frozenset({"eyebrow", "back", "heading", "lead"})


class PageHeaderNode(template.Node):
    def __init__(self, arguments: dict[str, FilterExpression], actions: NodeList) -> None:
        self.arguments = arguments
        self.actions = actions

    def render(self, context: Context) -> SafeString:
        values = {name: value.resolve(context) for name, value in self.arguments.items()}
        if values.get("back"):
            values["back"] = reverse(values["back"])
        actions = self.actions.render(context).strip()
        values["actions"] = mark_safe(actions) if actions else ""
        return render_to_string("partials/page_header.html", values)


@register.tag("page_header")
def page_header(parser: Parser, token: Token) -> PageHeaderNode:
    bits = token.split_contents()[1:]
    arguments = template.base.token_kwargs(bits, parser)
    if bits or not set(arguments) <= KNOWN_ARGUMENTS:
        raise template.TemplateSyntaxError(
            f"page_header takes only {', '.join(sorted(KNOWN_ARGUMENTS))} as name=value"
        )
    actions = parser.parse(("endpage_header",))
    parser.delete_first_token()
    return PageHeaderNode(arguments, actions)


@register.inclusion_tag("partials/empty_state.html")
def empty_state(
    text: str,
    title: str = "",
    action: str = "",
    label: str = "",
    element_id: str = "",
    button: str = "btn-primary",
) -> dict[str, str]:
    """The empty list's note; ``action`` is a URL name for the button (none when empty)."""
    return {
        "text": text,
        "title": title,
        "url": reverse(action) if action else "",
        "label": label,
        "element_id": element_id,
        "button": button,
    }
