"""Config validation: every bad input fails before any work, naming file, key and what is allowed."""

from pathlib import Path

import pytest
import yaml
from conftest import TINY_CONFIG

from robustbench_leak.config import ConfigError, load_config


def _load(tmp_path: Path, text: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path, load_config(path)


def _error(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return path, str(info.value)


def test_valid_config_resolves_presets_and_overrides(tmp_path):
    _, cfg = _load(tmp_path, TINY_CONFIG)
    assert [a.label for a in cfg.attacks] == ["clean", "deepfool", "spatial"]
    deepfool = cfg.attacks[1]
    assert (deepfool.kind, deepfool.engine, deepfool.n_samples) == ("deepfool", "native", 16)
    # preset values kept, overrides applied
    assert deepfool.params == {"max_iter": 10, "overshoot": 0.02, "nb_grads": 10, "batch_size": 16,
                               "stop_on": "returned", "keep_candidates": 2, "grad_strategy": "auto", "budget": None}
    assert cfg.attacks[2].params["mode"] == "global" and cfg.attacks[2].fit_samples == 16
    assert "fit_samples" not in deepfool.spec() and cfg.attacks[2].spec()["fit_samples"] == 16
    settings = cfg.training_for(cfg.run.models[0])
    assert (settings.epochs, settings.lr, settings.batch_size) == (3, 0.1, 32)


def test_per_model_training_override(tmp_path):
    text = TINY_CONFIG.replace("options: {n_layers: 3, width: 8, kernel_size: 3, window: none}",
                               "options: {n_layers: 3, width: 8, kernel_size: 3, window: none}\n"
                               "    training: {lr: 0.01, epochs: 1}")
    _, cfg = _load(tmp_path, text)
    assert (cfg.training_for(cfg.run.models[0]).lr, cfg.training_for(cfg.run.models[0]).epochs) == (0.01, 1)
    assert cfg.training_for(cfg.run.models[1]).lr == 0.1


def test_typo_in_top_level_key(tmp_path):
    path, msg = _error(tmp_path, TINY_CONFIG.replace("seeds: [0]", "seed: [0]"))
    assert str(path) in msg and "unknown key 'seed'" in msg and "seeds" in msg


def test_typo_in_training_key(tmp_path):
    path, msg = _error(tmp_path, TINY_CONFIG.replace("epochs: 3", "epoch: 3"))
    assert str(path) in msg and "training.epoch" in msg and "epochs" in msg


def test_typo_in_model_option(tmp_path):
    path, msg = _error(tmp_path, TINY_CONFIG.replace("width: 8, kernel_size: 3", "widht: 8, kernel_size: 3"))
    assert str(path) in msg and "models[0].options" in msg and "'widht'" in msg and "width" in msg


def test_unknown_model_name(tmp_path):
    path, msg = _error(tmp_path, TINY_CONFIG.replace("arch: tomen_cnn\n    options: {n_layers: 3, width: 8, "
                                                     "kernel_size: 7", "arch: tomen_cn\n    options: {n_layers: 3, "
                                                     "width: 8, kernel_size: 7"))
    assert "models[1].arch" in msg and "tomen_cn" in msg and "tomen_cnn" in msg


def test_unknown_timm_model(tmp_path):
    _, msg = _error(tmp_path, TINY_CONFIG.replace("arch: tomen_cnn\n    options: {n_layers: 3, width: 8, "
                                                  "kernel_size: 3, window: none}", "arch: timm:resnet1234"))
    assert "models[0].arch" in msg and "resnet1234" in msg


def test_bad_window_value(tmp_path):
    _, msg = _error(tmp_path, TINY_CONFIG.replace("window: hamming", "window: hammming"))
    assert "models[1].options" in msg and "hammming" in msg and "hamming" in msg


def test_unknown_dataset(tmp_path):
    _, msg = _error(tmp_path, TINY_CONFIG.replace("name: synthetic", "name: fashion_mnist"))
    assert "datasets[0].name" in msg and "fashion-mnist" in msg


def test_unknown_dataset_option(tmp_path):
    _, msg = _error(tmp_path, TINY_CONFIG.replace("n_train: 512", "n_trian: 512"))
    assert "datasets[0].n_trian" in msg and "n_train" in msg


def test_unknown_attack_preset(tmp_path):
    _, msg = _error(tmp_path, TINY_CONFIG.replace("preset: deepfool", "preset: deepfol"))
    assert "attacks[1].preset" in msg and "deepfol" in msg and "deepfool" in msg


def test_unknown_attack_param(tmp_path):
    _, msg = _error(tmp_path, TINY_CONFIG.replace("max_iter: 10", "max_iters: 10"))
    assert "attacks[1].params" in msg and "max_iters" in msg and "max_iter" in msg


def test_wrong_attack_param_type(tmp_path):
    _, msg = _error(tmp_path, TINY_CONFIG.replace("max_iter: 10", "max_iter: many"))
    assert "attacks[1].params" in msg and "max_iter" in msg and "int" in msg


def test_wrong_type(tmp_path):
    path, msg = _error(tmp_path, TINY_CONFIG.replace("epochs: 3", "epochs: two"))
    assert str(path) in msg and "training.epochs" in msg and "two" in msg


def test_fit_samples_only_for_fitted_attacks(tmp_path):
    _, msg = _error(tmp_path, TINY_CONFIG.replace("    n_samples: 16\n    params: {max_iter", "    n_samples: 16\n"
                                                  "    fit_samples: 5\n    params: {max_iter"))
    assert "attacks[1].fit_samples" in msg and "not fitted" in msg


def test_unknown_engine(tmp_path):
    _, msg = _error(tmp_path, TINY_CONFIG.replace("preset: deepfool", "preset: deepfool\n    engine: fast"))
    assert "attacks[1].engine" in msg and "fast" in msg and "art" in msg


def test_malformed_yaml(tmp_path):
    path, msg = _error(tmp_path, "name: x\nmodels: [\n")
    assert str(path) in msg and "malformed YAML" in msg


def test_not_a_mapping(tmp_path):
    _, msg = _error(tmp_path, "- just\n- a list\n")
    assert "mapping" in msg


def test_missing_required_key(tmp_path):
    _, msg = _error(tmp_path, "name: x\ndatasets: [{name: synthetic}]\n")
    assert "models" in msg and "required" in msg


def test_duplicate_model_names(tmp_path):
    _, msg = _error(tmp_path, TINY_CONFIG.replace("name: small-7x7-hamming", "name: small-3x3"))
    assert "small-3x3" in msg and "twice" in msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_repo_configs_are_valid(repo):
    """Every shipped config validates; the data files are checked too, so a config whose data is not on this
    machine (CIFAR, ImageNet: no download here) must fail on exactly that, in one line, before any work."""
    local_data = {"fashion-mnist", "fashion-mnist-14", "synthetic"}
    for path in sorted((repo / "configs").glob("*.yaml")):
        names = {d["name"] for d in yaml.safe_load(path.read_text())["datasets"]}
        if names <= local_data:
            cfg = load_config(path)
            assert cfg.run.models and cfg.attacks, path
            continue
        with pytest.raises(ConfigError) as info:
            load_config(path)
        msg = str(info.value)
        assert msg.startswith(f"{path}: datasets[0]: ") and "\n" not in msg, msg


def test_engine_switch(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(TINY_CONFIG)
    cfg = load_config(path, engine="art")
    assert [(a.kind, a.engine) for a in cfg.attacks] == [("clean", "torch"), ("deepfool", "art"), ("spatial", "art")]
    # the native spatial preset's global mode is ART's own; the switch says what it dropped
    assert "mode" not in cfg.attacks[2].params and "mode" in cfg.attacks[2].note
    # DeepFool's shared parameters mean the same in both engines; the native-only pruning is named as dropped
    assert "keep_candidates" in cfg.attacks[1].note and "keep_candidates" not in cfg.attacks[1].params
    worst = TINY_CONFIG.replace("    fit_samples: 16\n    params: {num_translations: 3, num_rotations: 3}",
                                "    params: {num_translations: 3, num_rotations: 3, mode: worst_of_grid}")
    path.write_text(worst)
    with pytest.raises(ConfigError, match="only the global mode"):
        load_config(path, engine="art")
    path.write_text(TINY_CONFIG)
    with pytest.raises(ConfigError, match="unknown engine"):
        load_config(path, engine="fast")


def test_key_neutral_params_leave_cell_keys_unchanged(tmp_path):
    """A parameter added later, at its neutral value, is left out of the cell spec, so stored cells stay valid;
    any other value is part of the key."""
    exact = TINY_CONFIG.replace("preset: deepfool\n", "preset: deepfool-exact\n")
    assert exact != TINY_CONFIG
    _, cfg = _load(tmp_path, exact)
    spec = cfg.attacks[1].spec()
    assert cfg.attacks[1].params["keep_candidates"] is None and "keep_candidates" not in spec["params"]
    _, pruned = _load(tmp_path, TINY_CONFIG)
    assert pruned.attacks[1].spec()["params"]["keep_candidates"] == 2


def test_attack_version_enters_only_revised_cells_keys():
    """``Attack.version`` is in a cell's spec only above 1: the published quickstart's cells (clean, deepfool,
    spatial) plan to the keys stored in its results, while the revised FMN and minnorm carry their version."""
    import sqlite3

    from robustbench_leak.attacks import list_attacks
    from robustbench_leak.run.plan import plan

    repo = Path(__file__).resolve().parent.parent
    _, evals = plan(load_config(repo / "configs" / "quickstart.yaml"))
    db = sqlite3.connect(repo / "results" / "quickstart" / "results.sqlite")
    try:
        stored = {key for (key,) in db.execute("SELECT cell_key FROM cells WHERE kind = 'eval'")}
    finally:
        db.close()
    assert evals and {e.key for e in evals} <= stored
    assert all("version" not in e.attack for e in evals)
    revised = {(cls.kind, cls.engine): cls.version for cls in list_attacks() if cls.version != 1}
    assert revised == {("fmn", "native"): 2, ("minnorm", "native"): 2}


def test_training_settings_are_derived_from_the_schema():
    """One source: the run's TrainSettings has exactly TrainingCfg's fields and defaults."""
    import dataclasses

    from robustbench_leak.config.training import TrainingCfg, TrainSettings

    fields = {f.name: f.default for f in dataclasses.fields(TrainSettings)}
    schema = {name: info.get_default(call_default_factory=True) for name, info in TrainingCfg.model_fields.items()}
    assert list(fields) == list(schema)
    assert fields == {k: tuple(v) if isinstance(v, list) else v for k, v in schema.items()}


def test_presets_and_configs_are_found_config_folder_then_working_directory_then_package(tmp_path, monkeypatch):
    from robustbench_leak.config import find_config, load_preset, preset_dirs, shipped_dir
    from robustbench_leak.config.errors import ConfigError

    (tmp_path / "proj" / "attacks").mkdir(parents=True)
    (tmp_path / "proj" / "attacks" / "deepfool.yaml").write_text("attack: deepfool\nparams: {max_iter: 7}\n")
    (tmp_path / "here" / "attacks").mkdir(parents=True)
    (tmp_path / "here" / "attacks" / "deepfool.yaml").write_text("attack: deepfool\nparams: {max_iter: 9}\n")
    (tmp_path / "here" / "attacks" / "clean.yaml").write_text("attack: clean\nparams: {batch_size: 9}\n")
    monkeypatch.chdir(tmp_path / "here")
    dirs = preset_dirs(tmp_path / "proj" / "mine.yaml", [])
    assert load_preset("deepfool", dirs)[1]["params"] == {"max_iter": 7}  # the config's folder first
    assert load_preset("clean", dirs)[1]["params"] == {"batch_size": 9}  # then the working directory
    assert load_preset("spatial", dirs)[0].parent == shipped_dir("attacks")  # then the package
    (tmp_path / "here" / "quickstart.yaml").write_text("name: mine\n")
    assert find_config("quickstart") == Path("quickstart.yaml")  # a file here shadows the shipped config
    assert find_config("quickstart-minnorm") == shipped_dir("configs") / "quickstart-minnorm.yaml"
    with pytest.raises(ConfigError, match="did you mean 'quickstart'"):
        find_config("quickstrat")


TINY_MODEL = "arch: tomen_cnn\n    options: {n_layers: 3, width: 8, kernel_size: 3, window: none}"


@pytest.mark.parametrize("arch, expected", [
    # a value only a forward pass checks (nn.Dropout(7) builds)
    ("arch: timm:resnet18\n    options: {timm_kwargs: {drop_rate: 7}}", "dropout probability"),
    # an input the architecture cannot take
    ("arch: timm:vit_tiny_patch16_224", "doesn't match model (224)"),
    # NaN nested in a free-form option passes every range check of the code it reaches
    ("arch: timm:resnet18\n    options: {timm_kwargs: {drop_rate: .nan}}", "timm_kwargs.drop_rate: Input should be a finite"),
    # a key with a dot in it is named as written, not looked up piece by piece
    ("arch: timm:resnet18\n    options: {timm_kwargs: {'a.b': [1, .inf]}}", "timm_kwargs.a.b.1: Input should be a finite"),
])
def test_a_model_that_cannot_run_on_the_data_fails_before_any_work(tmp_path, arch, expected):
    assert TINY_MODEL in TINY_CONFIG
    _, msg = _error(tmp_path, TINY_CONFIG.replace(TINY_MODEL, arch))
    assert "models[0]" in msg and expected in msg and "\n" not in msg


def test_a_model_sized_for_the_data_passes_the_forward_check(tmp_path):
    _, config = _load(tmp_path, TINY_CONFIG.replace(
        TINY_MODEL, "arch: timm:vit_tiny_patch16_224\n    options: {timm_kwargs: {img_size: 28, patch_size: 4}}"))
    assert config.run.models[0].arch == "timm:vit_tiny_patch16_224"
