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

from collections.abc import Iterable, Iterator

from django import template
from django.template.base import FilterExpression, NodeList, Parser, Token
from django.template.context import Context
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

KNOWN_ARGUMENTS = frozenset({"eyebrow", "back", "heading", "lead"})


class BlockTagNode(template.Node):
    """A tag with name=value arguments around a body of template."""

    def __init__(self, arguments: dict[str, FilterExpression], body: NodeList) -> None:
        self.arguments = arguments
        self.body = body

    def values(self, context: Context) -> dict[str, object]:
        return {name: value.resolve(context) for name, value in self.arguments.items()}


class PageHeaderNode(BlockTagNode):
    def render(self, context: Context) -> SafeString:
        values = self.values(context)
        if values.get("back"):
            values["back"] = reverse(str(values["back"]))
        actions = self.body.render(context).strip()
        values["actions"] = mark_safe(actions) if actions else ""
        return render_to_string("partials/page_header.html", values)


def parse_block_tag(
    parser: Parser, token: Token, allowed: Iterable[str]
) -> tuple[dict[str, FilterExpression], NodeList]:
    """The name=value arguments of a block tag (only those allowed) and what it encloses."""
    name, *bits = token.split_contents()
    arguments = template.base.token_kwargs(bits, parser)
    if bits or not set(arguments) <= set(allowed):
        raise template.TemplateSyntaxError(
            f"{name} takes only {', '.join(sorted(allowed))} as name=value"
        )
    body = parser.parse((f"end{name}",))
    parser.delete_first_token()
    return arguments, body


@register.tag("page_header")
def page_header(parser: Parser, token: Token) -> PageHeaderNode:
    return PageHeaderNode(*parse_block_tag(parser, token, KNOWN_ARGUMENTS))


@register.inclusion_tag("partials/empty_state.html")
def empty_state(text: str, **options: str) -> dict[str, str]:
    """The empty list's note; options: title, action (a URL name for the button), label,
    element_id, button (its class, btn-primary unless said)."""
    return {"text": text, **options}


def _each_heading(headings: Iterable[str | Iterable[str]]) -> Iterator[str]:
    """The headings in order, a list or tuple among them giving each of its own."""
    for heading in headings:
        if isinstance(heading, str):
            yield heading
        else:
            yield from heading


@register.simple_tag
def column_heads(*headings: str | Iterable[str]) -> SafeString:
    """A table's heading row: one ``<th scope="col">`` a heading (a list stands for its
    headings). "Return:num" gives that cell the class "num"; "Actions:hidden" is read by
    screen readers only."""
    cells = []
    for heading in _each_heading(headings):
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
def form_actions(submit: str, **options: str) -> dict[str, str]:
    """The submit button and, when ``cancel`` names a URL, the way back without saving; options:
    submit_id, button (btn-primary unless said), cancel, cancel_class, cancel_label."""
    return {"submit": submit, **options}


TABLE_ATTRIBUTES = {"id": "id", "labelledby": "aria-labelledby", "label": "aria-label"}


class ScrollTableNode(BlockTagNode):
    def render(self, context: Context) -> SafeString:
        values = self.values(context)
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
    return ScrollTableNode(*parse_block_tag(parser, token, {"css", *TABLE_ATTRIBUTES}))
