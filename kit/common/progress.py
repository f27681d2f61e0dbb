"""Progress bars: notebook widgets where Jupyter can draw them, text bars everywhere else.

``tqdm.auto`` inside a kernel without ``ipywidgets`` (papermill runs, a plain Jupyter install) warns
"IProgress not found" on every bar; the text bar it then falls back to is what is used here directly.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("ipywidgets") is not None:  # Colab, JupyterLab with widgets
    from tqdm.auto import tqdm
else:
    from tqdm import tqdm

__all__ = ["tqdm"]
