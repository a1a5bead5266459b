"""A Ray Tune sweep of translator trainings (search space: --space tuning/*.yaml).

    ray job submit --working-dir . -- python jobs/tune.py --config PRESET --space tuning/paper.yaml [section.key=value ...]
    scenimefy submit --address http://HEAD:8265 tune --config PRESET --space tuning/paper.yaml [section.key=value ...]
    python jobs/tune.py --config PRESET --space tuning/paper.yaml [section.key=value ...]      # one machine, local Ray

Arguments and checks: `scenimefy.commands.jobs_runner` (see jobs/README.md).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from scenimefy.commands.jobs_runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("tune"))
