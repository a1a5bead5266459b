"""The end-to-end demo on procedural data (CPU, tiny preset).

    ray job submit --working-dir . -- python jobs/demo.py --out /shared/demo [section.key=value ...]
    scenimefy submit --address http://HEAD:8265 demo --out /shared/demo [section.key=value ...]
    python jobs/demo.py --out scenimefy-demo                  # one machine, local Ray

Arguments and checks: `scenimefy.commands.jobs_runner` (see jobs/README.md).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from scenimefy.commands.jobs_runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("demo"))
