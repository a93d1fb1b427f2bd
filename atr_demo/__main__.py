"""``python -m atr_demo`` entry point (see :mod:`atr_demo.cli`)."""

from atr_demo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
