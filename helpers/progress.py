"""Progress bars that work both in JupyterLab and in headless runs.

In JupyterLab ``tqdm.auto`` draws a widget bar. Headless (papermill, nbclient, the
runner) that widget never renders and its text fallback stays frozen at 0 %, so
there we pick tqdm's plain text bar explicitly, printing to stdout at a calm rate.
The runner and the tests set ``RLHF_HEADLESS=1`` for the kernel.
"""

from __future__ import annotations

import os
import sys


def headless() -> bool:
    return os.environ.get("RLHF_HEADLESS", "").strip().lower() in ("1", "true", "yes")


def progress_bar(total: int, desc: str, unit: str = "it"):
    """A tqdm bar (elapsed time and estimate of the remainder) suited to where the code runs."""
    if headless():
        from tqdm.std import tqdm  # lazy: which tqdm (text or widget) is chosen per call

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stdout, mininterval=20, ascii=True)
    from tqdm.auto import tqdm  # lazy: which tqdm is chosen per call; headless runs skip the widget's imports

    return tqdm(total=total, desc=desc, unit=unit)


def quiet_library_bars() -> None:
    """Headless: switch off the widget bars of transformers and datasets (they cannot render there)."""
    if not headless():
        return
    import datasets  # lazy: datasets takes seconds to import; progress (and models) import without it
    from transformers.utils import logging as hf_logging  # lazy: transformers takes seconds to import

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
