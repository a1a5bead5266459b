import pytest

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
