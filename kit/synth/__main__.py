"""``python -m kit.synth --out DIR --preset demo …``: see :func:`kit.synth.dataset.main`."""

from __future__ import annotations

from kit.synth.dataset import main

if __name__ == "__main__":
    raise SystemExit(main())
