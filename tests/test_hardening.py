"""Bad input refused at construction, secrets kept out of reprs, errors, logs and tracebacks."""

from __future__ import annotations

import functools
import logging
import math
import traceback
from pathlib import Path
from types import TracebackType

import httpx
import pytest

from aiogovernor import AIMD
from aiogovernor._validate import check_float
from aiogovernor.limits import Vegas
from aiogovernor.state import LearnedState
from aiogovernor.testing.servers import LocalUpstream, UpstreamConfig

# -- numbers out of range, wrong types ---------------------------------------------


def test_check_float_refuses_an_int_beyond_a_float_with_a_value_error() -> None:
    with pytest.raises(ValueError, match="x must be a finite number"):
        check_float("x", 10**400)
    with pytest.raises(ValueError, match="x must be a finite number"):
        check_float("x", -(10**400), high=0.0)
    assert check_float("x", 10**300) == 1e300


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sample_count", 1.5, "sample_count must be an integer"),
        ("sample_count", True, "sample_count must be an integer"),
        ("sample_count", "3", "sample_count must be an integer"),
        ("chunk_size", 2.5, "chunk_size must be an integer"),
        ("limit", 10**400, "limit must be a finite number"),
        ("limit", "3", "limit must be a finite number"),
        ("updated_at", 10**400, "updated_at must be a finite number"),
        ("updated_at", None, "updated_at must be a finite number"),
        ("latency_floor_s", 10**400, "latency_floor_s must be a finite number"),
    ],
)
def test_a_learned_state_refuses_wrong_types_and_huge_numbers(
    field: str, value: object, message: str
) -> None:
    fields: dict[str, object] = {"limit": 2.0, "policy": "aimd", "updated_at": 0.0, field: value}
    with pytest.raises(ValueError, match=message):
        LearnedState(**fields)  # type: ignore[arg-type]


def test_a_record_with_a_huge_number_is_a_value_error_with_a_short_message() -> None:
    record = LearnedState(limit=2.0, policy="aimd", updated_at=0.0).to_json()
    for key in ("limit", "updated_at", "latency_floor_s"):
        with pytest.raises(ValueError, match=key) as exc:
            LearnedState.from_json({**record, key: 10**400})
        assert len(str(exc.value)) < 200  # not the 400 digits


@pytest.mark.parametrize("policy", [AIMD, Vegas])
@pytest.mark.parametrize("value", ["no", 0, None])
def test_slow_start_must_be_a_bool(policy: type[AIMD] | type[Vegas], value: object) -> None:
    with pytest.raises(TypeError, match="slow_start must be True or False"):
        policy(slow_start=value)  # type: ignore[arg-type]
    assert policy(slow_start=False).limit > 0


# -- the fleet ceiling's configuration ---------------------------------------------


def test_a_fleet_ceiling_refuses_a_namespace_with_a_colon() -> None:
    pytest.importorskip("redis")
    from aiogovernor.fleet import FleetCeiling

    with pytest.raises(ValueError, match="namespace must be a non-empty string without ':'"):
        FleetCeiling("api", cap=4, namespace="a:b")
    with pytest.raises(ValueError, match="namespace"):
        FleetCeiling("api", cap=4, namespace="")


def test_a_fleet_ceiling_refuses_a_lease_that_one_slow_renewal_would_lose() -> None:
    pytest.importorskip("redis")
    from aiogovernor.fleet import FleetCeiling

    with pytest.raises(ValueError, match=r"lease_s \(0.5\) must be more than 3 × timeout_s \(2\)"):
        FleetCeiling("api", cap=4, lease_s=0.5, timeout_s=2)
    with pytest.raises(ValueError, match="renewed every lease_s / 3"):
        FleetCeiling("api", cap=4, lease_s=6, timeout_s=2)
    FleetCeiling("api", cap=4, lease_s=6.5, timeout_s=2)
    FleetCeiling("api", cap=4)  # the defaults: 10 s leases, 2 s timeouts


# -- Redis secrets -------------------------------------------------------------------

SECRET = "Zq7-s3cret"

