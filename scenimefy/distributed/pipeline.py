"""`scenimefy pipeline`: stages 0 -> 1 -> 2 -> 3 from one config, each stage's outputs feeding the next.

    pretrain --G_s--> finetune --G_t--> pairs --selected/--> train --> generator.pt
        |                                 ^
        +---------------G_s---------------+

Wiring: stage 0's snapshot is stage 1's `finetune.source_checkpoint` and stage 2's
`pairs.source_checkpoint`; stage 1's snapshot is stage 2's `pairs.target_checkpoint`; stage 2's
selected pairs are stage 3's `data.pairs`. A stage whose output the config already gives (e.g.
`pairs.source_checkpoint=lhq-220000.pt`, the authors' G_s) is not run, nor is a stage only it
needed. `pipeline.stages` (or `--stages`) names the stages to run explicitly instead.

Completion records: when a stage finishes, `<output_dir>/<run.name>/pipeline/<stage>.yaml`
records its outputs, the config it ran with (inputs wired) and a digest of each input. On a
rerun, a stage whose record exists, whose outputs exist and whose settings and inputs are
unchanged is skipped (its settings: the config fields marked `affects="results"` among those it
reads, STAGE_READS). Changed settings are an error naming the keys: start a new `run.name`,
or pass `rerun` for that stage to run its driver again on this run. A stage without a record
(never run, or interrupted) runs its driver, which resumes from its latest checkpoint by run
name.

MLflow: one parent run `<run.name>-pipeline` (the same one on every rerun); each stage's run
is its child; the records are logged to the parent as artifacts under `pipeline/`.

No Ray here: the drivers in `scenimefy.distributed` start or join it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from scenimefy.config import Config, ConfigError, current_key, flatten, results_keys, set_value, to_dict

PRETRAIN, FINETUNE, PAIRS, TRAIN = "pretrain", "finetune", "pairs", "train"
STAGES = (PRETRAIN, FINETUNE, PAIRS, TRAIN)  # in pipeline order
RECORDS_DIR = "pipeline"  # under the run directory

# What flows between stages: each stage makes one artifact and reads those of earlier stages.
G_S, G_T, PAIRS_DIR, GENERATOR = "G_s", "G_t", "pairs", "generator"
PRODUCES = {PRETRAIN: G_S, FINETUNE: G_T, PAIRS: PAIRS_DIR, TRAIN: GENERATOR}
CONSUMES = {PRETRAIN: {}, FINETUNE: {G_S: "finetune.source_checkpoint"},
            PAIRS: {G_S: "pairs.source_checkpoint", G_T: "pairs.target_checkpoint"},
            TRAIN: {PAIRS_DIR: "data.pairs"}}  # fmt: skip
GIVEN_BY = {
    G_S: ("finetune.source_checkpoint", "pairs.source_checkpoint"),
    G_T: ("pairs.target_checkpoint",),
    PAIRS_DIR: ("data.pairs",),
}

# What each stage reads: whole config sections, or single keys of the sections stages share. A
# stage's settings are the fields among these that config.py marks `affects="results"` (they
# change what the stage makes); `execution` fields (intervals, workers' resources, compilation,
# logging) may change between runs without refusing a finished stage.
STAGE_READS = {
    PRETRAIN: ("run", "stylegan", "pretrain", "data.photos"),
    FINETUNE: ("run", "stylegan", "finetune", "data.anime", "priors.clip_model", "priors.clip_pretrained",
               "priors.lpips_net", "priors.lpips_weights", "priors.vgg16_weights"),
    PAIRS: ("pairs", "priors.mask2former"),
    TRAIN: ("run", "translator", "data"),
}  # fmt: skip


# ----------------------------------------------------------------------------------------
# Paths a stage leaves (the drivers' own layout)


def artifact_path(cfg: Config, artifact: str) -> Path:
    """Where this run's stage leaves an artifact."""
    from scenimefy.distributed.cluster import run_dir_of
    from scenimefy.distributed.pairs import pairs_dir_of
    from scenimefy.distributed.stylegan import snapshot_path_of

    if artifact == G_S:
        return snapshot_path_of(cfg, PRETRAIN)
    if artifact == G_T:
        return snapshot_path_of(cfg, FINETUNE)
    if artifact == PAIRS_DIR:
        return pairs_dir_of(cfg)
    return run_dir_of(cfg) / "generator.pt"


