"""A Hypothesis state machine over the file store: saves, deletes, damage, new processes, old files.

The store is checked against a dict: every readable record saved is loaded
back as saved, a damaged record is skipped (and listed by ``names`` so that
reset can remove it) while the others load, a new process (a dropped
connection, another store object) sees the same, and a legacy JSON file
written beside the database adds only the governors the database lacks.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from aiogovernor.state import JsonFileStore, LearnedState
from aiogovernor.state._json import _forget_database

NAMES = st.sampled_from(["api", "db", "https://x.example:443", "gov/with/slashes", "ünï"])
ENVS = st.sampled_from(["prod", "staging"])
BAD = st.sampled_from(
    [
        json.dumps(
            {"schema_version": 1, "limit": 10**400, "policy": "aimd", "updated_at": 0.0, "sample_count": 0}
        ),
        json.dumps(
            {"schema_version": 1, "limit": 2.0, "policy": "aimd", "updated_at": 0.0, "sample_count": 1.5}
        ),
        json.dumps(
            {"schema_version": 99, "limit": 2.0, "policy": "aimd", "updated_at": 0.0, "sample_count": 0}
        ),
        "{not json",
        "[" * 5000,
    ]
)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="aiogovernor-machine-"))
        self.store = JsonFileStore(self.directory)
        self.good: dict[tuple[str, str], LearnedState] = {}
        self.bad: set[tuple[str, str]] = set()

    def teardown(self) -> None:
        for env in ("prod", "staging"):
            _forget_database(self.store.path_for(env))
        shutil.rmtree(self.directory, ignore_errors=True)

    @rule(env=ENVS, name=NAMES, limit=st.floats(min_value=1.0, max_value=1e6), samples=st.integers(0, 2**62))
    def save(self, env: str, name: str, limit: float, samples: int) -> None:
        state = LearnedState(limit=limit, policy="aimd", updated_at=1.0, sample_count=samples)
        self.store._save_sync(env, name, json.dumps(state.to_json()))
        self.good[(env, name)] = state
        self.bad.discard((env, name))

    @rule(env=ENVS, name=NAMES, raw=BAD)
    def damage_a_record(self, env: str, name: str, raw: str) -> None:
        self.store._save_sync(
            env, "probe", json.dumps(LearnedState(limit=1.0, policy="p", updated_at=0.0).to_json())
        )
        self.good[(env, "probe")] = LearnedState(limit=1.0, policy="p", updated_at=0.0)
        conn = sqlite3.connect(self.store.path_for(env))
        with conn:
            conn.execute("INSERT OR REPLACE INTO governors (name, record) VALUES (?, ?)", (name, raw))
        conn.close()
        self.good.pop((env, name), None)
        self.bad.add((env, name))

    @rule(env=ENVS, name=NAMES)
    def delete(self, env: str, name: str) -> None:
        there = (env, name) in self.good or (env, name) in self.bad
        assert self.store._delete_sync(env, name) is there
        self.good.pop((env, name), None)
        self.bad.discard((env, name))

    @rule()
    def a_new_process(self) -> None:
        for env in ("prod", "staging"):
            _forget_database(self.store.path_for(env))
        self.store = JsonFileStore(self.directory)

    @rule(env=ENVS, names=st.lists(NAMES, max_size=3, unique=True), limit=st.floats(1.0, 100.0))
    def an_older_version_writes_its_file(self, env: str, names: list[str], limit: float) -> None:
        state = LearnedState(limit=limit, policy="old", updated_at=0.0)
        doc = {
            "format": "aiogovernor-state",
            "schema_version": 1,
            "governors": {n: state.to_json() for n in names},
        }
        (self.directory / f"{env}.json").write_text(json.dumps(doc))
        _forget_database(self.store.path_for(env))  # it is noticed when the database is opened
        for name in names:
            if (env, name) not in self.good and (env, name) not in self.bad:
                self.good[(env, name)] = state

    @invariant()
    def the_store_holds_what_was_saved(self) -> None:
        for env in ("prod", "staging"):
            expected = {n: s for (e, n), s in self.good.items() if e == env}
            assert self.store._list_sync(env) == expected
            names = {n for (e, n) in self.good.keys() | self.bad if e == env}
            assert set(self.store._names_sync(env)) == names
            for name in names:
                assert self.store._load_sync(env, name) == expected.get(name)


TestStore = StoreMachine.TestCase
TestStore.settings = settings(max_examples=15, stateful_step_count=12, deadline=None)