# Every way redis-py takes a credential, and passwords holding the URL's delimiters unencoded.
SECRET_URLS = [
    f"redis://127.0.0.1:1/0?password={SECRET}",
    f"redis://admin:{SECRET}@127.0.0.1:1/0",
    f"redis://:{SECRET}@127.0.0.1:1/0",
    f"redis://{SECRET}:x@127.0.0.1:1/0",
    f"redis://127.0.0.1:1/0?username={SECRET}&password=x",
    f"rediss://:{SECRET}@127.0.0.1:1/0",
    f"unix://:{SECRET}@/tmp/redis.sock?db=1",
    f"unix:///tmp/redis.sock?password={SECRET}",
    f"redis://:{SECRET}#@127.0.0.1:1/0",
    f"redis://:{SECRET[:3]}#{SECRET[3:]}@127.0.0.1:1/0",
    f"redis://:{SECRET[:3]}?{SECRET[3:]}@127.0.0.1:1/0",
    f"redis://:1234#{SECRET}@127.0.0.1:1/0",
    f"redis://u:{SECRET[:3]}@{SECRET[3:]}@127.0.0.1:1/0",
    f"redis://:{SECRET}@[::1:1/0",
]


def pieces(secret: str) -> list[str]:
    """The secret and its halves: a message that quotes a piece of it leaks too."""
    return [secret, secret[:3], secret[3:]]


def assert_secret_free(text: str) -> None:
    for piece in pieces(SECRET):
        assert piece not in text, text


def traceback_locals(exc: BaseException) -> list[str]:
    """repr() of every local of every frame an exception (and its chain) went through, below the test."""
    shown = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        tb: TracebackType | None = e.__traceback__
        first = True
        while tb is not None:
            if not first:  # the test's own frame holds the URL it made
                shown += [f"{name}={value!r}" for name, value in tb.tb_frame.f_locals.items()]
            first = False
            tb = tb.tb_next
        shown.append("".join(traceback.format_exception(e)))
        todo += [e.__cause__, e.__context__]
    return shown


@pytest.mark.parametrize("url", SECRET_URLS)
def test_a_redis_password_never_shows(url: str, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("redis")
    from aiogovernor.fleet import FleetCeiling
    from aiogovernor.state import RedisStore

    with caplog.at_level(logging.DEBUG):
        # partial, not a lambda: the traceback must start in the library, not in a closure of the test's.
        for make in (
            functools.partial(RedisStore, url),
            functools.partial(FleetCeiling, "api", cap=2, url=url),
        ):
            error: ValueError | None = None
            try:
                made = make()
            except ValueError as exc:
                error = exc
            else:
                assert_secret_free(repr(made))
                assert_secret_free(repr(vars(made)) if hasattr(made, "__dict__") else "")
            if error is not None:
                assert "not a valid Redis URL" in str(error)
                for text in traceback_locals(error):
                    assert_secret_free(text)
    assert_secret_free(caplog.text)


def test_a_redis_url_shows_its_host_port_and_db() -> None:
    pytest.importorskip("redis")
    from aiogovernor.state import RedisStore

    assert (
        repr(RedisStore("redis://10.0.0.7:6380/3"))
        == "RedisStore('redis://10.0.0.7:6380/3', namespace='aiogovernor')"
    )
    assert "'redis://***@10.0.0.7:6380/3'" in repr(RedisStore(f"redis://u:{SECRET}@10.0.0.7:6380/3"))
    assert "'redis://***@[::1]:6380'" in repr(RedisStore(f"redis://[::1]:6380?password={SECRET}"))


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # redis.asyncio runs on asyncio only
async def test_an_unreachable_redis_store_logs_no_password(
    anyio_backend: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("redis")
    monkeypatch.delenv("AIOGOVERNOR_DISABLE_STATE", raising=False)
    from aiogovernor import Governor
    from aiogovernor.state import RedisStore

    store = RedisStore(f"redis://127.0.0.1:1/0?password={SECRET}", timeout_s=1)
    gov = Governor("api", store=store)
    with caplog.at_level(logging.DEBUG):
        async with gov:
            pass
        await gov.aclose()
        await store.aclose()
    assert "cannot load learned state" in caplog.text
    assert_secret_free(caplog.text)


# -- the local test server -------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_test_servers_stats_answer_after_an_upload(anyio_backend: str, tmp_path: Path) -> None:
    from aiogovernor.uploads import upload_files

    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 100)
    with LocalUpstream(UpstreamConfig(capacity=2, service_time_s=0.0)) as upstream:
        async with httpx.AsyncClient() as client:
            report = await upload_files(client, [path], url=f"{upstream.url}/upload")
            assert report.ok
            response = await client.get(f"{upstream.url}/stats")
    assert response.status_code == 200
    stats = response.json()
    assert stats["files"] == {"a.bin": 1}
    assert stats["ok"] == 1 and math.isfinite(stats["bytes_received"])
