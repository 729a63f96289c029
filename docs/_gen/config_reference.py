"""Generate docs/configuration.md from the attrs config classes and their `#:` comments.

Run `python docs/_gen/config_reference.py` after changing `marketfeeder/config.py`;
`tests/test_docs.py` fails while the page is out of date.
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path
from typing import Any

import attrs

from marketfeeder import config as config_module

SECTIONS: list[tuple[str, type[Any]]] = [
    ("top level", config_module.Config),
    ("[exchanges.NAME]", config_module.ExchangeConfig),
    ("[[sinks]]", config_module.SinkConfig),
    ("[[strategies]]", config_module.StrategyConfig),
    ("[[sources]]", config_module.SourceConfig),
    ("[validation]", config_module.ValidationConfig),
    ("[runtime]", config_module.RuntimeConfig),
    ("[metrics]", config_module.MetricsConfig),
]

OUT = Path(__file__).resolve().parents[1] / "configuration.md"

HEADER = """# Configuration

A TOML file (`marketfeeder run --config feeder.toml`, `marketfeeder config check feeder.toml`) or the
same structure as a dict (`Feeder({...})`). Unknown keys are errors; every error names the key and the
reason. Secrets are never read from files, only from the environment.

```toml
buffer_size = 1000

[exchanges.binance]
symbols = ["BTC-USDT", "ETH-USDT"]
data_types = ["book_ticker", "orderbook", "trades"]

[exchanges.backpack]
symbols = ["SOL-USDC"]

[[sinks]]
type = "duckdb"
options = { target = "market.duckdb" }
overflow = "block"

[validation]
policy = "quarantine"
```

This page is generated from `marketfeeder/config.py` by `docs/_gen/config_reference.py`.
"""


def field_comments(cls: type[Any]) -> dict[str, str]:
    """`#:` comment lines directly above each field, and trailing `# ...` comments."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    tree = ast.parse(source)
    comments: dict[str, str] = {}
    klass = tree.body[0]
    assert isinstance(klass, ast.ClassDef)
    for node in klass.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc: list[str] = []
            index = node.lineno - 2
            while index >= 0 and lines[index].strip().startswith("#:"):
                doc.insert(0, lines[index].strip()[2:].strip())
                index -= 1
            comments[node.target.id] = " ".join(doc)
    return comments


def default_text(field: attrs.Attribute[Any]) -> str:
    if field.default is attrs.NOTHING:
        return "required"
    if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
        value = field.default.factory()  # type: ignore[union-attr]
        if attrs.has(type(value)):
            return "see its section"
    else:
        value = field.default
    if isinstance(value, list):
        return "`[" + ", ".join(f'"{getattr(v, "value", v)}"' for v in value) + "]`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value is None:
        return "unset"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def type_text(field: attrs.Attribute[Any]) -> str:
    text = str(field.type).replace("typing.", "")
    return text.replace("|", "\\|")


def render() -> str:
    parts = [HEADER]
    for title, cls in SECTIONS:
        comments = field_comments(cls)
        parts.append(f"\n## {title}\n\n{(cls.__doc__ or '').strip()}\n")
        parts.append("| key | type | default | meaning |\n|---|---|---|---|")
        for field in attrs.fields(cls):
            meaning = comments.get(field.name, "")
            parts.append(f"| `{field.name}` | `{type_text(field)}` | {default_text(field)} | {meaning} |")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT}")
