"""A small HTML tree for asserting what a page shows: elements by tag, attribute, text and label.

Stdlib only. Good enough for our own templates; not a browser.
"""

from __future__ import annotations

from html.parser import HTMLParser

VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Element:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Element | None = None):
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children: list[Element | str] = []

    def __repr__(self) -> str:
        return f"<{self.tag} {self.attrs}>"

    @property
    def text(self) -> str:
        """The text a user reads, whitespace collapsed."""
        return " ".join("".join(self._text_parts()).split())

    def _text_parts(self):
        for child in self.children:
            if isinstance(child, str):
                yield child
            else:
                yield from child._text_parts()

    def iter(self):
        """Every element below this one, in document order."""
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.iter()

    def ancestors(self):
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def has_class(self, name: str) -> bool:
        return name in self.attrs.get("class", "").split()

    def find_all(self, tag: str | None = None, *, text: str | None = None, class_: str | None = None, **attrs):
        """Elements matching all of: tag, exact text, a class, attributes (True: present, str: equal).

        Attribute names with a dash are given with an underscore: data_stream_url.
        """
        wanted = {name.replace("_", "-"): value for name, value in attrs.items()}
        found = []
        for element in self.iter():
            if tag is not None and element.tag != tag:
                continue
            if class_ is not None and not element.has_class(class_):
                continue
            if text is not None and element.text != text:
                continue
            if all(
                (name in element.attrs) if value is True else element.attrs.get(name) == value
                for name, value in wanted.items()
            ):
                found.append(element)
        return found

    def find(self, tag: str | None = None, **criteria) -> Element:
        """The one element matching; fails the test if there is none or several."""
        found = self.find_all(tag, **criteria)
        assert len(found) == 1, f"expected one <{tag or '*'}> matching {criteria}, found {len(found)}: {found}"
        return found[0]

    def form_data(self) -> dict[str, str]:
        """What a browser without JavaScript would submit from this <form> as it stands."""
        data = {}
        for control in self.iter():
            name = control.attrs.get("name")
            if not name or control.tag == "button":
                continue
            if control.tag == "input" and control.attrs.get("type") in {"checkbox", "radio"}:
                if "checked" in control.attrs:
                    data[name] = control.attrs.get("value", "on")
            elif control.tag == "input":
                data[name] = control.attrs.get("value", "")
            elif control.tag == "textarea":
                data[name] = "".join(child for child in control.children if isinstance(child, str)).removeprefix("\n")
            elif control.tag == "select":
                options = control.find_all("option")
                chosen = [option for option in options if "selected" in option.attrs] or options[:1]
                if chosen:
                    data[name] = chosen[0].attrs.get("value", chosen[0].text)
        return data

    def labelled(self, name: str) -> Element:
        """The form control whose <label> reads `name`: its accessible name."""
        label = self.find("label", text=name)
        return self.find(id=label.attrs["for"])


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.current = self.root

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {name: value or "" for name, value in attrs}, self.current)
        self.current.children.append(element)
        if tag not in VOID_TAGS:
            self.current = element

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Element(tag, {name: value or "" for name, value in attrs}, self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse_html(html: str | bytes) -> Element:
    builder = _TreeBuilder()
    builder.feed(html.decode() if isinstance(html, bytes) else html)
    builder.close()
    return builder.root
