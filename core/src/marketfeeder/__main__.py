"""``python -m marketfeeder`` is the ``marketfeeder`` command."""

from .cli import main

main()
