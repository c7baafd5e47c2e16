import pathlib
import textwrap

import pytest

from infdiff.pipeline.legacy_keys import LEGACY_KEYS
from infdiff.train.config import ConfigError, load_config_file, override, parse_config_flags

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def test_every_shipped_config_loads_and_is_locked():
    for path in sorted(CONFIGS.glob("*_config.py")):
        config = load_config_file(path)
        with pytest.raises(AttributeError):
            config.not_a_section = 1
        assert {"run", "data", "train", "model", "prior", "process", "loss", "sampler", "optimizer"} == set(config), (
            path
        )


def test_overrides_parse_types_and_follow_field_references():
    configs, rest, overrides = parse_config_flags(
        [
            "--config",
            f"{CONFIGS}/ffhq_256_config.py",
            "--config.data.img_size=128",
            "--config.train.batch_size",
            "8",
            "--config.model.uno.channel_mults=(1,2,4)",
            "--config.optimizer.learning_rate=1e-3",
            "--config.data.random_flip=false",
            "--config.data.channels=1",
            "--config.run.experiment=x",
            "--other",
            "1",
        ]
    )
    c = configs["config"]
    assert (c.data.img_size, c.train.batch_size, c.model.uno.channel_mults) == (128, 8, (1, 2, 4))
    assert c.optimizer.learning_rate == 1e-3 and c.data.random_flip is False and c.run.experiment == "x"
    assert c.data.channels == 1, "a field that is None takes any literal"
    assert c.loss.points == c.loss.encoder_points == 128 * 128 // 4 and c.model.uno_res == 64
    assert rest == ["--other", "1"]
    assert overrides["config"][:2] == [("data.img_size", "128"), ("train.batch_size", "8")]


def test_the_paper_code_spellings_set_infdiffs_keys():
    """∞-Diff's command lines keep working: its keys are mapped in infdiff.pipeline.legacy_keys."""
    configs, _, _ = parse_config_flags(
        [
            "--config",
            f"{CONFIGS}/ffhq_256_config.py",
            "--config.mc_integral.q_sample=1000",
            "--config.mc_integral.type=halton",
            "--config.diffusion.model_mean_type=epsilon",
            "--config.diffusion.gaussian_filter_std=0.5",
            "--config.diffusion.noise_schedule=linear",
            "--config.model.uno_mults=(1,2)",
            "--config.model.kld_weight=0.5",
            "--config.model.time_emb_dim=64",
            "--config.train.plot_sampling_steps=7",
        ],
        aliases=LEGACY_KEYS,
    )
    c = configs["config"]
    assert (c.loss.points, c.loss.subset, c.loss.target, c.loss.kl_weight) == (1000, "halton", "epsilon", 0.5)
    assert (c.prior.std, c.process.schedule, c.model.uno.channel_mults) == (0.5, "linear", (1, 2))
    assert (c.model.time_dim, c.sampler.steps) == (64, 7)
    assert all(new.split(".")[0] in c for new in LEGACY_KEYS.values())


def test_a_typo_in_a_paper_spelling_suggests_it():
    with pytest.raises(ConfigError, match=r"no such key.*did you mean --config.mc_integral.q_sample"):
        parse_config_flags(
            ["--config", f"{CONFIGS}/ffhq_256_config.py", "--config.mc_integral.q_sampel=3"], aliases=LEGACY_KEYS
        )


def test_two_configs_side_by_side():
    configs, _, _ = parse_config_flags(
        [
            "--config",
            f"{CONFIGS}/ffhq_latent_config.py",
            "--decoder_config",
            f"{CONFIGS}/ffhq_256_config.py",
            "--decoder_config.run.experiment=ae",
            "--config.run.experiment=latent",
        ],
        names=("config", "decoder_config"),
    )
    assert configs["config"].run.experiment == "latent" and configs["decoder_config"].run.experiment == "ae"


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--config.train.batchsize=3", "no such key.*did you mean --config.train.batch_size"),
        ("--config.trainn.batch_size=3", "no such key"),
        ("--config.train.batch_size=three", "expected an int"),
        ("--config.optimizer.fused=maybe", "expected a boolean"),
        ("--config.model=3", "is a section"),
        ("--config.model.uno_mults=5", "expected a tuple"),
        ("--config.model.uno.channel_mults=5", "expected a tuple"),
    ],
)
def test_bad_overrides_are_clear_errors(flag, message):
    with pytest.raises(ConfigError, match=message):
        parse_config_flags(["--config", f"{CONFIGS}/ffhq_256_config.py", flag], aliases=LEGACY_KEYS)


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


