"""A sweep folder others can write is not resumed without --trust (resume unpickles it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import assert_one_line_error
from pdsweep.errors import PdsweepError
from pdsweep.sweep.trust import _private_group, check_private, loose_path


def _sweep(root: Path) -> Path:
    folder = root / "runs" / "s"
    (folder / "search").mkdir(parents=True)
    (folder / "sweep.json").write_text("{}")
    (folder / "search" / "experiment_state-x.json").write_text("{}")
    for path in (root / "runs", folder, folder / "search"):
        path.chmod(0o755)
    for path in (folder / "sweep.json", folder / "search" / "experiment_state-x.json"):
        path.chmod(0o644)
    return folder


def test_a_private_folder_passes(tmp_path: Path) -> None:
    folder = _sweep(tmp_path)
    assert loose_path(folder) is None
    check_private(folder)


@pytest.mark.parametrize("where", ["folder", "inside", "file"])
def test_anything_others_can_write_is_named(tmp_path: Path, where: str) -> None:
    folder = _sweep(tmp_path)
    path = {"folder": folder, "inside": folder / "search", "file": folder / "search" / "experiment_state-x.json"}[where]
    path.chmod(0o757 if where != "file" else 0o646)
    found = loose_path(folder)
    assert found is not None and found[0] == path and "write" in found[1]
    with pytest.raises(PdsweepError, match="chmod (-R )?go-w"):
        check_private(folder)


def test_a_runs_dir_others_can_write_is_refused_unless_sticky(tmp_path: Path) -> None:
    folder = _sweep(tmp_path)
    (tmp_path / "runs").chmod(0o777)
    assert loose_path(folder) == (tmp_path / "runs", "others can write it, so they can replace the sweep folder inside it")
    (tmp_path / "runs").chmod(0o1777)  # as /tmp: others cannot rename what is not theirs
    assert loose_path(folder) is None


def test_group_write_is_fine_in_the_users_own_group_only(tmp_path: Path) -> None:
    """umask 002 (Debian, Ubuntu, Fedora) makes every file group-writable, for a group that is
    the user's alone: not a reason to refuse. Any other group is."""
    folder = _sweep(tmp_path)
    (folder / "sweep.json").chmod(0o664)
    own = _private_group(os.stat(folder / "sweep.json").st_gid)
    assert (loose_path(folder) is None) == own
    if os.geteuid() == 0:  # chown to a group nobody is in, to see it refused
        os.chown(folder / "sweep.json", -1, 54321)
        assert loose_path(folder) == (folder / "sweep.json", "group or others can write it")


def test_a_link_out_of_the_folder_is_followed(tmp_path: Path) -> None:
    folder = _sweep(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "state.pkl").write_bytes(b"")
    (outside / "state.pkl").chmod(0o666)
    (folder / "search" / "linked").symlink_to(outside)
    assert loose_path(folder) == (outside / "state.pkl", "group or others can write it")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_file_of_another_user_is_named(tmp_path: Path) -> None:
    folder = _sweep(tmp_path)
    os.chown(folder / "sweep.json", 12345, 12345)
    assert loose_path(folder) == (folder / "sweep.json", "it belongs to another user (uid 12345)")


def test_resume_refuses_then_trust_goes_on(tmp_path: Path, cli) -> None:  # noqa: ANN001
    folder = _sweep(tmp_path)
    (folder / "sweep.json").chmod(0o646)
    result = cli("resume", "s", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, "will not resume", str(folder / "sweep.json"), "--trust")
    trusted = cli("resume", "s", "--runs-dir", tmp_path / "runs", "--trust")
    assert_one_line_error(trusted, "damaged")  # past the check: this sweep.json is not a sweep's
    assert "will not resume" not in trusted.err
