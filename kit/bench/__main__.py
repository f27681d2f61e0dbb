"""``python -m kit.bench``: see :mod:`kit.bench.cli`."""

from kit.bench.cli import main

if __name__ == "__main__":
    main()
