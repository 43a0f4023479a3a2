"""What a governor learned is kept: run this twice, and the second run starts where the first ended.

    .venv/bin/python examples/learned_state.py      # learns the knee from the default start
    .venv/bin/python examples/learned_state.py      # starts at the limit the first run saved
    .venv/bin/python examples/learned_state.py --reset

The upstream is simulated in virtual time (a few seconds of traffic take a fraction of one), and
serves 24 requests at once. The learned state goes to a folder of its own in the system's
temporary directory (printed), never into your home: a real program uses the default store
(`$AIOGOVERNOR_STATE_DIR`, else the user's state folder), or names one with ``store=``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path

from aiogovernor import Governor
from aiogovernor.sim import KneeUpstream, run_virtual
from aiogovernor.state import JsonFileStore

STATE_DIR = Path(tempfile.gettempdir()) / "aiogovernor-example-state"


async def run(store: JsonFileStore) -> None:
    upstream = KneeUpstream(capacity=24, service_time_s=0.05, seed=1)
    gov = Governor("reports-api", store=store, environment="example")
    async with gov:  # the first permit loads what an earlier run saved
        await upstream()
    print(f"starting at limit {gov.limit}")

    async def caller() -> None:
        for _ in range(40):
            async with gov:
                await upstream()

    await asyncio.gather(*(caller() for _ in range(100)))
    print(f"after 4 000 calls: limit {gov.limit}")
    await gov.aclose()  # save what was learned now (a governor also saves as it goes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--reset", action="store_true", help="forget what the earlier runs learned")
    args = parser.parse_args()
    if args.reset:
        shutil.rmtree(STATE_DIR, ignore_errors=True)
        print(f"removed {STATE_DIR}")
        return
    print(f"learned state in {STATE_DIR}")
    run_virtual(run(JsonFileStore(STATE_DIR)))


if __name__ == "__main__":
    main()