def stage_outputs(cfg: Config, stage: str) -> dict[str, str]:
    """The files and folders a finished stage leaves; all must exist for it to be skipped."""
    outputs = {PRODUCES[stage]: str(artifact_path(cfg, PRODUCES[stage]))}
    if stage == PAIRS:
        from scenimefy.distributed.pairs import stage_dir_of
        from scenimefy.stages.pair_manifest import MANIFEST_FILE

        outputs["manifest"] = str(stage_dir_of(cfg) / MANIFEST_FILE)
    return outputs


def records_dir_of(cfg: Config) -> Path:
    from scenimefy.distributed.cluster import run_dir_of

    return run_dir_of(cfg) / RECORDS_DIR


def record_path_of(cfg: Config, stage: str) -> Path:
    return records_dir_of(cfg) / f"{stage}.yaml"


# ----------------------------------------------------------------------------------------
# The plan: which stages run, and each one's config with its inputs wired


@dataclass
class StagePlan:
    """One stage to run (or skip if finished): its config with the inputs wired in."""

    stage: str
    cfg: Config
    inputs: dict[str, str]  # config key -> file or folder it reads (an earlier stage's output, or given)
    outputs: dict[str, str]  # artifact -> file or folder it leaves


@dataclass
class PipelinePlan:
    stages: list[StagePlan]  # in pipeline order
    given: dict[str, str]  # artifact -> path the config supplies (its stage is not run)
    earlier: dict[str, str]  # artifact -> this run's output of a stage not selected now (an earlier run)

    def describe(self) -> list[str]:
        """One line per stage of STAGES: planned (run, or skipped if finished) or not; where its inputs come from."""
        planned = {p.stage: p for p in self.stages}
        lines = []
        for stage in STAGES:
            made = PRODUCES[stage]
            if stage in planned:
                p = planned[stage]
                reads = ", ".join(f"{k}={v}" for k, v in p.inputs.items()) or "its data folder"
                lines.append(f"{stage}: planned (reads {reads}; leaves {made} at {p.outputs[made]})")
            elif made in self.given:
                lines.append(f"{stage}: not run, {made} given ({self.given[made]})")
            elif made in self.earlier:
                lines.append(f"{stage}: not run, {made} from an earlier run ({self.earlier[made]})")
            else:
                lines.append(f"{stage}: not run (not needed)")
        return lines


def parse_stage_list(value: str) -> list[str]:
    """`--stages` / `--rerun` values: comma-separated stage names, blanks ignored."""
    return [s.strip() for s in value.split(",") if s.strip()]


def given_artifacts(cfg: Config) -> dict[str, str]:
    """Artifacts the config supplies: G_s (either source key), G_t and the pairs folder."""
    flat = flatten(cfg)
    given = {}
    for artifact, keys in GIVEN_BY.items():
        values = {k: flat[k] for k in keys if flat[k]}
        if len(set(values.values())) > 1:
            detail = " and ".join(f"{k}={v}" for k, v in values.items())
            raise ConfigError(
                f"{detail} name different files, but G_s is one generator for stages 1 and 2: set only one of them"
            )
        if values:
            given[artifact] = next(iter(values.values()))
    return given


def selected_stages(cfg: Config, given: dict[str, str]) -> list[str]:
    """`pipeline.stages` in pipeline order; if empty, every stage the translator needs and the config does not give."""
    if cfg.pipeline.stages:
        unknown = [s for s in cfg.pipeline.stages if s not in STAGES]
        if unknown:
            raise ConfigError(
                f"pipeline.stages: unknown stage(s) {', '.join(unknown)}; valid stages: {', '.join(STAGES)}"
            )
        chosen = [s for s in STAGES if s in cfg.pipeline.stages]
        for stage in chosen:
            if PRODUCES[stage] in given:
                keys = " / ".join(k for k in GIVEN_BY[PRODUCES[stage]] if flatten(cfg)[k])
                raise ConfigError(
                    f"pipeline.stages includes {stage}, but its output {PRODUCES[stage]} is given "
                    f"({keys}={given[PRODUCES[stage]]}): drop {stage} from the stages or clear {keys}"
                )
        return chosen
    needed, chosen = {GENERATOR}, []
    for stage in reversed(STAGES):
        if PRODUCES[stage] in needed and PRODUCES[stage] not in given:
            chosen.insert(0, stage)
            needed |= set(CONSUMES[stage])
    return chosen


