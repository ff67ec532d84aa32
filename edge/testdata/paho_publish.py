"""Publishes readings with paho-mqtt (Debian's python3-paho-mqtt) through edge restarts, for
edge/interop_resend_test.go.

    python3 paho_publish.py HOST PORT CLIENT_ID COUNT QOS WINDOW INTERVAL_S

Sends {"device":ID,"seq":N} to devices/ID/readings with a persistent session (clean_session
False), at most WINDOW in flight. paho resends unacknowledged publishes after each reconnect,
with the DUP flag. Prints "ACK seq packet_id" for every publish the edge acknowledged (PUBACK, or
PUBCOMP for QoS 2), then "DONE" once all COUNT are acked. Exits 1 after 90 s.
"""
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt

host, port, client_id = sys.argv[1], int(sys.argv[2]), sys.argv[3]
count, qos, window, interval = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
topic = "devices/%s/readings" % client_id

lock = threading.Lock()
seq_of_mid = {}
early = set()  # mids acked before publish() returned them
acked = set()
done = threading.Event()


def ack(seq, mid):
    if seq in acked:
        return
    acked.add(seq)
    print("ACK %d %d" % (seq, mid), flush=True)
    if len(acked) == count:
        done.set()


# paho calls on_publish holding its message lock, which publish() takes too: never call publish()
# holding this lock.
def on_publish(client, userdata, mid):
    with lock:
        if mid in seq_of_mid:
            ack(seq_of_mid.pop(mid), mid)
        else:
            early.add(mid)


client = mqtt.Client(client_id=client_id, clean_session=False, protocol=mqtt.MQTTv311)
client.on_publish = on_publish
client.max_inflight_messages_set(window)
client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)
client.connect_async(host, port, keepalive=30)
client.loop_start()

deadline = time.monotonic() + 90
for seq in range(count):
    payload = json.dumps({"device": client_id, "seq": seq})
    info = client.publish(topic, payload, qos=qos)
    with lock:
        if info.mid in early:
            early.discard(info.mid)
            ack(seq, info.mid)
        else:
            seq_of_mid[info.mid] = seq
    time.sleep(interval)
if not done.wait(max(deadline - time.monotonic(), 0)):
    print("paho %s: %d of %d acked after 90 s" % (client_id, len(acked), count), file=sys.stderr, flush=True)
    sys.exit(1)
print("DONE", flush=True)
client.disconnect()
client.loop_stop()
