"""Read a rendered form as a browser would post it (for tests that post a page's own form)."""

from __future__ import annotations

from html.parser import HTMLParser


def form_values(html: str, form_id: str) -> dict[str, object]:
    """What a browser would post from form ``form_id`` as rendered (inputs, checked boxes and
    radios, selected options), parsed from the page."""
    values: dict[str, object] = {}

    class Reader(HTMLParser):
        inside = False
        select: str | None = None
        textarea: str | None = None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "form":
                self.inside = a.get("id") == form_id
            if not self.inside:
                return
            name = a.get("name")
            if tag == "input" and name and a.get("type") != "submit":
                if a.get("type") in ("checkbox", "radio"):
                    if "checked" in a:
                        values[name] = a.get("value") or "on"
                else:
                    values[name] = a.get("value") or ""
            elif tag == "textarea" and name:
                values[name] = ""
                self.textarea = name
            elif tag == "select":
                self.select = name
            elif tag == "option" and self.select and "selected" in a:
                values[self.select] = a.get("value") or ""

        def handle_data(self, data):
            if self.textarea:
                values[self.textarea] = str(values[self.textarea]) + data

        def handle_endtag(self, tag):
            if tag == "textarea":
                self.textarea = None
            if tag == "select":
                self.select = None
            if tag == "form":
                self.inside = False

    Reader().feed(html)
    return values
