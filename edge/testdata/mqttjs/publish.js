// Publishes readings with MQTT.js through edge restarts, for edge/interop_resend_test.go.
//
//   node publish.js URL CLIENT_ID COUNT QOS VERSION WINDOW INTERVAL_MS PAYLOAD
//
// PAYLOAD "seq" sends {"device":ID,"seq":N}; "same" sends one identical payload every time, so
// only packet ids tell the readings apart. Prints "ACK seq packet_id" for every publish the edge
// acknowledged (MQTT.js keeps unacknowledged ones in its outgoing store and resends them after each
// reconnect, without the DUP flag), then "DONE" once all COUNT are acked. Exits 1 after 90 s.
// A publish that MQTT.js fails with an error is published again under a new packet id.
'use strict';
const mqtt = require('mqtt');

const [url, clientId, countArg, qosArg, versionArg, windowArg, intervalArg, payloadMode] = process.argv.slice(2);
const count = Number(countArg), qos = Number(qosArg), windowSize = Number(windowArg), interval = Number(intervalArg);
const topic = `devices/${clientId}/readings`;

const client = mqtt.connect(url, {
  clientId, clean: false, protocolVersion: Number(versionArg), reconnectPeriod: 50, connectTimeout: 2000,
  keepalive: 30, properties: Number(versionArg) === 5 ? { sessionExpiryInterval: 3600 } : undefined,
});
client.on('error', (err) => process.stderr.write(`mqttjs ${clientId}: ${err.message}\n`));

let next = 0, inFlight = 0, acked = 0;
// Publishes MQTT.js failed with an error before sending them: it queues publishes made while it
// resends its store after a reconnect, and fails that queue with "Connection closed" if the
// connection drops again meanwhile. The application publishes them again, as it must.
const retry = [];
function publishOne() {
  if ((retry.length > 0 || next < count) && inFlight < windowSize) {
    const seq = retry.length > 0 ? retry.shift() : next++;
    inFlight++;
    const payload = payloadMode === 'same' ? '{"door":"open"}' : JSON.stringify({ device: clientId, seq });
    client.publish(topic, payload, { qos }, (err, packet) => {
      inFlight--;
      if (err) {
        process.stderr.write(`mqttjs ${clientId}: publish ${seq} failed, publishing it again: ${err.message}\n`);
        retry.push(seq);
        return;
      }
      acked++;
      process.stdout.write(`ACK ${seq} ${packet.messageId}\n`);
      if (acked === count) {
        process.stdout.write('DONE\n');
        client.end(true, () => process.exit(0));
      }
    });
  }
}
setInterval(publishOne, interval);
setTimeout(() => {
  process.stderr.write(`mqttjs ${clientId}: ${acked} of ${count} acked after 90 s\n`);
  process.exit(1);
}, 90000);
