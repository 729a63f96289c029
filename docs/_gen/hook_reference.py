"""Generate docs/hooks.md from marketfeeder/hookspecs.py (signatures and docstrings).

`tests/test_docs.py` fails while the page is out of date or a hook lacks a `test_hook_<name>`.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

from marketfeeder import hookspecs

OUT = Path(__file__).resolve().parents[1] / "hooks.md"

HEADER = """# Hook reference

Hooks are synchronous and called once, when a feeder or the CLI starts; the objects they register have
async methods. Implement a hook with `marketfeeder.hookimpl` in the module your entry point names:

```python
from marketfeeder import hookimpl

@hookimpl
def marketfeeder_register_sinks(register):
    register("csv", CsvSink)
```

```toml
[project.entry-points.marketfeeder]
myplugin = "mypackage.plugin"
```

This page is generated from `marketfeeder/hookspecs.py` by `docs/_gen/hook_reference.py`.
"""


def to_markdown(text: str) -> str:
    """Docstrings use reST roles; the site is Markdown."""
    text = re.sub(r":\w+:`~?([\w.]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    return text.replace("``", "`")


def render() -> str:
    parts = [HEADER]
    for name in hookspecs.HOOK_NAMES:
        func = getattr(hookspecs, name)
        signature = str(inspect.signature(func)).replace("'", "")
        doc = to_markdown(inspect.cleandoc(func.__doc__ or ""))
        parts.append(f"\n## `{name}`\n\n```python\ndef {name}{signature}\n```\n\n{doc}\n")
    return "\n".join(parts)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT}")
