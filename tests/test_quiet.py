"""kit.bench.demo.execute runs a notebook with a clean terminal: the cells' own output and errors show, the
Jupyter transport's warnings and the kernel's shutdown error do not."""

import logging

import nbformat
import papermill
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from kit.bench.demo import execute

pytestmark = pytest.mark.slow  # starts kernels: `pytest -m "not slow"` leaves it out

# what a papermill run used to leave in the terminal (see kit.bench.demo.QuietKernelManager)
NOISE = [
    "Kernel is running over TCP without encryption",  # ipykernel >= 7.4, every kernel start
    "KeyboardInterrupt caught in kernel",  # the interrupt jupyter_client sends before a shutdown
    "Debugger warning",  # debugpy on Python >= 3.11 (frozen modules)
    "PYDEVD_DISABLE_FILE_VALIDATION",
    "IProgress not found",  # tqdm.auto without ipywidgets (timm imports it through huggingface_hub)
]

# After papermill's last request (kernel_info) is answered the kernel is still in that request's
# handler for a moment; that is when shutdown_kernel's SIGINT turned into "KeyboardInterrupt caught in
# kernel." now and then. This cell makes the moment last half a second, so the race is always lost
# where the interrupt is still sent.
SLOW_KERNEL_INFO = """\
import time
kernel = get_ipython().kernel
answer = kernel.shell_handlers["kernel_info_request"]

async def answer_then_linger(*args):
    await answer(*args)
    time.sleep(0.5)

kernel.shell_handlers["kernel_info_request"] = answer_then_linger
"""


def _notebook(path, *sources):
    cells = [new_code_cell("WHO = 'nobody'", metadata={"tags": ["parameters"]})]
    cells += [new_code_cell(source) for source in sources]
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}), str(path))
    return path


def _assert_quiet(text, caplog):
    for noise in NOISE:
        assert noise not in text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_cells_print_and_warn_but_the_kernel_is_quiet(tmp_path, capfd, caplog):
    notebook = _notebook(
        tmp_path / "quiet.ipynb",
        "import os\n"
        "print(f'hello from {WHO}; debugpy check off: {os.environ.get(\"PYDEVD_DISABLE_FILE_VALIDATION\")}')",
        "import warnings\nwarnings.warn('a warning of the cell')",
        "from tqdm.auto import tqdm\nfor _ in tqdm(range(3)): pass",
        SLOW_KERNEL_INFO,
    )
    execute(notebook, tmp_path / "out.ipynb", {"WHO": "the notebook"})
    out, err = capfd.readouterr()
    assert "hello from the notebook; debugpy check off: 1" in out  # printed, with the parameter
    assert "UserWarning: a warning of the cell" in err  # a cell's own stderr still shows
    _assert_quiet(out + err, caplog)
    executed = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    assert "hello from the notebook" in executed.cells[2].outputs[0].text


def test_a_failing_cell_still_raises_with_its_error(tmp_path, capfd, caplog):
    notebook = _notebook(tmp_path / "fails.ipynb", "print('before the error')", SLOW_KERNEL_INFO,
                         "raise ValueError('the cell failed: ' + WHO)", "print('never printed')")
    with pytest.raises(papermill.PapermillExecutionError, match="ValueError: the cell failed: nobody"):
        execute(notebook, tmp_path / "out.ipynb")
    out, err = capfd.readouterr()
    assert "before the error" in out and "never printed" not in out
    _assert_quiet(out + err, caplog)
