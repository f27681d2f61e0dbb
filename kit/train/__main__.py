"""``python -m kit.train``: see :mod:`kit.train.cli`."""

from kit.train.cli import main

if __name__ == "__main__":
    main()
