import threading, time
from tests.integration.test_client import *
def test_dbg(live_api):
    errors = []
    t = threading.Thread(target=approve_when_waited_on, args=(live_api, errors)); t.start()
    with StepupClient(live_api.url, live_api.agent_key, poll_seconds=20) as client:
        try:
            with client.gated(**STAGING_WRITE, timeout=12):
                pass
        except Exception as e:
            print("client", repr(e))
    t.join(15)
    print("errors", errors)
    print(dict(live_api.context.hub._waiters))
