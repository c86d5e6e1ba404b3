"""`opswatch init`: a starter config whose rules route the seed's layout as the seed does."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from build_seed import aim_at
from build_seed import run_init as init
from daemon_process import opswatch_command
from opswatch.config import load_config
from opswatch.demo.sshd import LocalSshd
from opswatch.local.starter import candidate_ops_folders, repository_root


@pytest.mark.sshd
def test_the_config_routes_every_seed_path_as_the_seed_does(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, tmp_path: Path
) -> None:
    done = init(repo, "--host", "droplet", "--remote-root", "/root/portfolio")
    assert done.returncode == 0, done.stderr
    config_path = repo / "opswatch.toml"
    config = load_config(config_path)
    assert (config.remote.host, config.remote.root) == ("droplet", "/root/portfolio")
    assert config.rebuild.mode == "off"
    assert config.rebuild.compose_file == "docs/ops/docker-compose.production.yml"
    text = config_path.read_text()
    assert "#   .env .env.* *.env .envrc data/ certs/ *.pem *.key *.p12" in text
    assert '# name = "coda-mcp-gateway"' in text and '# name = "demo"' in text

    aim_at(config_path, sshd_server, remote_root, tmp_path)
    dry = subprocess.run(
        [*opswatch_command(), "--config", str(config_path), "sync", "--dry-run", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    routed = {u["path"]: str(Path(u["remote"]).relative_to(remote_root)) for u in plan["upload"]}
    assert routed == {
        "docs/ops/docker-compose.production.yml": "ops/docker-compose.production.yml",
        "docs/ops/Dockerfile.coda-mcp-gateway": "docs/ops/Dockerfile.coda-mcp-gateway",
        "docs/ops/Dockerfile.demo": "docs/ops/Dockerfile.demo",
        "docs/ops/runbooks/deploy.md": "docs/ops/runbooks/deploy.md",
        "docs/ops/quality_gates/check.sh": "docs/ops/quality_gates/check.sh",
    }
    refused = {s["path"]: s["reason"] for s in plan["skipped"]}
    for secret in ("docs/ops/.env", "docs/ops/data/", "docs/ops/certs/"):
        assert refused[secret].startswith("never"), refused
    assert not list(remote_root.iterdir()), "a dry run changes nothing"


def test_an_existing_config_is_kept_without_force(repo: Path) -> None:
    assert init(repo, "--host", "first").returncode == 0
    done = init(repo, "--host", "second")
    assert done.returncode == 2
    assert "--force" in done.stderr
    assert load_config(repo / "opswatch.toml").remote.host == "first"
    assert init(repo, "--host", "second", "--force").returncode == 0
    assert load_config(repo / "opswatch.toml").remote.host == "second"


def test_without_options_it_writes_defaults_that_parse(repo: Path) -> None:
    done = init(repo)
    assert done.returncode == 0, done.stderr
    config = load_config(repo / "opswatch.toml")
    assert config.remote.host == "droplet"
    assert 'root = "~/' + repo.name + '"' in (repo / "opswatch.toml").read_text()
    assert config.remote.root == repo.name  # the login's home on the server, not /root
    assert config.sync.hold_over == 100 and not config.sync.never
    assert config.rebuild.on_failure == "rollback"  # acts only where a health URL exists


def test_the_repository_root_is_found_from_a_subfolder(repo: Path) -> None:
    (repo / ".git").mkdir()
    done = init(repo / "docs/ops/runbooks", "--host", "h", "--remote-root", "/srv/app")
    assert done.returncode == 0, done.stderr
    assert (repo / "opswatch.toml").is_file()
    assert repository_root(repo / "docs/ops/runbooks") == repo


def make_ops_folder(root: Path, folder: str, service: str) -> None:
    ops = root / folder
    (ops / "scripts").mkdir(parents=True)
    (ops / "Dockerfile").write_text("FROM alpine\n")
    (ops / "compose.yaml").write_text(
        f"services:\n  {service}:\n    build:\n      context: .\n      dockerfile: Dockerfile\n"
    )
    (ops / "scripts/deploy.sh").write_text("#!/bin/sh\n")
    (ops / ".env.production").write_text("TOKEN=x\n")


def test_another_layout_is_found_and_routed(tmp_path: Path) -> None:
    root = tmp_path / "app"
    make_ops_folder(root, "deploy", "web")
    done = init(root, "--host", "h", "--remote-root", "/srv/app")
    assert done.returncode == 0, done.stderr
    config = load_config(root / "opswatch.toml")
    compose_rule, rest_rule = config.rules
    # `build: .` is relative to the compose file: it stays beside its Dockerfile.
    assert (compose_rule.source, compose_rule.match, compose_rule.to) == (
        "deploy",
        ("compose.yaml",),
        ("deploy",),
    )
    assert (rest_rule.source, rest_rule.match, rest_rule.to) == (
        "deploy",
        ("Dockerfile", "scripts/"),
        ("deploy",),
    )
    assert config.rebuild.compose_dir == "deploy"
    assert "deploy/: compose.yaml  → deploy/" in done.stdout
    assert "build paths are relative to itself" in done.stdout
    assert "deploy/: Dockerfile scripts/  → deploy/" in done.stdout
    assert "stays here (never): .env.production" in done.stdout
    assert '# name = "web"' in (root / "opswatch.toml").read_text()


@pytest.mark.sshd
def test_a_compose_file_lands_beside_the_dockerfile_it_builds(
    tmp_path: Path, sshd_server: LocalSshd, remote_root: Path
) -> None:
    root = tmp_path / "app"
    make_ops_folder(root, "deploy", "web")
    assert init(root, "--host", "h", "--remote-root", "/srv/app").returncode == 0
    config_path = root / "opswatch.toml"
    aim_at(config_path, sshd_server, remote_root, tmp_path)
    done = subprocess.run(
        [*opswatch_command(), "--config", str(config_path), "sync"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    landed = remote_root / "deploy"
    assert (landed / "compose.yaml").read_text() == (root / "deploy/compose.yaml").read_text()
    assert (landed / "Dockerfile").read_text() == "FROM alpine\n"
    assert not (remote_root / "ops").exists()
    assert not (landed / ".env.production").exists()


def test_compose_paths_written_for_the_server_keep_the_seed_routes(tmp_path: Path) -> None:
    root = tmp_path / "app"
    ops = root / "infra"
    ops.mkdir(parents=True)
    (ops / "Dockerfile.web").write_text("FROM alpine\n")
    # As the seed: written for the compose file's place on the server (ops/, one below the root).
    (ops / "compose.yaml").write_text(
        "services:\n  web:\n    build:\n      context: ..\n      dockerfile: infra/Dockerfile.web\n"
    )
    assert init(root, "--host", "h").returncode == 0
    config = load_config(root / "opswatch.toml")
    assert config.rules[0].to == ("ops",)
    assert config.rebuild.compose_dir == "ops"


def test_several_candidates_need_from_when_nobody_can_be_asked(tmp_path: Path) -> None:
    root = tmp_path / "app"
    make_ops_folder(root, "deploy", "web")
    make_ops_folder(root, "infra/docker", "api")
    assert candidate_ops_folders(root) == ["deploy", "infra/docker"]
    done = init(root)
    assert done.returncode == 2
    assert "deploy, infra/docker" in done.stderr and "--from" in done.stderr
    done = init(root, "--from", "infra/docker", "--host", "h")
    assert done.returncode == 0, done.stderr
    assert load_config(root / "opswatch.toml").rules[0].source == "infra/docker"


def test_a_missing_from_folder_is_a_usage_error(repo: Path) -> None:
    done = init(repo, "--from", "no/such/folder")
    assert done.returncode == 2
    assert "no/such/folder" in done.stderr
    assert not (repo / "opswatch.toml").exists()


def test_a_remote_root_expanded_by_the_local_shell_is_warned_about(
    repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "home" / "me"
    monkeypatch.setenv("HOME", str(home))
    done = init(repo, "--host", "h", "--remote-root", f"{home}/portfolio")
    assert done.returncode == 0, done.stderr
    assert "warning: --remote-root" in done.stderr
    assert "--remote-root '~/portfolio'" in done.stderr
    assert load_config(repo / "opswatch.toml").remote.root == f"{home}/portfolio"


def test_an_invalid_remote_root_leaves_no_config_behind(repo: Path) -> None:
    done = init(repo, "--host", "h", "--remote-root", "~deploy/portfolio")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "remote.root" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (repo / "opswatch.toml").exists()
