"""The shared-memory table: layout, slots kept across assign (reload), worker rows, atomics across real
forked processes, attach by name (binary upgrade, CLI)."""

import os
import uuid

import pytest

from fastproxy import _shm, config
from fastproxy._balancer import Balancer
from fastproxy._shm import ShmTable, create_for, path_for, path_for_file, sizes_for


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def make_config(servers, upstream="app", extra="", path="<string>"):
    """A config with one upstream; servers are addresses or dicts of server keys."""
    entries = ", ".join(toml_value(s if isinstance(s, dict) else {"address": s}) for s in servers)
    text = (f'[[listen]]\naddress = "127.0.0.1:8080"\n\n[upstreams.{upstream}]\nservers = [{entries}]\n'
            f'{extra}\n[[routes]]\nupstream = "{upstream}"\n')
    return config.loads(text, path)


@pytest.fixture
def shm_path():
    path = f"/dev/shm/fastproxy-test-{uuid.uuid4().hex[:12]}"
    yield path
    for p in (path,):
        if os.path.exists(p):
            os.unlink(p)


def table(cfg, path=None):
    t = ShmTable(path, True, *sizes_for(cfg))
    t.assign(cfg)
    return t


def by_address(t):
    return {b["address"]: b for b in t.snapshot()}


def test_new_table_assigns_every_server_up_with_its_weight():
    cfg = make_config([{"address": "127.0.0.1:9001", "weight": 3}, "127.0.0.1:9002"])
    t = table(cfg)
    snap = by_address(t)
    assert set(snap) == {"127.0.0.1:9001", "127.0.0.1:9002"}
    assert snap["127.0.0.1:9001"]["weight"] == 3
    assert all(b["state"] == "up" and b["active"] == 0 and b["upstream"] == "app" for b in snap.values())
    assert t.generation == 1


def test_reload_keeps_slots_and_state_of_remaining_servers(shm_path):
    old = make_config(["127.0.0.1:9001", "127.0.0.1:9002"])
    t = table(old, shm_path)
    slot = t.find("app", "127.0.0.1:9002")
    t.set_admin("app", "127.0.0.1:9002", "draining")
    t.set_weight("app", "127.0.0.1:9002", 7)
    new = make_config(["127.0.0.1:9002", "127.0.0.1:9003"])
    gen = t.assign(new)
    assert gen == 2
    snap = by_address(t)
    assert set(snap) == {"127.0.0.1:9002", "127.0.0.1:9003"}
    assert snap["127.0.0.1:9002"]["slot"] == slot                    # same slot...
    assert snap["127.0.0.1:9002"]["state"] == "draining"             # ...and state (runtime control survives)
    assert snap["127.0.0.1:9002"]["weight"] == 7
    assert snap["127.0.0.1:9002"]["generation"] == 1                 # not reassigned
    assert snap["127.0.0.1:9003"]["generation"] == 2                 # fresh
    assert snap["127.0.0.1:9003"]["state"] == "up"


def test_a_changed_configured_weight_resets_the_runtime_one():
    t = table(make_config(["127.0.0.1:9001"]))
    t.set_weight("app", "127.0.0.1:9001", 9)
    t.assign(make_config([{"address": "127.0.0.1:9001", "weight": 4}]))
    assert by_address(t)["127.0.0.1:9001"]["weight"] == 4


def test_assign_while_a_reload_is_pending_keeps_the_old_servers():
    old = make_config(["127.0.0.1:9001", "127.0.0.1:9002"])
    t = table(old)
    new = make_config(["127.0.0.1:9003"])
    t.assign(new, keep=old)
    assert set(by_address(t)) == {"127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"}
    t.assign(new)
    assert set(by_address(t)) == {"127.0.0.1:9003"}


def test_assign_refuses_a_config_that_does_not_fit_and_changes_nothing():
    small = make_config(["127.0.0.1:9001"])
    t = ShmTable(None, True, 2, 2, 2)
    t.assign(small)
    big = make_config([f"127.0.0.1:{9000 + i}" for i in range(5)])
    with pytest.raises(ValueError, match="too small"):
        t.assign(big)
    assert set(by_address(t)) == {"127.0.0.1:9001"} and t.generation == 1


def test_named_table_is_opened_by_name_and_attached_by_a_new_master(shm_path):
    cfg = make_config(["127.0.0.1:9001"])
    t = table(cfg, shm_path)
    t.set_admin("app", "127.0.0.1:9001", "disabled")
    reader = ShmTable(shm_path)                                # the CLI: open, never create
    assert by_address(reader)["127.0.0.1:9001"]["state"] == "disabled"
    again = ShmTable(shm_path, True, *sizes_for(cfg))          # a new master after USR2: attach, keep state
    again.assign(cfg)
    assert by_address(again)["127.0.0.1:9001"]["state"] == "disabled"
    for x in (t, reader, again):
        x.close()


def test_opening_a_missing_or_foreign_file_fails(shm_path):
    with pytest.raises(FileNotFoundError):
        ShmTable(shm_path)
    with open(shm_path, "wb") as f:
        f.write(b"not a table" * 100)
    with pytest.raises(ValueError):
        ShmTable(shm_path)


def test_names_derive_from_the_config_file(tmp_path):
    cfg_file = tmp_path / "a.toml"
    assert path_for_file(str(cfg_file)) == path_for_file(str(tmp_path / "." / "a.toml"))
    assert path_for_file(str(cfg_file)).startswith("/dev/shm/fastproxy-")
    assert path_for(make_config(["127.0.0.1:9001"])) is None           # no file: anonymous


def wait_child(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_atomic_adds_from_two_forked_processes_lose_nothing():
    t = table(make_config(["127.0.0.1:9001"]))
    slot = t.find("app", "127.0.0.1:9001")
    n = 200_000
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            try:
                t._test_add_active(slot, n)
            finally:
                os._exit(0)
        pids.append(pid)
    assert [wait_child(p) for p in pids] == [0, 0]
    assert by_address(t)["127.0.0.1:9001"]["active"] == 2 * n


def test_a_dead_workers_row_is_released_by_the_master():
    cfg = make_config(["127.0.0.1:9001"])
    t = table(cfg)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        # a worker takes two in-flight places and dies without releasing them
        try:
            b = Balancer(cfg, t)
            b.py_pick(0)
            b.py_pick(0)
            os.write(w, b"x")
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"x"
    os.close(r)
    assert wait_child(pid) == 0
    assert by_address(t)["127.0.0.1:9001"]["active"] == 2
    assert [row["pid"] for row in t.rows()] == [pid]
    assert t.release_row(pid)
    assert by_address(t)["127.0.0.1:9001"]["active"] == 0
    assert t.rows() == []


def test_reap_rows_frees_rows_of_processes_that_are_gone():
    t = table(make_config(["127.0.0.1:9001"]))
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    wait_child(pid)
    t.claim_row(pid)
    mine = t.claim_row()
    assert t.reap_rows() == [pid]
    assert [row["row"] for row in t.rows()] == [mine]


def test_create_for_reaps_stale_rows_and_assigns(tmp_path):
    cfg_file = tmp_path / "p.toml"
    cfg = make_config(["127.0.0.1:9001"], path=str(cfg_file))
    t = create_for(cfg)
    try:
        _shm._current = None            # the table of "this master": do not leak it into other tests
        assert t.path == path_for(cfg) and os.path.exists(t.path)
        assert set(by_address(t)) == {"127.0.0.1:9001"}
    finally:
        t.unlink()
        t.close()
