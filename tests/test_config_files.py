"""The log and the witness read their TOML files through one reader (config.read_toml)."""
import pytest

from logserver.config import ConfigError, load_config
from logserver.witness.config import load_witness_config


@pytest.mark.parametrize("load", [load_config, load_witness_config])
def test_missing_and_invalid_files_are_one_line_config_errors(tmp_path, load):
    with pytest.raises(ConfigError, match=r"^config file .*missing\.toml does not exist$"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("origin = \n")
    with pytest.raises(ConfigError, match=r"^config file .*bad\.toml is not valid TOML: "):
        load(bad)
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b"name = \"caf\xe9\"\n")
    with pytest.raises(ConfigError, match=r"^config file .*latin1\.toml is not valid TOML: "):
        load(latin1)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("surprise = 1\n")
    with pytest.raises(ConfigError, match=r"required but missing"):
        load(unknown)


def test_performance_keys_have_defaults_bounds_and_types(tmp_path):
    from logserver.config import config_from_dict

    (tmp_path / "s.pem").write_text("x")
    base = {"origin": "example.com/log", "log_key": "k.pem",
            "authorities": [{"name": "s", "role": "signer", "keys": ["s.pem"]},
                            {"name": "c", "role": "countersigner", "keys": ["s.pem"]}]}
    default = config_from_dict(dict(base), base=tmp_path, environ={})
    assert (default.verify_processes, default.tile_file) == (1, True)
    tuned = config_from_dict({**base, "verify_processes": 0, "tile_file": False}, base=tmp_path, environ={})
    assert (tuned.verify_processes, tuned.tile_file) == (0, False)
    for bad in ({"verify_processes": -1}, {"verify_processes": 65}, {"verify_processes": True},
                {"tile_file": "no"}, {"tile_file": 1}):
        key = next(iter(bad))
        with pytest.raises(ConfigError, match=key):
            config_from_dict({**base, **bad}, base=tmp_path, environ={})


def test_authorities_tables_are_written_once_for_the_server_and_the_client(tmp_path):
    # One writer (client.policy.authorities_toml) for both files: each reader gets the
    # key files back, whatever characters their paths hold.
    import tomllib

    from logserver.client.policy import authorities_toml

    odd = 'odd "dir"\\\t\x7f'
    (tmp_path / odd).mkdir()
    (tmp_path / odd / "s.pem").write_text("x")
    (tmp_path / "c.pem").write_text("x")
    text = authorities_toml([("s", "signer", [f"{odd}/s.pem"]), ("c", "countersigner", ["c.pem"])])
    assert tomllib.loads(text)["authorities"] == [
        {"name": "s", "role": "signer", "keys": [f"{odd}/s.pem"]},
        {"name": "c", "role": "countersigner", "keys": ["c.pem"]},
    ]
    cfg = tmp_path / "logserver.toml"
    cfg.write_text('origin = "example.com/log"\nlog_key = "k.pem"\n\n' + text)
    config = load_config(cfg)
    assert [(a.name, a.role, a.keys) for a in config.authorities] == [
        ("s", "signer", (tmp_path / odd / "s.pem",)), ("c", "countersigner", (tmp_path / "c.pem",))]


@pytest.mark.parametrize("field, value", [("origin", "example.com/log\n"), ("authority", "signer\n"),
                                          ("authority", "a" * 129)])
def test_names_with_a_trailing_newline_or_too_long_are_refused(tmp_path, field, value):
    """`^...$` with re.match accepts a trailing newline; the config's names use fullmatch."""
    from logserver.config import config_from_dict

    (tmp_path / "s.pem").write_text("x")
    name = value if field == "authority" else "s"
    raw = {"origin": value if field == "origin" else "example.com/log", "log_key": "k.pem",
           "authorities": [{"name": name, "role": "signer", "keys": ["s.pem"]},
                           {"name": "c", "role": "countersigner", "keys": ["s.pem"]}]}
    with pytest.raises(ConfigError, match="origin" if field == "origin" else r"authorities\[0\]\.name"):
        config_from_dict(raw, base=tmp_path, environ={})


def test_authority_names_may_be_as_long_as_bundles_and_trust_policies_allow(tmp_path):
    from logserver.config import config_from_dict

    (tmp_path / "s.pem").write_text("x")
    raw = {"origin": "example.com/log", "log_key": "k.pem",
           "authorities": [{"name": "a" * 128, "role": "signer", "keys": ["s.pem"]},
                           {"name": "c", "role": "countersigner", "keys": ["s.pem"]}]}
    assert config_from_dict(raw, base=tmp_path, environ={}).authorities[0].name == "a" * 128
