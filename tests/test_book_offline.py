"""The built book loads nothing from the network, publishes no traceback, and its configuration keeps it
that way.

The HTML checks read _build/html (`make book` runs them right after building; they skip when no build
exists). Every script, stylesheet, font, image and frame a page references must be a local file that
exists; inline scripts and stylesheets must not name an http(s) URL either (sphinx-thebe, left out in
_config.yml, writes an unpkg URL into every page). Links (<a href>) may point anywhere: they load nothing.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from rstn.book import error_outputs

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
# Namespace identifiers, not requests (SVG and MathML markup inside scripts and styles).
NAMESPACES = re.compile(r"https?://www\.w3\.org/[\w/.#-]*")
URL = re.compile(r"https?://[^\s\"'<>)]+")
# Attributes that make the browser fetch something, per tag.
FETCHING = {"script": ("src",), "img": ("src", "srcset"), "iframe": ("src",), "source": ("src", "srcset"),
            "video": ("src", "poster"), "audio": ("src",), "embed": ("src",), "object": ("data",),
            "input": ("src",)}
LINK_FETCHING_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "shortcut", "manifest",
                      "preconnect", "dns-prefetch", "apple-touch-icon"}


class _Refs(HTMLParser):
    """Collects what a page fetches: (tag, url) pairs, and the text of inline <script>/<style> blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str]] = []
        self.inline: list[str] = []
        self._inline_tag: str | None = None
        self.widget_cdn: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for name in FETCHING.get(tag, ()):
            if a.get(name):
                urls = [part.strip().split(" ")[0] for part in a[name].split(",")] if name == "srcset" else [a[name]]
                self.refs += [(tag, u) for u in urls]
        if tag == "link" and LINK_FETCHING_RELS & set(a.get("rel", "").lower().split()) and a.get("href"):
            self.refs.append(("link", a["href"]))
        if "data-jupyter-widgets-cdn" in a:
            self.widget_cdn.append(a["data-jupyter-widgets-cdn"])
        if tag == "style" or (tag == "script" and not a.get("src") and
                              not a.get("type", "").startswith("application/vnd.jupyter")):
            self._inline_tag = tag
        if "style" in a:
            self.inline.append(a["style"])

    def handle_endtag(self, tag: str) -> None:
        if tag == self._inline_tag:
            self._inline_tag = None

    def handle_data(self, data: str) -> None:
        if self._inline_tag is not None:
            self.inline.append(data)


def _pages() -> list[Path]:
    if not (HTML / "index.html").exists():
        pytest.skip("no built book in _build/html (run `make book`)")
    # the pages; _static holds the themes' Jinja macro files (.html), which are not served as pages
    return sorted(p for p in HTML.rglob("*.html") if p.relative_to(HTML).parts[0] not in ("_static", "_sources"))


def _remote(text: str) -> list[str]:
    return URL.findall(NAMESPACES.sub("", text))


def test_pages_fetch_only_local_files_that_exist():
    problems = []
    for page in _pages():
        parser = _Refs()
        parser.feed(page.read_text(encoding="utf-8"))
        for tag, url in parser.refs:
            parts = urlsplit(url)
            if parts.scheme == "data":
                continue
            if parts.scheme or parts.netloc:
                problems.append(f"{page.relative_to(HTML)}: <{tag}> loads {url}")
                continue
            target = (page.parent / unquote(parts.path)).resolve()
            if not target.is_file():
                problems.append(f"{page.relative_to(HTML)}: <{tag}> {url} does not exist in the build")
        for block in parser.inline:
            problems += [f"{page.relative_to(HTML)}: inline script/style names {u}" for u in _remote(block)]
        problems += [f"{page.relative_to(HTML)}: widget modules would come from {c}"
                     for c in parser.widget_cdn if urlsplit(c).scheme or urlsplit(c).netloc]
    assert not problems, "\n".join(problems)


def test_stylesheets_load_no_remote_fonts_or_imports():
    _pages()
    problems = []
    for css in sorted((HTML / "_static").rglob("*.css")):
        text = NAMESPACES.sub("", css.read_text(encoding="utf-8", errors="replace"))
        for match in re.finditer(r"(?:url\(\s*['\"]?|@import\s+['\"])(https?://[^'\")\s]+)", text):
            problems.append(f"{css.relative_to(HTML)}: {match.group(1)}")
    assert not problems, "\n".join(problems)


def test_math_and_widget_scripts_are_the_vendored_copies():
    pages = _pages()
    scripts = set()
    for page in pages:
        parser = _Refs()
        parser.feed(page.read_text(encoding="utf-8"))
        scripts |= {urlsplit(url).path.rsplit("_static/", 1)[-1] for tag, url in parser.refs if tag == "script"}
    assert "vendor/mathjax/tex-chtml.js" in scripts, "no page loads the vendored MathJax"
    # MathJax 3 CHTML loads its fonts relative to its own location
    assert (HTML / "_static/vendor/mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff").is_file()


def test_config_keeps_the_build_offline_and_unexecuted():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"  # bare `off` would be YAML False
    assert config["only_build_toc_files"] is True
    assert "notebooks" in config["exclude_patterns"]  # the MyST sources are not pages
    sphinx = config["sphinx"]["config"]
    assert not urlsplit(sphinx["mathjax_path"]).scheme
    assert all(not urlsplit(path).scheme for path in sphinx["nb_ipywidgets_js"])
    assert "sphinx_thebe" not in sphinx["extensions"]
    for path in (sphinx["mathjax_path"], *sphinx["nb_ipywidgets_js"]):
        assert (ROOT / "book" / "_static" / path).is_file(), path


def test_no_page_holds_an_error_output():
    """`make book` runs this before building: a chapter that failed must not be published as a traceback
    (`rstn chapters` keeps the last good page; this catches one executed or edited by other means)."""
    found = error_outputs(ROOT / "book")
    assert not found, "pages with an error output:\n" + "\n".join(f"{p}: {c}" for p, c in found.items())
