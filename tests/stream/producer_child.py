"""A robot's loop in its own process, for the crash tests: steps as fast as it can and reports each
index once ``step()`` has returned for it (one line on stdout). The test kills it with SIGKILL."""

import os
import sys

from agents_bar_stream import Client, RemoteAgent, StreamOptions


def main() -> None:
    url, user, password, name, queue_dir, durability, run, limit = sys.argv[1:9]
    run_id, limit_n = int(run), int(limit)
    agent = RemoteAgent(Client(base_url=url, username=user, password=password), name,
                        stream=StreamOptions(queue_dir=queue_dir, durability=durability))
    out = sys.stdout.fileno()
    os.write(out, b"ready\n")
    for i in range(limit_n):
        agent.step([float(i), float(run_id), 0.0, 0.0], i % 2, 0.0, [0.0, 0.0, 0.0, 0.0], False)
        os.write(out, b"%d\n" % i)
    agent.close(timeout=10)
    os.write(out, b"done\n")


if __name__ == "__main__":
    main()
