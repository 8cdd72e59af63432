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

``{% column_heads "Name" "Return:num" %}``: a table's heading row.

``{% form_actions submit="Save" cancel="app:url_name" %}``: a form's submit button and the
link that leaves it.
"""

from __future__ import annotations

from django import template
from django.template.base import FilterExpression, NodeList, Parser, Token
from django.template.context import Context
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
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


@register.simple_tag
def column_heads(*headings: str) -> SafeString:
    """A table's heading row: one ``<th scope="col">`` a heading. "Return:num" gives that cell
    the class "num"; "Actions:hidden" is read by screen readers only."""
    cells = []
    for heading in headings:
        text, _, css = heading.rpartition(":") if ":" in heading else (heading, "", "")
        if css == "hidden":
            cells.append(
                format_html('<th scope="col"><span class="visually-hidden">{}</span></th>', text)
            )
        elif css:
            cells.append(format_html('<th scope="col" class="{}">{}</th>', css, text))
        else:
            cells.append(format_html('<th scope="col">{}</th>', text))
    return format_html("<tr>{}</tr>", mark_safe("".join(cells)))


@register.inclusion_tag("partials/form_actions.html")
def form_actions(
    submit: str,
    cancel: str = "",
    submit_id: str = "",
    button: str = "btn-primary",
    cancel_class: str = "btn-link",
    cancel_label: str = "Cancel",
) -> dict[str, str]:
    """The submit button and, when ``cancel`` names a URL, the way back without saving."""
    return {
        "submit": submit,
        "submit_id": submit_id,
        "button": button,
        "cancel_url": reverse(cancel) if cancel else "",
        "cancel_class": cancel_class,
        "cancel_label": cancel_label,
    }


TABLE_ATTRIBUTES = {"id": "id", "labelledby": "aria-labelledby", "label": "aria-label"}


class ScrollTableNode(template.Node):
    def __init__(self, arguments: dict[str, FilterExpression], body: NodeList) -> None:
        self.arguments = arguments
        self.body = body

    def render(self, context: Context) -> SafeString:
        values = {name: value.resolve(context) for name, value in self.arguments.items()}
        css = values.pop("css", "")
        attributes = "".join(
            format_html(' {}="{}"', TABLE_ATTRIBUTES[name], value) for name, value in values.items()
        )
        return format_html(
            '<div class="table-wrap">\n  <table class="table{}"{}>{}</table>\n</div>',
            f" {css}" if css else "",
            mark_safe(attributes),
            self.body.render(context),
        )


@register.tag("scroll_table")
def scroll_table(parser: Parser, token: Token) -> ScrollTableNode:
    """``{% scroll_table id=".." css="table-compact" labelledby=".." label=".." %}`` rows
    ``{% endscroll_table %}``: a table that scrolls sideways on a narrow screen."""
    bits = token.split_contents()[1:]
    arguments = template.base.token_kwargs(bits, parser)
    if bits or not set(arguments) <= {"css", *TABLE_ATTRIBUTES}:
        raise template.TemplateSyntaxError(
            f"scroll_table takes only css, {', '.join(TABLE_ATTRIBUTES)} as name=value"
        )
    body = parser.parse(("endscroll_table",))
    parser.delete_first_token()
    return ScrollTableNode(arguments, body)
