#!/usr/bin/env python3
"""A TCP proxy that delays what the server sends back, to stand in for a server further away.

    delay_proxy.py --listen PORT --target PORT --delay-ms 1

Every byte the target sends reaches the client `--delay-ms` later (order kept); what the client
sends goes through at once, so a round trip through it takes that much longer. agent_path.sh
puts it in front of PostgreSQL with PG_DELAY_MS, for a PostgreSQL on another host than wf-heavy
(a round trip of ~1 ms across availability zones) on a machine where everything is local.
Python standard library only; asyncio's timer granularity makes the delay good to ~0.1 ms.
"""

import argparse
import asyncio
import time


async def pump(reader, writer, delay):
    """Copies reader to writer, each chunk `delay` seconds after it was read."""
    queue = asyncio.Queue()

    async def send():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.ensure_future(send())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            queue.put_nowait((time.monotonic() + delay, data))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((0, None))
    try:
        await sender
    except (ConnectionError, OSError):
        pass


async def serve(args):
    delay = args.delay_ms / 1000.0

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", args.target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pump(client_reader, server_writer, 0.0),
                             pump(server_reader, client_writer, delay))

    server = await asyncio.start_server(handle, "127.0.0.1", args.listen)
    async with server:
        await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
