"""A griffe extension for the API reference: Sphinx markup in numpydoc docstrings -> Markdown.

The package's docstrings use Sphinx roles (``:func:`name```, ``:math:`x```) and ``.. math::``
blocks, which mkdocstrings would show verbatim. After the package is loaded, every docstring is
rewritten: math roles and blocks become ``$...$`` / ``$$...$$`` (rendered by pymdownx.arithmatex), and
cross-reference roles become links to the API page when their target is a public object of
xoceandiff (which the API page renders), inline code otherwise. Docstrings in the source are untouched.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|data|mod|attr|exc|obj|const):`(~?)([^`<]*?)(?:\s*<([^`>]+)>)?`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_MATH_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<rest>.*)$")


def _math_blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _MATH_BLOCK.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match["indent"]
        body = [match["rest"]] if match["rest"].strip() else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            body.append(lines[i])
            i += 1
        math = textwrap.dedent("\n".join(body)).strip("\n")
        out += [indent + "$$"] + [indent + line for line in math.splitlines()] + [indent + "$$", ""]
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrite Sphinx roles and math directives of every xoceandiff docstring."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "xoceandiff":
            return
        self.package = pkg
        self._walk(pkg)

    def _walk(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = self._convert(obj.docstring.value, obj)
        for member in obj.members.values():
            if not member.is_alias and member.parent is obj:
                self._walk(member)

    def _convert(self, text: str, where: griffe.Object) -> str:
        text = _math_blocks(text)
        text = _MATH_ROLE.sub(lambda m: f"${m[1].strip()}$", text)
        return _ROLE.sub(lambda m: self._reference(m, where), text)

    def _reference(self, match: re.Match, where: griffe.Object) -> str:
        short, title, target = match[1] == "~", match[2].strip(), (match[3] or match[2]).strip()
        target = target.lstrip("~.")
        display = target.rsplit(".", 1)[-1] if short else (title or target)
        found = self._resolve(target, where)
        return f"[`{display}`][{found}]" if found else f"`{display}`"

    def _resolve(self, target: str, where: griffe.Object) -> str | None:
        scopes = [target]
        scope: griffe.Object | None = where
        while scope is not None:
            scopes.append(f"{scope.path}.{target}")
            scope = scope.parent
        for path in scopes:
            if not path.startswith("xoceandiff."):
                continue
            try:
                obj = self.package.modules_collection[path]
            except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
                continue
            try:
                canonical = obj.final_target if obj.is_alias else obj
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                return None
            if _rendered(canonical):
                return canonical.path
            return None
        return None


def _rendered(obj: griffe.Object) -> bool:
    """Whether the API page shows ``obj``: it and every parent below the package are public."""
    while obj.parent is not None:
        if obj.is_module and obj.name.startswith("_"):
            return False
        if not obj.is_module and not obj.is_public:
            return False
        obj = obj.parent
    return True
