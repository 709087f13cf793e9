"""MkDocs hooks (mkdocs.yml ``hooks:``): the pages that are not written by hand.

- ``index.md`` is README.md, its ``docs/`` links made relative to the site, so the front
  page and the README never differ;
- ``reference/{cli,config,parts,datasets,configs}.md`` come from the code
  (:func:`vaekit.docs_gen.pages`): the argparse parser, the config dataclasses, the part
  registries, the named datasets and the bundled configs;
- every ``docs/guides/*.md`` (``docs/results/*.md``) missing from the nav is added to its
  Guides (Results) section, so a new page there needs no edit of mkdocs.yml.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The checkout's own code, whatever vaekit the environment has installed.
sys.path.insert(0, str(ROOT / "src"))

from vaekit.docs_gen import front_page, pages  # noqa: E402

# The nav sections that take up every page of their folder, listed or not.
SECTIONS = {"Guides": "guides", "Results": "results"}


def on_config(config: Any) -> Any:
    listed: set[str] = set()

    def walk(items: Any) -> None:
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                walk(value)
            elif isinstance(value, str):
                listed.add(value)

    walk(config.nav)
    for item in config.nav:
        for section, folder in SECTIONS.items():
            if isinstance(item, dict) and section in item:
                for page in sorted((ROOT / "docs" / folder).glob("*.md")):
                    uri = f"{folder}/{page.name}"
                    if uri not in listed:
                        item[section].append(uri)
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    generated = {"index.md": front_page(ROOT / "README.md"), **pages()}
    for uri, text in generated.items():
        if files.get_file_from_path(uri) is not None:
            files.remove(files.get_file_from_path(uri))
        files.append(File.generated(config, uri, content=text))
    return files


__all__ = ["on_config", "on_files"]
