"""Search spaces (tuning/*.yaml): `{config.key: {kind: [args]} | constant}` -> dimensions.

Pure: Ray is imported only when a dimension builds its Tune domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scenimefy.config import Config, ConfigError, set_value

THRESHOLD_KEYS = ("pairs.bce_threshold", "pairs.min_classes")  # filters over the stage-2 manifest

# kind -> number of arguments (None: a non-empty list of values)
SPACE_KINDS: dict[str, int | None] = {
    "uniform": 2,  # [low, high]
    "loguniform": 2,  # [low, high], low > 0
    "quniform": 3,  # [low, high, q]
    "qloguniform": 3,  # [low, high, q], low > 0
    "choice": None,  # [v1, v2, ...] sampled
    "grid": None,  # [v1, v2, ...] every value (tune.grid_search), times num_samples
}
TUNABLE_SECTIONS = ("translator",)
TUNABLE_KEYS = (
    "data.load_size",
    "data.crop_size",
    "data.flip",
    "data.pair_flip",
    *THRESHOLD_KEYS,
    "evaluate.bce_weight",  # changes the objective itself: trials are then not comparable (tests only)
)


@dataclass(frozen=True)
class Dimension:
    """One searched config key: `kind` is a key of SPACE_KINDS, or "fixed" (a constant override)."""

    key: str
    kind: str
    args: tuple

    @property
    def log_scale(self) -> bool:
        return self.kind in ("loguniform", "qloguniform")

    def domain(self) -> Any:
        """The Ray Tune search domain (or the constant)."""
        from ray import tune

        a = self.args
        if self.kind == "fixed":
            return a[0]
        if self.kind == "grid":
            return tune.grid_search(list(a))
        if self.kind == "choice":
            return tune.choice(list(a))
        return {
            "uniform": tune.uniform,
            "loguniform": tune.loguniform,
            "quniform": tune.quniform,
            "qloguniform": tune.qloguniform,
        }[self.kind](*a)

    def describe(self) -> str:
        return f"{self.kind}{list(self.args)}" if self.kind != "fixed" else repr(self.args[0])


def _is_tunable(key: str) -> bool:
    return key.split(".", 1)[0] in TUNABLE_SECTIONS or key in TUNABLE_KEYS


def parse_space(data: Any, source: str = "search space") -> list[Dimension]:
    """`{config.key: {kind: [args]} | constant}` -> dimensions; every error names the key and the fix."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            f"{source}: expected a mapping of config keys to {{kind: [args]}}, e.g. "
            "'translator.lambda_src: {loguniform: [0.01, 0.2]}'"
        )
    dims = []
    for key, spec in data.items():
        if isinstance(spec, list):
            raise ConfigError(f"{source}: {key}: a list needs a kind, e.g. {{choice: {spec}}} or {{grid: {spec}}}")
        scratch = Config()
        try:
            set_value(scratch, key, _sample_value(spec))
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        if not _is_tunable(key):
            raise ConfigError(
                f"{source}: {key!r} cannot be searched by a translator sweep; searchable keys: translator.*, "
                f"{', '.join(TUNABLE_KEYS)}"
            )
        dims.append(_dimension(key, spec, source, scratch))
    return dims


def _sample_value(spec: Any) -> Any:
    """A value of the dimension (to type-check it against the config field)."""
    if isinstance(spec, dict) and len(spec) == 1:
        ((kind, args),) = spec.items()
        if isinstance(args, list) and args:
            return args[0]
    return spec


def _dimension(key: str, spec: Any, source: str, scratch: Config) -> Dimension:
    if not isinstance(spec, dict):
        return Dimension(key, "fixed", (spec,))
    if len(spec) != 1:
        raise ConfigError(f"{source}: {key}: expected one kind ({', '.join(SPACE_KINDS)}), got {sorted(spec)}")
    ((kind, args),) = spec.items()
    if kind not in SPACE_KINDS:
        raise ConfigError(f"{source}: {key}: unknown kind {kind!r}; valid kinds: {', '.join(SPACE_KINDS)}")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{source}: {key}: {kind} needs a list of arguments, e.g. {{{kind}: [...]}}")
    n = SPACE_KINDS[kind]
    if n is None:
        for value in args:  # every value must fit the field
            set_value(scratch, key, value)
        return Dimension(key, kind, tuple(args))
    if len(args) != n or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in args):
        names = "[low, high]" if n == 2 else "[low, high, q]"
        raise ConfigError(f"{source}: {key}: {kind} takes {n} numbers {names}, got {args}")
    low, high = float(args[0]), float(args[1])
    if not low < high:
        raise ConfigError(f"{source}: {key}: {kind} needs low < high, got {args}")
    if kind in ("loguniform", "qloguniform") and low <= 0:
        raise ConfigError(f"{source}: {key}: {kind} needs low > 0, got {args}")
    if n == 3 and not float(args[2]) > 0:
        raise ConfigError(f"{source}: {key}: {kind} needs q > 0, got {args}")
    set_value(scratch, key, high)  # an int field must get integer bounds
    return Dimension(key, kind, tuple(float(v) for v in args))


def load_space(path: str) -> list[Dimension]:
    if not path:
        raise ConfigError("no search space: set tune.space=tuning/paper.yaml (or --space FILE); see tuning/README.md")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"tune.space={path!r}: no such file (search spaces live in tuning/*.yaml)")
    return parse_space(yaml.safe_load(file.read_text()), source=str(path))


def space_to_dict(dims: Sequence[Dimension]) -> dict:
    return {d.key: d.args[0] if d.kind == "fixed" else {d.kind: list(d.args)} for d in dims}
