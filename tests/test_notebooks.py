"""Execute the example notebooks end to end at a tiny budget (JAXPPO_NOTEBOOK_TIMESTEPS=4096).

Runs each notebook in a fresh IPython kernel via nbclient, in-process (no `jupyter` CLI). The kernel is started
from a kernel spec written to a temporary directory that points at *this* interpreter (sys.executable), so it
runs the same virtualenv as pytest whether or not a "python3" kernel is installed anywhere. The kernel is a
separate process: it inherits this process's environment (including conftest.py's XLA_FLAGS), and the
distributed notebook then sets its own XLA_FLAGS before importing jax.

Needs the test extra: nbformat, nbclient, ipykernel, matplotlib (skipped with a reason if one is missing).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (installed with nbclient)
from jupyter_client.manager import KernelManager  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TIMESTEPS = 4096
KERNEL_NAME = "jaxppo-test-python"


@pytest.fixture(scope="module")
def kernel_spec_manager(tmp_path_factory):
    kernels = tmp_path_factory.mktemp("kernels")
    spec_dir = kernels / KERNEL_NAME
    spec_dir.mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "jaxppo test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(kernels)])


def execute(name: str, kernel_spec_manager, monkeypatch) -> tuple[object, str]:
    """Run notebooks/<name> top to bottom; return the executed notebook and all its text output."""
    monkeypatch.setenv("JAXPPO_NOTEBOOK_TIMESTEPS", str(TIMESTEPS))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # keep ipykernel's inline backend: plots become image/png
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), \
        f"{name}: saved with outputs; clear them before committing"
    km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_spec_manager)
    client = nbclient.NotebookClient(nb, km=km, timeout=600, kernel_name=KERNEL_NAME,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError (with the traceback) if a cell fails
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", out
            if out.output_type == "stream":
                texts.append(out.text)
            elif "text/plain" in out.get("data", {}):
                texts.append(out.data["text/plain"])
    return nb, "".join(texts)


def count_images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


@pytest.mark.slow
def test_quickstart_notebook(kernel_spec_manager, monkeypatch):
    nb, text = execute("quickstart.ipynb", kernel_spec_manager, monkeypatch)
    assert f"TOTAL_TIMESTEPS = {TIMESTEPS:,}" in text
    assert "8 updates x 512 env steps = 4,096 env steps" in text
    assert "mean episode return over the last 10 updates" in text
    assert re.search(r"greedy policy, 32 episodes: return \d", text)
    assert "16 seeds x 4,096 env steps" in text
    assert "greedy evaluation return per seed" in text
    assert count_images(nb) == 2  # learning curve, 16-seed mean +- std


@pytest.mark.slow
def test_distributed_notebook(kernel_spec_manager, monkeypatch):
    nb, text = execute("distributed.ipynb", kernel_spec_manager, monkeypatch)
    assert "8 local devices" in text
    diffs = re.findall(r"max abs difference of the final parameters, 1 device vs 4 devices: (\S+)", text)
    assert len(diffs) == 1 and float(diffs[0]) < 1e-4, text
    assert "replicas_in_sync, all updates: True" in text
    assert count_images(nb) == 1
