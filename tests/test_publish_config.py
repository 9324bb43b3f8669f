"""Publication targets in logserver.toml (issue 19, section 2): what is accepted, and
bad target configuration refused at start with one clear line (docs/cli.md, status 1)."""
from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from logserver.config import ConfigError, config_from_dict
from server_harness import write_config
from test_cli_operator_errors import AS_ROOT, one_line, run, shared_dir  # noqa: F401 (a fixture)


def parse(targets: str, tmp_path: Path):
    import tomllib

    raw = tomllib.loads(f"""
origin = "example.com/log"
log_key = "log.key"
{targets}
[[authorities]]
name = "s"
role = "signer"
keys = ["s.pem"]
[[authorities]]
name = "c"
role = "countersigner"
keys = ["c.pem"]
""")
    for name in ("s.pem", "c.pem"):
        (tmp_path / name).write_text("x")
    return config_from_dict(raw, base=tmp_path, environ={})


def test_targets_are_read_with_their_defaults(tmp_path):
    config = parse("""
[publication]
max_lag_s = 30
[[publication.targets]]
name = "public"
type = "directory"
path = "public"
[[publication.targets]]
name = "bucket"
type = "s3"
bucket = "my-log"
endpoint_url = "http://127.0.0.1:8333/"
prefix = "logs/a"
""", tmp_path)
    directory, bucket = config.publication.targets
    assert (directory.name, directory.type, directory.path) == ("public", "directory", tmp_path / "public")
    assert (bucket.bucket, bucket.endpoint_url, bucket.prefix, bucket.region) == \
        ("my-log", "http://127.0.0.1:8333", "logs/a/", "us-east-1")
    assert config.publication.max_lag_s == 30


def test_no_publication_table_means_no_targets(tmp_path):
    assert parse("", tmp_path).publication.targets == ()


@pytest.mark.parametrize(("table", "says"), [
    ('name = "a"\ntype = "directory"\npath = "p"\ncolour = "red"', "publication.targets[0].colour: unknown key"),
    ('name = "a"\ntype = "ftp"', "publication.targets[0].type: want one of directory, s3, got 'ftp'"),
    ('name = "a b"\ntype = "directory"\npath = "p"', "publication.targets[0].name: want 1..64"),
    ('type = "directory"\npath = "p"', "publication.targets[0].name: required but missing"),
    ('name = "a"\ntype = "directory"', "publication.targets[0].path: required but missing"),
    ('name = "a"\ntype = "s3"\nbucket = "A_B"', "publication.targets[0].bucket: want an S3 bucket name"),
    ('name = "a"\ntype = "s3"\nbucket = "abc"\nendpoint_url = "127.0.0.1:9000"',
     "publication.targets[0].endpoint_url: want http(s)://HOST[:PORT]"),
    ('name = "a"\ntype = "s3"\nbucket = "abc"\nprefix = "/x"', "publication.targets[0].prefix: want a key prefix"),
    ('name = "a"\ntype = "s3"\nbucket = "abc"\nprefix = "a/../b"', "publication.targets[0].prefix: want a key prefix"),
])
def test_a_bad_target_is_refused_naming_the_key(tmp_path, table, says):
    with pytest.raises(ConfigError) as e:
        parse(f"[[publication.targets]]\n{table}\n", tmp_path)
    assert says in str(e.value)


def test_two_targets_of_one_name_are_refused(tmp_path):
    one = '[[publication.targets]]\nname = "a"\ntype = "directory"\npath = "p"\n'
    with pytest.raises(ConfigError, match="names must be unique"):
        parse(one + one, tmp_path)


def test_an_unknown_publication_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"publication\.max_lag: unknown key"):
        parse("[publication]\nmax_lag = 3\n", tmp_path)


# ---- refused at start, as an operator would see it --------------------------------------


def _config(directory: Path, target: str) -> Path:
    config = write_config(directory, "unused", extra=f"[[publication.targets]]\n{target}\n")
    # No database_url: the target is checked before the (embedded) database is touched.
    config.write_text(config.read_text().replace('database_url = "unused"\n', ""))
    return config


def test_a_target_directory_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "public").write_text("not a directory")
    config = _config(tmp_path, 'name = "public"\ntype = "directory"\npath = "public"')
    line = one_line(run("serve", config), "serve", 1)
    assert f"publication target 'public': directory {tmp_path / 'public'} is not a directory" in line


def test_a_target_directory_that_is_not_writable_is_one_line(shared_dir):  # noqa: F811 (the fixture)
    config = _config(shared_dir, 'name = "public"\ntype = "directory"\npath = "public"')
    public = shared_dir / "public"
    public.mkdir(mode=0o755)
    data = shared_dir / "data"
    data.mkdir(mode=0o755)
    if AS_ROOT:  # root writes anything: run as nobody, who owns the data directory but not public/
        nobody = pwd.getpwnam("nobody")
        os.chown(data, nobody.pw_uid, nobody.pw_gid)
        os.chown(shared_dir / "log.key", nobody.pw_uid, nobody.pw_gid)
        user, who = "nobody", "nobody"
    else:
        public.chmod(0o555)
        user, who = None, pwd.getpwuid(os.geteuid()).pw_name
    line = one_line(run("serve", config, user=user), "serve", 1)
    assert f"publication target 'public': directory {public} is not writable by user {who}" in line, line
    assert list(public.iterdir()) == []


def test_an_unreachable_bucket_is_one_line(tmp_path):
    config = _config(tmp_path, 'name = "bucket"\ntype = "s3"\nbucket = "log"\nendpoint_url = "http://127.0.0.1:1"')
    env = {"AWS_ACCESS_KEY_ID": "any", "AWS_SECRET_ACCESS_KEY": "any"}
    line = one_line(run("serve", config, env=env), "serve", 1)
    assert "publication target 'bucket' (s3://log/ at http://127.0.0.1:1): unreachable" in line, line


def test_fleet_heads_interval(tmp_path):
    assert parse("", tmp_path).publication.fleet_heads_interval_s == 60
    assert parse("[publication]\nfleet_heads_interval_s = 0\n", tmp_path).publication.fleet_heads_interval_s == 0
    assert parse("[publication]\nfleet_heads_interval_s = 600\n", tmp_path).publication.fleet_heads_interval_s == 600
    for bad in ("-1", "86401", '"60"', "true"):
        with pytest.raises(ConfigError, match=r"publication\.fleet_heads_interval_s: want a number from 0"):
            parse(f"[publication]\nfleet_heads_interval_s = {bad}\n", tmp_path)
