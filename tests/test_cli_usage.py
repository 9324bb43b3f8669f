"""The command line itself: --version, usage errors (exit 2 in every subcommand), --help
with the examples set apart, flag values named as flags, URLs without a scheme."""
from __future__ import annotations

import subprocess
import sys

import pytest

from logserver import __version__
from logserver.cli import COMMANDS, main
from logserver.config import ConfigError, load_config
from server_harness import write_config

# For each subcommand, command lines that are wrong as command lines: a missing
# required flag, an unknown flag, a bad flag value, flags that do not go together.
USAGE_ERRORS = {
    "serve": [[], ["--bogus"], ["--listen", "localhost"], ["--listen", "127.0.0.1:99999"], ["--workers", "0"]],
    "migrate": [[], ["--config"], ["--config", "x.toml", "--bogus"]],
    "keygen": [[], ["log"], ["log", "--out", "k.key"], ["witness", "--out", "k.key"],
               ["witness", "--out", "k.key", "--name", "no spaces allowed"], ["rsa", "--out", "k.key"],
               ["authority", "--out", "k.key", "--algorithm", "rsa"]],
    "sign": [[], ["--key", "k.key", "--out", "o.json"],
             ["--key", "k", "--payload", "p", "--envelope", "e", "--out", "o"]],
    "submit": [[], ["--envelope", "e.json"], ["--log", "127.0.0.1:8080", "--envelope", "e.json"],
               ["--log", "ftp://log.example", "--envelope", "e.json"],
               ["--log", "http://x", "--envelope", "e", "--retries", "-1"]],
    "fsck": [[], ["--config", "x.toml", "--bogus"]],
    "verify": [[], ["--receipt", "r.json"], ["--evidence", "e.json", "--receipt", "r.json"],
               ["--receipt", "r", "--envelope", "e", "--policy", "p", "--log", "localhost:8080"],
               ["--receipt", "r", "--envelope", "e", "--policy", "p", "--now", "yesterday"]],
    "monitor": [[], ["--log", "localhost:8080", "--policy", "p", "--state", "s"],
                ["--log", "http://x", "--policy", "p", "--state", "s", "--metrics-listen", "9464"],
                ["--log", "http://x", "--policy", "p", "--state", "s", "--verify-processes", "-1"]],
    "witness": [[], ["--config", "w.toml", "--listen", "nope"]],
}
CASES = [(cmd, argv) for cmd, argvs in USAGE_ERRORS.items() for argv in argvs]


def test_every_subcommand_has_usage_error_cases():
    assert set(USAGE_ERRORS) == set(COMMANDS)


@pytest.mark.parametrize("cmd, argv", CASES, ids=[f"{c} {' '.join(a)}" for c, a in CASES])
def test_usage_errors_exit_2_in_every_subcommand(tmp_path, monkeypatch, capsys, cmd, argv):
    monkeypatch.chdir(tmp_path)  # nothing is ever written, but if it were, here
    assert main([cmd, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: logserver {cmd} "), err
    assert f"logserver {cmd}: error: " in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_usage_error_exits_2_from_the_real_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "logserver.cli", "submit", "--log", "127.0.0.1:8080",
                           "--envelope", "e.json"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "logserver submit: error: argument --log: want a URL with its scheme, such as http://127.0.0.1:8080, "
        "got '127.0.0.1:8080', which has no scheme (http:// or https://)")


@pytest.mark.parametrize("cmd, flags", [("submit", ["--envelope", "e.json"]),
                                        ("verify", ["--receipt", "r", "--envelope", "e", "--policy", "p"]),
                                        ("monitor", ["--policy", "p", "--state", "s"])])
def test_a_log_url_without_a_scheme_says_so(tmp_path, monkeypatch, capsys, cmd, flags):
    monkeypatch.chdir(tmp_path)
    assert main([cmd, "--log", "log.example:8080", *flags]) == 2
    err = capsys.readouterr().err
    assert "argument --log: want a URL with its scheme, such as http://log.example:8080" in err, err
    assert "which has no scheme" in err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"logserver {__version__}\n"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_sets_the_examples_apart_from_the_prose(capsys, cmd):
    assert main([cmd, "--help"]) == 0
    text = capsys.readouterr().out
    prose, sep, examples = text.partition("\nexamples:\n")
    assert sep, text
    # Above: usage, the description and the options; no example command among them.
    assert "options:" in prose and not any(line.startswith("  logserver ") for line in prose.splitlines()), prose
    lines = [line for line in examples.splitlines() if line.strip()]
    assert lines and all(line.startswith("  ") for line in lines), examples
    assert any(line.startswith(f"  logserver {cmd} ") for line in lines), examples
    # The description keeps its own line breaks (RawDescriptionHelpFormatter).
    assert COMMANDS[cmd].__doc__.strip().splitlines()[0] in prose


def test_top_level_help_lists_the_exit_statuses(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "exit status: 0 success; 1 refused or failed" in text and "2 usage error" in text


def test_an_invalid_listen_is_reported_as_the_flag_it_came_from(tmp_path, capsys):
    assert main(["serve", "--config", "x.toml", "--listen", "8080"]) == 2
    err = capsys.readouterr().err
    assert "argument --listen: want HOST:PORT such as 127.0.0.1:8080, got '8080'" in err, err
    assert "LOGSERVER_LISTEN" not in err.splitlines()[-1]
    config = write_config(tmp_path, "postgresql://127.0.0.1:1/never-used")
    for kwargs, named in ((dict(listen="8080"), "--listen"),
                          (dict(environ={"LOGSERVER_LISTEN": "8080"}), "LOGSERVER_LISTEN")):
        with pytest.raises(ConfigError, match=f"^{named}: want HOST:PORT such as 127.0.0.1:8080, got '8080'$"):
            load_config(config, **{"environ": {}, **kwargs})
    config.write_text(config.read_text().replace('listen = "127.0.0.1:0"', 'listen = "8080"'))
    with pytest.raises(ConfigError, match=r"^listen: want HOST:PORT"):
        load_config(config, environ={})
    # --listen overrides the environment and the file.
    assert load_config(config, environ={"LOGSERVER_LISTEN": "8080"}, listen="127.0.0.1:9").host_port == ("127.0.0.1", 9)


@pytest.mark.parametrize("url, says", [
    ("mysql://u@db.example/logserver", "want a postgresql:// or postgres:// URL"),
    ("db.example/logserver", "which has no scheme"),
])
def test_a_bad_database_url_names_the_key(tmp_path, url, says):
    """Issue 23 section 6: 'a bad config stops start-up with an error naming the key'."""
    with pytest.raises(ConfigError, match=f"^database_url: .*{says}"):
        load_config(write_config(tmp_path / "file", url), environ={})
    good = write_config(tmp_path / "env", "postgresql://db.example/logserver")
    with pytest.raises(ConfigError, match=f"^DATABASE_URL: .*{says}"):
        load_config(good, environ={"DATABASE_URL": url})
    with_password = "mysql://u:hunter2@db.example/x"
    with pytest.raises(ConfigError) as info:
        load_config(good, environ={"DATABASE_URL": with_password.replace("mysql://", "")})
    assert "hunter2" not in str(info.value) and "u:***@db.example" in str(info.value)
