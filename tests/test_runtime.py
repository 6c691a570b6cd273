"""The runtime's enqueue when the broker misbehaves: stored work waits for the sweeper,
and callers are not held on a broker that just failed."""

from __future__ import annotations

import socket
import threading

from gateway.runtime import Runtime


class SlammingServer:
    """Accepts TCP connections and closes them at once, counting them."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.accepted = 0
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()

    def close(self):
        self.listener.close()


def test_after_a_failed_enqueue_the_next_callers_do_not_touch_the_broker_for_a_while(runtime):
    broker = SlammingServer()
    failing = Runtime(runtime.settings.model_copy(update={"redis_url": broker.url}))
    try:
        first = failing.enqueue("inbound", "process_inbound_event", 1)
        tried = broker.accepted
        second = failing.enqueue("inbound", "process_inbound_event", 2)

        assert (first, second) == (False, False)
        assert tried >= 1
        assert broker.accepted == tried  # the second caller was answered without a connection
    finally:
        broker.close()
        failing.engine.dispose()
