import pathlib
import textwrap

import pytest

from infdiff.train.config import ConfigError, load_config_file, override, parse_config_flags

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def test_every_shipped_config_loads_and_is_locked():
    for path in sorted(CONFIGS.glob("*_config.py")):
        config = load_config_file(path)
        with pytest.raises(AttributeError):
            config.not_a_section = 1
        assert {"run", "train", "model", "diffusion", "optimizer"} <= set(config.keys()), path


def test_overrides_parse_types_and_follow_field_references():
    configs, rest = parse_config_flags(
        ["--config", f"{CONFIGS}/ffhq_256_config.py", "--config.data.img_size=128", "--config.train.batch_size", "8",
         "--config.model.uno_mults=(1,2,4)", "--config.optimizer.learning_rate=1e-3",
         "--config.data.random_flip=false", "--config.run.experiment=x", "--other", "1"])
    c = configs["config"]
    assert (c.data.img_size, c.train.batch_size, c.model.uno_mults) == (128, 8, (1, 2, 4))
    assert c.optimizer.learning_rate == 1e-3 and c.data.random_flip is False and c.run.experiment == "x"
    assert c.mc_integral.q_sample == 128 * 128 // 4 and c.model.uno_res == 64
    assert rest == ["--other", "1"]


def test_two_configs_side_by_side():
    configs, _ = parse_config_flags(
        ["--config", f"{CONFIGS}/ffhq_latent_config.py", "--decoder_config", f"{CONFIGS}/ffhq_256_config.py",
         "--decoder_config.run.experiment=ae", "--config.run.experiment=latent"],
        names=("config", "decoder_config"))
    assert configs["config"].run.experiment == "latent" and configs["decoder_config"].run.experiment == "ae"


@pytest.mark.parametrize("flag,message", [
    ("--config.train.batchsize=3", "no such key.*did you mean --config.train.batch_size"),
    ("--config.trainn.batch_size=3", "no such key"),
    ("--config.train.batch_size=three", "expected a int"),
    ("--config.data.random_flip=maybe", "expected a boolean"),
    ("--config.model=3", "is a section"),
    ("--config.model.uno_mults=5", "expected a tuple"),
])
def test_bad_overrides_are_clear_errors(flag, message):
    with pytest.raises(ConfigError, match=message):
        parse_config_flags(["--config", f"{CONFIGS}/ffhq_256_config.py", flag])


def test_missing_or_broken_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "nope.py")
    broken = tmp_path / "broken.py"
    broken.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="get_config"):
        load_config_file(broken)
    with pytest.raises(ConfigError, match="required"):
        parse_config_flags([])
    with pytest.raises(ConfigError, match="no --config config file"):
        parse_config_flags(["--config.train.batch_size=3"], required=())


def test_override_function_on_a_locked_config(tmp_path):
    path = tmp_path / "c.py"
    path.write_text(textwrap.dedent("""
        from ml_collections import ConfigDict
        def get_config():
            c = ConfigDict()
            c.a = ConfigDict()
            c.a.ratio = 0.5
            c.a.name = "x"
            return c
    """))
    config = load_config_file(path)
    override(config, "a.ratio", "1")
    assert config.a.ratio == 1.0 and isinstance(config.a.ratio, float)
    override(config, "a.name", "123")
    assert config.a.name == "123"
