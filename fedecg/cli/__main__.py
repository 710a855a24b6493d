"""``python -m fedecg.cli``: the same as the ``fedecg`` command."""

from fedecg.cli import main

main()