def test_a_config_file_that_fails_to_run_names_the_file_and_line(tmp_path):
    broken = tmp_path / "typo.py"
    broken.write_text("def get_config(:\n    pass\n")
    with pytest.raises(ConfigError, match=r"typo.py', line 1 failed to load: SyntaxError"):
        load_config_file(broken)
    raising = tmp_path / "raising.py"
    raising.write_text("import ml_collections\n\n\ndef get_config():\n    return 1 / 0\n")
    with pytest.raises(ConfigError, match=r"raising.py', line 5 failed to load: ZeroDivisionError"):
        load_config_file(raising)


def test_every_shipped_config_passes_the_schema_with_every_key_declared():
    import warnings

    from infdiff.pipeline.schema import validate_config

    for path in sorted(CONFIGS.glob("*.py")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            validate_config(load_config_file(path), source=str(path))


def test_the_sparse_kernel_switches_are_checked_by_the_schema():
    from infdiff.pipeline.schema import validate_config

    for flag, message in [
        ("--config.model.neighbours=windows", r"model.neighbours.*expected one of 'table', 'window'"),
        ("--config.model.backend=cudaa", r"model.backend.*expected one of 'auto', 'cpp', 'cuda', 'torch'"),
    ]:
        configs = parse_config_flags(["--config", f"{CONFIGS}/ffhq_256_config.py", flag]).configs
        with pytest.raises(ConfigError, match=message):
            validate_config(configs["config"])
    window = parse_config_flags(["--config", f"{CONFIGS}/ffhq_256_config.py", "--config.model.neighbours=window"])
    validate_config(window.configs["config"])


def test_override_function_on_a_locked_config(tmp_path):
    path = tmp_path / "c.py"
    path.write_text(
        textwrap.dedent("""
        from ml_collections import ConfigDict
        def get_config():
            c = ConfigDict()
            c.a = ConfigDict()
            c.a.ratio = 0.5
            c.a.name = "x"
            return c
    """)
    )
    config = load_config_file(path)
    override(config, "a.ratio", "1")
    assert config.a.ratio == 1.0 and isinstance(config.a.ratio, float)
    override(config, "a.name", "123")
    assert config.a.name == "123"


def test_a_config_file_takes_an_argument_after_a_colon(tmp_path):
    config = load_config_file(f"{CONFIGS}/sbdm_mnist_config.py:cno,combined")
    assert (config.model.arch, config.prior.name, config.run.experiment) == (
        "cno",
        "combined",
        "sbdm_mnist_28_cno_combined",
    )
    assert load_config_file(f"{CONFIGS}/sbdm_mnist_config.py").run.experiment == "sbdm_mnist_28_fno_standard"
    flags = parse_config_flags(
        ["--config", f"{CONFIGS}/sbdm_mnist_config.py:unet,laplacian", "--config.train.batch_size=8"]
    )
    assert flags.configs["config"].model.arch == "unet" and flags.configs["config"].train.batch_size == 8
    with pytest.raises(
        ConfigError, match=r"sbdm_mnist_config.py'.*failed to load: ValueError: network='vit': expected one of"
    ):
        load_config_file(f"{CONFIGS}/sbdm_mnist_config.py:vit,standard")
    with pytest.raises(ConfigError, match=r"shapes_32_config.py' takes no argument .*drop ':x'"):
        load_config_file(f"{CONFIGS}/shapes_32_config.py:x")
    with pytest.raises(ConfigError, match=r"config file '.*nope.py' does not exist"):
        load_config_file(f"{tmp_path}/nope.py:fno")
