import math
import typing

import pytest
import yaml

from scenimefy.config import Config, ConfigError, flatten, from_dict, load_config, preset_names, to_dict


def test_presets_ship_in_the_package():
    assert {"paper", "rtx3090", "tiny"} <= set(preset_names())


def test_defaults_are_the_papers_hyperparameters():
    t = Config().translator
    assert (t.lambda_gan, t.lambda_gan_p, t.lambda_style, t.lambda_src, t.lambda_hdce) == (1.0, 1.0, 0.05, 0.05, 0.1)
    assert (t.lr, t.beta1, t.beta2, t.n_epochs, t.n_epochs_decay) == (2e-4, 0.5, 0.999, 10, 10)
    assert t.nce_layers == (0, 4, 8, 12, 16) and t.num_patches == 256 and t.nce_tau == 0.07


def test_overrides_are_typed():
    cfg = load_config(
        "tiny", ["translator.lambda_src=0.1", "run.use_gpu=false", "translator.nce_layers=0,4,8", "run.num_workers=3"]
    )
    assert cfg.translator.lambda_src == 0.1
    assert cfg.run.use_gpu is False
    assert cfg.translator.nce_layers == (0, 4, 8)
    assert cfg.run.num_workers == 3
    assert cfg.data.load_size == 64  # from the preset


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown config key 'translator.lambda_scr'.*translator.lambda_src"):
        load_config(None, ["translator.lambda_scr=0.1"])
    with pytest.raises(ConfigError, match=r"no 'trainer' in top level.*translator"):
        load_config(None, ["trainer.lr=0.1"])


@pytest.mark.parametrize("value", ["yes", "2", "on"])
def test_booleans_accept_only_true_false_1_0(value):
    with pytest.raises(ConfigError, match="run.use_gpu: expected a boolean"):
        load_config(None, [f"run.use_gpu={value}"])


def test_bool_flag_can_be_turned_off():
    # the authors' `type=bool` flag could not be turned off
    assert load_config(None, ["translator.lambda_sup_decay=0"]).translator.lambda_sup_decay is False
    assert load_config(None, ["translator.lambda_sup_decay=false"]).translator.lambda_sup_decay is False


def test_type_errors_name_key_and_type():
    with pytest.raises(ConfigError, match="translator.lr: expected a number, got 'fast'"):
        load_config(None, ["translator.lr=fast"])
    with pytest.raises(ConfigError, match="run.num_workers: expected an integer"):
        load_config(None, ["run.num_workers=1.5"])


def test_invalid_choice_and_cross_field_checks():
    with pytest.raises(ConfigError, match="precision='fp8'.*bf16"):
        load_config(None, ["translator.precision=fp8"])
    with pytest.raises(ConfigError, match="compile_mode='fast'.*reduce-overhead"):
        load_config(None, ["translator.compile_mode=fast"])
    assert load_config(None, ["translator.compile_mode=reduce-overhead"]).translator.compile_mode == "reduce-overhead"
    with pytest.raises(ConfigError, match="crop_size=300 exceeds"):
        load_config(None, ["data.crop_size=300"])


def test_malformed_override_and_unknown_preset():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["translator.lr"])
    with pytest.raises(ConfigError, match="unknown preset 'papr'.*paper"):
        load_config("papr")


