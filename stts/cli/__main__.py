"""``python -m stts.cli``: the console script."""

from stts.cli import main

main()
