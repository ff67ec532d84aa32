"""Reads central's Kafka listener with kafka-python, for sync/central/kafkapython_test.go.

kafka-python is pure Python: its own protocol code and a consumer-group coordinator modelled
on the Java client's; no librdkafka, no franz-go.

  consume.py read   BOOTSTRAP TOPIC [--sasl=MECHANISM --user=U --password=P --ca=FILE]
  consume.py split  BOOTSTRAP TOPIC GROUP COUNT
  consume.py resume BOOTSTRAP TOPIC GROUP

read:   one consumer without a group, assigned every partition, reads TOPIC from the beginning
        up to the end offsets it listed first.
split:  two consumers join GROUP and must split the partitions; the second leaves and the
        first must take over every partition; it then reads on until COUNT records were read
        in all, commits what it consumed, prints the committed offsets and leaves.
resume: one consumer in GROUP prints the group's committed offsets and reads from them up to
        the end offsets it listed first.

Every record read is printed as a JSON line {"c":consumer,"p":..,"o":..,"k":..,"v":..,"h":{..}};
facts the Go test checks are printed as {"event":..}. An error prints
{"event":"error","name":..,"message":..} and exits 2; every wait gives up after 60 s.
"""

import json
import logging
import sys
import threading
import time

from kafka import KafkaConsumer, TopicPartition

DEADLINE = time.time() + 60
OUT = threading.Lock()  # one line at a time from the group's member threads


def out(obj):
    line = json.dumps(obj) + "\n"
    with OUT:
        sys.stdout.write(line)
        sys.stdout.flush()


def fail(err):
    out({"event": "error", "name": type(err).__name__, "message": str(err)})
    sys.exit(2)


def check_time(what):
    if time.time() > DEADLINE:
        raise TimeoutError("%s within 60s" % what)


def consumer(bootstrap, name, group, flags):
    conf = dict(
        bootstrap_servers=[bootstrap],
        client_id="kafka-python-" + name,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        max_poll_interval_ms=30000,
        request_timeout_ms=10000,
        fetch_max_wait_ms=250,
        # Small fetches interleave the partitions, so a commit mid-stream covers all of them.
        max_partition_fetch_bytes=16384,
        api_version_auto_timeout_ms=10000,
        reconnect_backoff_max_ms=1000,
    )
    if "sasl" in flags:
        conf.update(security_protocol="SASL_SSL", ssl_cafile=flags["ca"], ssl_check_hostname=True,
                    sasl_mechanism=flags["sasl"], sasl_plain_username=flags["user"],
                    sasl_plain_password=flags["password"])
    return KafkaConsumer(**conf)


def record(name, r):
    out({"c": name, "p": r.partition, "o": r.offset, "k": r.key.decode(), "v": r.value.decode(),
         "h": {k: v.decode() for k, v in r.headers}})


def partitions(c, topic):
    while True:
        ps = c.partitions_for_topic(topic)
        if ps:
            return [TopicPartition(topic, p) for p in sorted(ps)]
        check_time("no partitions of %s" % topic)
        time.sleep(0.1)


def until_end(c, name, tps, nxt):
    """Polls c until every partition in tps reached the end offset listed now; nxt maps a
    partition to the next offset to read."""
    end = {tp.partition: o for tp, o in c.end_offsets(tps).items()}
    while any(nxt[p] < end[p] for p in end):
        check_time("records up to the end offsets %s, at %s," % (end, nxt))
        for recs in c.poll(timeout_ms=250).values():
            for r in recs:
                record(name, r)
                nxt[r.partition] = r.offset + 1


def read(bootstrap, topic, flags):
    c = consumer(bootstrap, "read", None, flags)
    tps = partitions(c, topic)
    c.assign(tps)
    c.seek_to_beginning(*tps)
    nxt = {tp.partition: o for tp, o in c.beginning_offsets(tps).items()}
    until_end(c, "c", tps, nxt)
    c.close()
    out({"event": "end"})


