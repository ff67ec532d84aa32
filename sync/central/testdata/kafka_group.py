"""Consumer-group checks against central's Kafka listener with librdkafka (confluent_kafka).

Usage: kafka_group.py split|resume BOOTSTRAP GROUP TOPIC COUNT COMMIT_AT

split:  two consumers join GROUP and must split the partitions between them; the second
        leaves and the first must take over every partition. The first then reads on
        until COUNT records were read in all, committing synchronously once, after COMMIT_AT
        records and one of every partition since the takeover, and exits without committing the rest.
resume: one consumer in GROUP reads until COUNT records arrived or the stream stays quiet.

Every record read is printed as a JSON line {"p":..,"o":..,"k":..,"v":..}; facts the Go test
checks are printed as {"event":..}. Errors exit non-zero with the reason on stderr.
"""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition


def out(obj):
    print(json.dumps(obj), flush=True)


def consumer(bootstrap, group, name):
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": name,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": "range",
        # Small fetches interleave the partitions, so a commit mid-stream covers all of them.
        "max.partition.fetch.bytes": 16384,
    })


def assigned(c):
    return sorted(tp.partition for tp in c.assignment())


def emit(msg):
    if msg.error():
        raise KafkaException(msg.error())
    out({"p": msg.partition(), "o": msg.offset(), "k": msg.key().decode(), "v": msg.value().decode()})


def split(bootstrap, group, topic, count, commit_at):
    partitions = len(Consumer({"bootstrap.servers": bootstrap, "group.id": group}).list_topics(topic, timeout=10).topics[topic].partitions)
    c1 = consumer(bootstrap, group, "c1")
    c2 = consumer(bootstrap, group, "c2")
    c1.subscribe([topic])
    c2.subscribe([topic])
    # Poll both without consuming more than needed: the first records read are kept and printed.
    read = 0
    deadline = time.time() + 60
    while True:
        for c in (c1, c2):
            m = c.poll(0.2)
            if m is not None:
                emit(m)
                read += 1
        a1, a2 = assigned(c1), assigned(c2)
        if a1 and a2 and sorted(a1 + a2) == list(range(partitions)):
            break
        if time.time() > deadline:
            sys.exit("no split within 60s: c1 %s, c2 %s" % (a1, a2))
    out({"event": "split", "c1": a1, "c2": a2})
    # c2 leaves; what it read but never committed is read again by c1, as Kafka promises.
    c2.close()
    deadline = time.time() + 60
    while assigned(c1) != list(range(partitions)):
        m = c1.poll(0.2)
        if m is not None:
            emit(m)
            read += 1
        if time.time() > deadline:
            sys.exit("c1 did not take over within 60s: %s" % assigned(c1))
    out({"event": "takeover", "c1": assigned(c1)})
    committed = False
    last = {}
    deadline = time.time() + 120
    while read < count or not committed:
        m = c1.poll(0.5)
        if m is None:
            if time.time() > deadline:
                sys.exit("only %d of %d records in 120s" % (read, count))
            continue
        emit(m)
        read += 1
        last[m.partition()] = m.offset()
        if read >= commit_at and len(last) == partitions and not committed:
            c1.commit(offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()], asynchronous=False)
            offs = c1.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
            out({"event": "committed", "offsets": {str(tp.partition): tp.offset for tp in offs}})
            committed = True
    c1.close()


def resume(bootstrap, group, topic, count):
    c = consumer(bootstrap, group, "c3")
    c.subscribe([topic])
    read = 0
    quiet_since = time.time()
    while read < count and time.time() - quiet_since < 10:
        m = c.poll(0.5)
        if m is None:
            continue
        emit(m)
        read += 1
        quiet_since = time.time()
    c.close()


if __name__ == "__main__":
    mode, bootstrap, group, topic = sys.argv[1:5]
    if mode == "split":
        split(bootstrap, group, topic, int(sys.argv[5]), int(sys.argv[6]))
    elif mode == "resume":
        resume(bootstrap, group, topic, int(sys.argv[5]))
    else:
        sys.exit("unknown mode " + mode)
