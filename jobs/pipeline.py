"""`python jobs/pipeline.py ARGS` is `scenimefy pipeline ARGS`: the same parser and code (see jobs/README.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from scenimefy.commands.jobs_runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("pipeline"))