def plan_pipeline(cfg: Config) -> PipelinePlan:
    """Which stages run and what each reads; a missing input is a ConfigError naming the fix."""
    given = given_artifacts(cfg)
    chosen = selected_stages(cfg, given)
    earlier: dict[str, str] = {}
    plans = []
    for stage in chosen:
        stage_cfg = copy.deepcopy(cfg)
        inputs = {}
        for artifact, key in CONSUMES[stage].items():
            producer = next(s for s, a in PRODUCES.items() if a == artifact)
            if artifact in given:
                path = given[artifact]
            else:
                path = str(artifact_path(cfg, artifact))
                if producer not in chosen:
                    if not os.path.exists(path):
                        options = " or ".join(GIVEN_BY[artifact])
                        raise ConfigError(
                            f"stage {stage} needs {artifact}, which no stage of this run makes "
                            f"({path} does not exist): set {options}, or add {producer} to pipeline.stages"
                        )
                    earlier[artifact] = path
            set_value(stage_cfg, key, path)
            inputs[key] = path
        plans.append(StagePlan(stage, stage_cfg, inputs, stage_outputs(cfg, stage)))
    return PipelinePlan(plans, given, earlier)


# ----------------------------------------------------------------------------------------
# Completion records


def settings_keys(stage: str) -> list[str]:
    """The flat config keys the stage's outputs depend on: the results fields of what it reads."""
    return results_keys(STAGE_READS[stage])


def stage_settings(cfg: Config | dict, stage: str) -> dict[str, Any]:
    """The stage's settings, as YAML stores them (a Config, or its dict as a record holds it).

    A record's dict may use a key's name from before a rename: it is read under its new name.
    """
    flat = {current_key(k): v for k, v in flatten(cfg).items()}
    picked = {k: flat[k] for k in settings_keys(stage) if k in flat}
    return yaml.safe_load(yaml.safe_dump(picked))


def digest(path: str | os.PathLike) -> str:
    """Content digest of an input: SHA-256 of a file, or of a folder's listing (names and sizes)."""
    from scenimefy.stages.pairs import file_digest

    path = Path(path)
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        return "missing"
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{file.relative_to(path)}\0{file.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def write_record(plan: StagePlan, *, seconds: float, facts: dict[str, Any]) -> Path:
    """Atomically write `<run dir>/pipeline/<stage>.yaml` for a finished stage."""
    from scenimefy.data.images import atomic_path

    record = {
        "stage": plan.stage,
        "run_name": plan.cfg.run.name,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(seconds, 1),
        "outputs": dict(plan.outputs),
        "inputs": {key: {"path": path, "digest": digest(path)} for key, path in plan.inputs.items()},
        "facts": facts,  # from the driver: MLflow run id, steps, pair counts, checkpoint
        "config": to_dict(plan.cfg),
    }
    path = record_path_of(plan.cfg, plan.stage)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(record, sort_keys=False))
    return path


def read_record(cfg: Config, stage: str) -> dict[str, Any] | None:
    path = record_path_of(cfg, stage)
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else None


