"""The workbook's reusable code. Notebooks import from these modules; tests verify them.

Stage by stage (InstructGPT, Ouyang et al. 2022):

* ``config``        -- one config dataclass per stage, built from a profile (tiny / cpu / gpu)
* ``models``        -- provisioning the embedded model offline; 4-bit NF4 loading (QLoRA)
* ``generation``    -- sampling with the chat template
* ``constraints``   -- verifiable instructions (IFEval-style constraint kinds)
* ``instructions``  -- the instruction generator and its disjoint splits
* ``labeler``       -- the simulated labeler: a deterministic gold score
* ``demonstrations``-- best-of-N demonstrations; pass-rate tables
* ``external``      -- real data: HH-RLHF preferences, Dolly/Alpaca demonstrations
* ``sft``           -- supervised fine-tuning with TRL's SFTTrainer (QLoRA, completion-only loss)
* ``reward``        -- comparisons, the Bradley-Terry reward model (TRL's RewardTrainer), normalisation
* ``adapters``      -- several LoRA adapters (roles) on one 4-bit base model; rewards under the reward adapter
* ``plots``         -- plotly figures that update in place while training
* ``dataset``       -- the row schema; saving and loading the splits with validation
* ``files``, ``runs``, ``progress``, ``stats`` -- atomic files, stage folders, progress bars, bootstrap
* ``runner``        -- executes the numbered notebooks headless, in order
"""

import os

from .browser import STATIC_RENDERER, tolerate_png_failures

if os.environ.get("PLOTLY_RENDERER") == STATIC_RENDERER:  # a kernel the runner started (helpers.runner)
    tolerate_png_failures()
