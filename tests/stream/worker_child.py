"""One worker of several on one agent, for tests/stream/test_workers.py: no queue_dir (each worker gets a
worker queue of its own under $AGENTS_BAR_STREAM_QUEUE_ROOT), durability="step" so that a step whose
index was reported is on disk. Steps carry (index, worker tag, run) in obs; each index is reported on
stdout once step() returned. After ``limit`` steps it waits for a line on stdin, then closes."""

import os
import sys
import time

from agents_bar_stream import Client, RemoteAgent, StreamOptions


def main() -> None:
    url, user, password, name, tag, run, limit = sys.argv[1:8]
    agent = RemoteAgent(Client(base_url=url, username=user, password=password), name,
                        stream=StreamOptions(durability="step"))
    out = sys.stdout.fileno()
    agent.open_queue()  # takes a free worker queue now (and delivers what a dead worker left in it)
    os.write(out, b"ready %s %s\n" % (agent.stats["queue_dir"].encode(), agent.stats["producer_id"].encode()))
    for i in range(int(limit)):
        agent.step([float(i), float(tag), float(run), 0.0], i % 2, 0.0, [0.0, 0.0, 0.0, 0.0], False)
        os.write(out, b"%d\n" % i)
        time.sleep(0.002)
    os.write(out, b"stepped\n")
    sys.stdin.readline()
    agent.close(timeout=60)
    os.write(out, b"done %d\n" % agent.pending)


if __name__ == "__main__":
    main()