def settings_diff(plan: StagePlan, record: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every setting that differs from the record's config.

    A key the record does not hold (a field added since) is not a difference.
    """
    old = stage_settings(record.get("config") or {}, plan.stage)
    new = stage_settings(plan.cfg, plan.stage)
    return [f"{k}: {old[k]!r} -> {v!r}" for k, v in new.items() if k in old and old[k] != v]


def inputs_diff(plan: StagePlan, record: dict[str, Any]) -> list[str]:
    """`key: contents changed` for every input whose digest differs from the record's."""
    recorded = record.get("inputs") or {}
    changed = []
    for key, path in plan.inputs.items():
        before = (recorded.get(key) or {}).get("digest")
        if before is not None and before != digest(path):
            changed.append(f"{key}: contents of {path} changed since")
    return changed


@dataclass
class StageStatus:
    action: str  # "skip" | "run"
    why: str


def stage_status(plan: StagePlan, *, rerun: bool, check_inputs: bool = True) -> StageStatus:
    """Skip a finished, unchanged stage; run one without a record; refuse a changed one (unless rerun)."""
    record = read_record(plan.cfg, plan.stage)
    where = record_path_of(plan.cfg, plan.stage)
    if rerun:
        return StageStatus("run", "--rerun: its driver runs again and resumes from its last checkpoint")
    if record is None:
        return StageStatus(
            "run", "no completion record (first run, or interrupted: its driver resumes from its last checkpoint)"
        )
    diff = settings_diff(plan, record) + (inputs_diff(plan, record) if check_inputs else [])
    if diff:
        raise ValueError(
            f"stage {plan.stage} of run {plan.cfg.run.name!r} finished with other settings "
            f"({'; '.join(diff)}; record {where}). "
            f"Start over under a new run.name=..., or pass --rerun {plan.stage} to run its driver again on this run "
            "(it resumes from its last checkpoint: a longer schedule continues, "
            "pairs are re-selected at a new threshold)"
        )
    missing = [f"{name} {path}" for name, path in plan.outputs.items() if not os.path.exists(path)]
    if missing:
        return StageStatus(
            "run", f"finished earlier but outputs are missing ({', '.join(missing)}): its driver runs again"
        )
    return StageStatus("skip", f"finished earlier with the same settings (record {where})")


# ----------------------------------------------------------------------------------------
# Running the stages


def _driver(stage: str) -> Callable[..., Any]:
    """The stage's Ray driver (looked up on each call, so tests can replace it)."""
    from scenimefy.distributed import pairs, stylegan, translator

    drivers = {
        PRETRAIN: stylegan.pretrain_on_ray,
        FINETUNE: stylegan.finetune_on_ray,
        PAIRS: pairs.generate_and_select_on_ray,
        TRAIN: translator.train_translator_on_ray,
    }
    return drivers[stage]


def _facts(outcome: Any) -> dict[str, Any]:
    """The scalar fields of a driver's outcome (paths, steps, counts, MLflow run id) for the record."""
    items = (
        dataclasses.asdict(outcome)
        if dataclasses.is_dataclass(outcome)
        else outcome
        if isinstance(outcome, dict)
        else {}
    ).items()
    return {k: v for k, v in items if isinstance(v, (str, int, float, bool)) or v is None}


def preflight_stage(plan: StagePlan) -> None:
    """Checks that fail in seconds (data folders, priors, stage-2 settings) before any stage runs."""
    from scenimefy.distributed import pairs, stylegan
    from scenimefy.distributed.data import list_images

    cfg = plan.cfg
    if plan.stage == PRETRAIN:
        stylegan.preflight(cfg, PRETRAIN)
    elif plan.stage == FINETUNE:
        list_images(stylegan.anime_of(cfg), what="anime")
        stylegan.check_priors(cfg)
    elif plan.stage == PAIRS:
        from scenimefy.priors.loading import resolve_mask2former

        pairs.validate_pairs_config(cfg)
        resolve_mask2former(cfg.priors)
    else:
        list_images(cfg.data.photos, what="photos")
        list_images(cfg.data.anime, what="anime")


def _cpus_needed(plans: Sequence[StagePlan]) -> float:
    """Logical CPUs a local Ray needs so that every planned stage fits (Train workers + Data tasks)."""
    needs = [1.0]
    for p in plans:
        r = p.cfg.run
        needs.append(
            p.cfg.pairs.generator_actors + p.cfg.pairs.segmenter_actors + 1
            if p.stage == PAIRS
            else r.num_workers * r.cpus_per_worker + 1
        )
    return max(needs)


@dataclass
class StageResult:
    stage: str
    action: str  # "ran" | "skipped"
    why: str
    seconds: float
    record: str
    outputs: dict[str, str]
    resumed_from_step: int | None = None  # a stage that ran on from its latest checkpoint


@dataclass
class PipelineOutcome:
    run_dir: str
    stages: list[StageResult]
    given: dict[str, str]
    generator: str  # stage 3's snapshot (empty when train was not among the stages)
    mlflow_run_id: str  # the parent run
    tracking_uri: str
    outputs: dict[str, str] = field(default_factory=dict)  # every artifact this run has: given, earlier or made


def _print(line: str) -> None:
    print(line, flush=True)


def run_pipeline(cfg: Config, *, rerun: Sequence[str] = (), log: Callable[[str], None] = _print) -> PipelineOutcome:
    """Run the planned stages in order, skipping finished ones; one MLflow parent run."""
    from scenimefy.distributed.cluster import run_dir_of
    from scenimefy.distributed.tracking import MlflowTracker, find_or_create_run, resolve_tracking_uri

    plan = plan_pipeline(cfg)
    planned = [p.stage for p in plan.stages]
    unknown = [s for s in rerun if s not in planned]
    if unknown:
        raise ConfigError(
            f"--rerun {','.join(unknown)}: not a stage of this pipeline run (stages: {', '.join(planned) or 'none'})"
        )

    # Decide before anything runs: a changed finished stage fails now, not after hours of stage 0.
    statuses = {p.stage: stage_status(p, rerun=p.stage in rerun, check_inputs=False) for p in plan.stages}
    for p in plan.stages:
        if statuses[p.stage].action == "run":
            preflight_stage(p)

    # One MLflow parent run for the whole pipeline, reused on every rerun.
    run_dir = run_dir_of(cfg)
    tracking_uri = resolve_tracking_uri(cfg.run.mlflow_tracking_uri, run_dir)
    parent_id = find_or_create_run(tracking_uri, cfg.run.mlflow_experiment, f"{cfg.run.name}-pipeline", flatten(cfg))
    tracker = MlflowTracker(tracking_uri, parent_id, spill_dir=run_dir)
    tracker.log_text("\n".join(plan.describe()) + "\n", "pipeline_plan.txt")
    for line in plan.describe():
        log(f"[pipeline] plan: {line}")

    results: list[StageResult] = []
    from scenimefy.distributed import cluster

    try:
        for p in plan.stages:
            status = stage_status(p, rerun=p.stage in rerun)  # now with input digests: earlier stages may have run
            if status.action == "skip":
                log(f"[pipeline] {p.stage}: skipped, {status.why}")
                record = record_path_of(p.cfg, p.stage)
                results.append(StageResult(p.stage, "skipped", status.why, 0.0, str(record), p.outputs))
            else:
                log(f"[pipeline] {p.stage}: running, {status.why}")
                # A local Ray sized for every stage to run (a no-op once started, or on a cluster).
                cluster.init_ray(
                    num_cpus_needed=_cpus_needed([q for q in plan.stages if statuses[q.stage].action == "run"])
                )
                began = time.perf_counter()
                outcome = _driver(p.stage)(p.cfg, parent_run_id=parent_id)
                seconds = time.perf_counter() - began
                missing = [path for path in p.outputs.values() if not os.path.exists(path)]
                if missing:
                    raise RuntimeError(f"{p.stage} finished without {missing}")
                record = write_record(p, seconds=seconds, facts=_facts(outcome))
                tracker.log_metrics({f"pipeline/{p.stage}_seconds": seconds}, step=0)
                log(f"[pipeline] {p.stage}: finished in {seconds:.0f} s; record {record}")
                resumed = getattr(outcome, "resumed_from_step", None)
                results.append(StageResult(p.stage, "ran", status.why, seconds, str(record), p.outputs, resumed))
            tracker.log_artifact(results[-1].record, RECORDS_DIR)
    except BaseException as e:
        tracker.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    tracker.finish("FINISHED")

    outputs = {**plan.given, **plan.earlier, **{a: path for p in plan.stages for a, path in p.outputs.items()}}
    return PipelineOutcome(
        run_dir=str(run_dir),
        stages=results,
        given=plan.given,
        generator=outputs.get(GENERATOR, ""),
        mlflow_run_id=parent_id,
        tracking_uri=tracking_uri,
        outputs=outputs,
    )