def test_yaml_file_and_round_trip(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("translator:\n  lambda_hdce: 0.2\nrun:\n  name: x\n")
    cfg = load_config(str(path))
    assert cfg.translator.lambda_hdce == 0.2 and cfg.run.name == "x"
    assert from_dict(to_dict(cfg)) == cfg
    assert flatten(cfg)["translator.lambda_hdce"] == 0.2


def test_yaml_section_typo_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("translator:\n  lamda_style: 0.2\n")
    with pytest.raises(ConfigError, match="translator.lamda_style"):
        load_config(str(path))


# ----------------------------------------------------------------------------------------
# Field metadata: doc, affects, unit, valid range / choices


def test_every_field_declares_doc_affects_and_valid_values():
    from scenimefy.config import AFFECTS, field_infos

    infos = field_infos()
    assert set(infos) == set(flatten(Config()))  # every value field, no section missed
    for key, info in infos.items():
        assert info.doc and info.affects in AFFECTS, key
        elem = typing.get_args(info.type)[0] if typing.get_origin(info.type) is tuple else info.type
        if elem in (int, float):
            assert info.valid is not None or info.choices, f"{key}: a number needs a range or choices"
        info.check(getattr(getattr(Config(), key.split(".")[0]), key.split(".")[1]))  # the defaults are valid


def _numeric_keys():
    from scenimefy.config import field_infos

    out = []
    for key, info in field_infos().items():
        elem = typing.get_args(info.type)[0] if typing.get_origin(info.type) is tuple else info.type
        if elem in (int, float):
            out.append(key)
    return out


@pytest.mark.parametrize("key", _numeric_keys())
def test_bad_numbers_are_refused_or_documented_valid(key):
    """0, negatives, NaN and infinities: a ConfigError naming the key, or a value the field's range documents."""
    from scenimefy.config import field_infos

    info = field_infos()[key]
    for bad in ("0", "-1", "-0.5", "nan", "inf", "-inf"):
        try:
            cfg = load_config(None, [f"{key}={bad}"])
        except ConfigError as e:
            assert key in str(e) and "\n" not in str(e)
            continue
        value = flatten(cfg)[key]
        for v in value if isinstance(value, list) else [value]:
            assert math.isfinite(v), f"{key}={bad} accepted"
            assert (info.valid is not None and v in info.valid) or v in info.choices, f"{key}={bad} accepted"
            if v == 0 and info.valid is not None and info.valid.zero:
                assert f"0: {info.valid.zero}" in info.doc, f"{key}: 0 means {info.valid.zero}: say so in the doc"


def test_range_errors_name_key_value_and_range():
    with pytest.raises(ConfigError, match=r"^translator.lr=-1.0: need > 0$"):
        load_config(None, ["translator.lr=-1"])
    with pytest.raises(ConfigError, match=r"^translator.lr=nan: need a finite number > 0$"):
        load_config(None, ["translator.lr=nan"])
    with pytest.raises(ConfigError, match=r"^pairs.bce_threshold=inf: need a finite number > 0$"):
        load_config(None, ["pairs.bce_threshold=inf"])
    with pytest.raises(ConfigError, match=r"^pretrain.beta2=1.0: need 0 <= beta2 < 1$"):
        load_config(None, ["pretrain.beta2=1"])
    with pytest.raises(ConfigError, match=r"^pairs.truncation=0.0: need 0 < psi <= 1$"):
        load_config(None, ["pairs.truncation=0"])
    with pytest.raises(ConfigError, match=r"^finetune.sample_every_steps=-5: need >= 1, or 0 \(off\)$"):
        load_config(None, ["finetune.sample_every_steps=-5"])
    with pytest.raises(ConfigError, match=r"^translator.log_every_steps=0: need >= 1$"):
        load_config(None, ["translator.log_every_steps=0"])  # `step % 0`: no "off" for the translator's log
    with pytest.raises(ConfigError, match=r"^translator.nce_layers=-4: need >= 0$"):
        load_config(None, ["translator.nce_layers=0,-4"])
    with pytest.raises(ConfigError, match=r"^stylegan.size=48: expected one of \[32, 64, 128, 256, 512, 1024\]$"):
        load_config(None, ["stylegan.size=48"])
    with pytest.raises(ConfigError, match=r"translator.n_epochs=0 \+ translator.n_epochs_decay=0: need at least 1"):
        load_config(None, ["translator.n_epochs=0", "translator.n_epochs_decay=0"])


@pytest.mark.parametrize(
    "override",
    [
        "translator.sample_every_steps=0",  # off
        "translator.steps_per_epoch=0",  # the authors' epoch
        "translator.max_steps=0",  # all epochs
        "finetune.log_every_steps=0",  # off
        "finetune.checkpoint_every_steps=0",  # only at the end
        "pretrain.log_every_kimg=0",  # off
        "pretrain.r1_gamma=0",  # off
        "pairs.num_candidates=0",  # stream until target_kept
        "pairs.max_candidates=0",  # no limit
        "evaluate.every_epochs=0",  # off
        "evaluate.max_images=0",  # all
        "translate.tile=0",  # whole image
        "translate.max_side=0",  # keep size
        "translate.memory_budget_gib=0",  # 70 % of the free memory
        "run.torch_threads=0",  # torch's default
        "tune.max_concurrent_trials=0",  # as many as fit
        "translator.lambda_style=0",  # a loss term off
        "translator.n_epochs_decay=0",
    ],
)
def test_documented_zeros_stay_valid(override):
    key, _, _ = override.partition("=")
    assert flatten(load_config(None, [override]))[key] == 0


def test_from_dict_validates_too():
    data = to_dict(Config())
    data["pretrain"]["mixing_prob"] = 1.5
    with pytest.raises(ConfigError, match=r"pretrain.mixing_prob=1.5: need 0 <= mixing_prob <= 1"):
        from_dict(data)


def test_every_preset_passes_validation():
    for name in preset_names():
        load_config(name)


def test_affects_marks_results_and_execution_fields():
    from scenimefy.config import EXECUTION, RESULTS, field_infos

    infos = field_infos()
    for key in ("translator.compile", "translator.compile_mode", "translator.channels_last", "run.use_gpu",
                "translator.log_every_steps", "finetune.checkpoint_every_steps", "pretrain.sample_every_kimg",
                "pairs.chunk_size", "pairs.batch_size", "run.cpus_per_worker", "run.mlflow_tracking_uri",
                "data.cache_dir", "translator.keep_checkpoints"):  # fmt: skip
        assert infos[key].affects == EXECUTION, key
    for key in ("translator.lr", "translator.precision", "run.seed", "run.num_workers", "data.load_size",
                "pretrain.total_kimg", "pairs.bce_threshold", "pairs.precision", "finetune.lambda_patch",
                "stylegan.size", "data.pairs", "finetune.source_checkpoint"):  # fmt: skip
        assert infos[key].affects == RESULTS, key


# ----------------------------------------------------------------------------------------
# Renamed keys


def test_saved_configs_with_renamed_keys_still_load(tmp_path):
    from scenimefy.config import RENAMED_KEYS, field_infos

    assert RENAMED_KEYS  # a closed list: each old name is gone, each new name a field
    for old, new in RENAMED_KEYS.items():
        assert old not in field_infos() and new in field_infos()
    saved = to_dict(Config())
    for name in ("log_every_steps", "sample_every_steps", "checkpoint_every_steps"):
        del saved["finetune"][name]
    saved["finetune"].update({"log_every": 7, "sample_every": 70, "checkpoint_every": 700})
    cfg = from_dict(saved)
    f = cfg.finetune
    assert (f.log_every_steps, f.sample_every_steps, f.checkpoint_every_steps) == (7, 70, 700)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved))
    assert load_config(str(path)).finetune.sample_every_steps == 70
    with pytest.raises(ConfigError, match="unknown config key 'finetune.log_every'"):
        load_config(None, ["finetune.log_every=3"])  # overrides use the current names