class Member(threading.Thread):
    """One group member, polled from its own thread as kafka-python requires: a member rejoins
    a rebalancing group only from poll, so two members polled in turn from one thread would
    wait on each other's JoinGroup."""

    def __init__(self, name, c, shared):
        super().__init__(daemon=True)
        self.name, self.c, self.shared = name, c, shared
        self.assigned = []
        self.slow = True  # one record a poll, so the records last until the group settled twice
        self.limit = None  # stop polling once the shared count reaches this
        self.leave = threading.Event()
        self.done = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.leave.is_set():
                with self.shared["lock"]:
                    if self.limit is not None and self.shared["read"] >= self.limit:
                        break
                    want = 1 if self.slow else min(100, self.limit - self.shared["read"])
                recs = self.c.poll(timeout_ms=100, max_records=want)
                with self.shared["lock"]:
                    for rs in recs.values():
                        for r in rs:
                            record(self.name, r)
                            self.shared["read"] += 1
                self.assigned = sorted(tp.partition for tp in self.c.assignment())
                if self.slow:
                    time.sleep(0.01)
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.error = e
        finally:
            self.done.set()


def wait_for(cond, what, members):
    while not cond():
        for m in members:
            if m.error is not None:
                raise m.error
        check_time(what())
        time.sleep(0.02)


def split(bootstrap, topic, group, count):
    c1 = consumer(bootstrap, "c1", group, {})
    c2 = consumer(bootstrap, "c2", group, {})
    n = len(partitions(c1, topic))
    c1.subscribe([topic])
    c2.subscribe([topic])
    shared = {"lock": threading.Lock(), "read": 0}
    m1, m2 = Member("c1", c1, shared), Member("c2", c2, shared)
    m1.start()
    m2.start()
    wait_for(lambda: m1.assigned and m2.assigned and sorted(m1.assigned + m2.assigned) == list(range(n)),
             lambda: "no split: c1 %s, c2 %s" % (m1.assigned, m2.assigned), [m1, m2])
    out({"event": "split", "c1": m1.assigned, "c2": m2.assigned, "read": shared["read"]})
    # c2 leaves (LeaveGroup) without committing: c1 reads again what c2 read, as Kafka promises.
    m2.leave.set()
    wait_for(m2.done.is_set, lambda: "c2 still polling", [m2])
    c2.close(autocommit=False)
    wait_for(lambda: m1.assigned == list(range(n)), lambda: "c1 did not take over: %s" % m1.assigned, [m1])
    out({"event": "takeover", "c1": m1.assigned, "read": shared["read"]})
    with shared["lock"]:
        m1.limit, m1.slow = count, False
    wait_for(m1.done.is_set, lambda: "only %d of %d records read" % (shared["read"], count), [m1])
    if m1.error is not None:
        raise m1.error
    c1.commit()  # the offsets of the records returned so far, synchronously
    committed = {str(p): c1.committed(TopicPartition(topic, p)) for p in range(n)}
    out({"event": "committed", "offsets": {p: -1 if o is None else o for p, o in committed.items()}})
    c1.close(autocommit=False)
    out({"event": "left", "read": shared["read"]})


def resume(bootstrap, topic, group):
    c = consumer(bootstrap, "c3", group, {})
    tps = partitions(c, topic)
    committed = {tp.partition: c.committed(tp) for tp in tps}
    out({"event": "committed", "offsets": {str(p): -1 if o is None else o for p, o in committed.items()}})
    nxt = {tp.partition: max(o, committed[tp.partition] or 0) for tp, o in c.beginning_offsets(tps).items()}
    c.subscribe([topic])
    until_end(c, "c3", tps, nxt)
    c.close(autocommit=False)
    out({"event": "end"})


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
    mode, bootstrap, topic = args[:3]
    if mode == "read":
        read(bootstrap, topic, flags)
    elif mode == "split":
        split(bootstrap, topic, args[3], int(args[4]))
    elif mode == "resume":
        resume(bootstrap, topic, args[3])
    else:
        raise ValueError("unknown mode " + mode)


if __name__ == "__main__":
    # kafka-python's own log goes to stderr: it explains a failure.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    try:
        main()
    except Exception as e:  # noqa: BLE001 - every failure becomes one JSON line and exit 2
        fail(e)
