#!/usr/bin/env bash
# edge-rss.sh: the edge's memory after an hour-equivalent run of a 1,000-device fleet.
#
# An hour of a typical fleet (1,000 devices, one reading per 10 s each: 360,000 readings) is replayed
# in a few minutes: by default 1,000 devices at 2 readings/s for 180 s, QoS 1, from firmware-sim
# against a real `tributary edge` on loopback with a temporary data dir and no central. The script
# samples the edge's VmRSS from /proc every few seconds and prints the peak and final RSS, the acked
# readings/s, the data dir size and the bytes per reading on disk; then it SIGTERMs the edge and
# fails unless it exits 0 within the drain timeout.
#
# Usage: deploy/soak/edge-rss.sh            (from anywhere inside the repository; Linux only)
# Knobs (environment): DEVICES=1000 RATE=2 DURATION=180 (seconds) SAMPLE_EVERY=2 (seconds)
#                      EDGE_CONFIG=file.yaml runs the edge with that config (e.g. another
#                      group_linger); the script's own flags (data dir, listeners) override it.
#                      KEEP=1 keeps the temp dir (binaries, data dir, logs, report) for a look.
#                      PROFILE_DIR=dir saves heap and goroutine profiles of the edge (its
#                      --pprof-listen) at two thirds of the run, near its peak, and after the fleet
#                      left: `go tool pprof -sample_index=inuse_space dir/heap-peak.pb.gz`.
#                      GOMEMLIMIT is passed to the edge (GOMEMLIMIT=off: no limit, the runtime's
#                      default; unset: the edge's own default).
# Exit status: 0 on a clean run; 1 when the fleet or the edge misbehaved; 2 when it could not run.
set -euo pipefail

DEVICES=${DEVICES:-1000}
RATE=${RATE:-2}
DURATION=${DURATION:-180}
SAMPLE_EVERY=${SAMPLE_EVERY:-2}
KEEP=${KEEP:-0}
EDGE_CONFIG=${EDGE_CONFIG:-}
PROFILE_DIR=${PROFILE_DIR:-}
STOP_TIMEOUT=30 # seconds the edge gets to drain and exit after SIGTERM (its drain_timeout is less)

die() { echo "edge-rss: $*" >&2; exit 2; }
[[ -r /proc/self/status ]] || die "needs Linux /proc to read the edge's VmRSS"
command -v go >/dev/null || die "needs the go tool to build the binaries"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/edge-rss.XXXXXX")
edge_pid=""
sim_pid=""
# Stop only what this script started, by PID, then remove the temp dir unless KEEP=1.
cleanup() {
	for pid in "$sim_pid" "$edge_pid"; do
		if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
			kill -KILL "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
		fi
	done
	if [[ "$KEEP" == 1 ]]; then
		echo "edge-rss: kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 2' INT TERM

echo "edge-rss: building tributary and firmware-sim"
(cd "$repo" && CGO_ENABLED=0 go build -o "$work/tributary" ./cmd/tributary &&
	CGO_ENABLED=0 go build -o "$work/firmware-sim" ./cmd/firmware-sim) || die "build failed"

data="$work/data"
mkdir -p "$data"
# Port 0: the kernel picks free loopback ports; the edge logs the addresses it bound.
config_args=()
if [[ -n "$EDGE_CONFIG" ]]; then
	[[ -r "$EDGE_CONFIG" ]] || die "EDGE_CONFIG $EDGE_CONFIG is not a readable file"
	config_args=(--config "$(cd "$(dirname "$EDGE_CONFIG")" && pwd)/$(basename "$EDGE_CONFIG")")
fi
if [[ -n "$PROFILE_DIR" ]]; then
	mkdir -p "$PROFILE_DIR" || die "cannot create PROFILE_DIR $PROFILE_DIR"
	PROFILE_DIR=$(cd "$PROFILE_DIR" && pwd)
	command -v curl >/dev/null || die "PROFILE_DIR needs curl to fetch the profiles"
	config_args+=(--pprof-listen 127.0.0.1:0)
fi
"$work/tributary" edge "${config_args[@]}" --data-dir "$data" --mqtt-listen 127.0.0.1:0 \
	--http-listen 127.0.0.1:0 --log-level info 2>"$work/edge.log" &
edge_pid=$!

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# VmRSS is RssAnon (heap, stacks, runtime) plus RssFile (the binary's own pages, clean: the kernel
# can drop them under memory pressure and read them again) plus RssShmem; "anon file" in KiB.
rss_parts() { awk '/^RssAnon:/ {a = $2} /^RssFile:/ {f = $2} END {print a + 0, f + 0}' "/proc/$1/status" 2>/dev/null || echo 0 0; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

mqtt_addr=""
http_addr=""
for _ in $(seq 100); do
	if line=$(grep -m1 'msg="edge agent ready"' "$work/edge.log" 2>/dev/null); then
		mqtt_addr=$(sed -n 's/.* mqtt=\([^ ]*\).*/\1/p' <<<"$line")
		http_addr=$(sed -n 's/.* http=\([^ ]*\).*/\1/p' <<<"$line")
		break
	fi
	kill -0 "$edge_pid" 2>/dev/null || { cat "$work/edge.log" >&2; die "the edge exited at start"; }
	sleep 0.1
done
[[ -n "$mqtt_addr" ]] || { cat "$work/edge.log" >&2; die "the edge did not log its MQTT address within 10 s"; }
idle_kib=$(rss_kib "$edge_pid")
read -r idle_anon idle_file <<<"$(rss_parts "$edge_pid")"
pprof_addr=""
if [[ -n "$PROFILE_DIR" ]]; then
	pprof_addr=$(grep -m1 'msg="pprof listening"' "$work/edge.log" | sed -n 's/.* addr=\([^ ]*\).*/\1/p')
	[[ -n "$pprof_addr" ]] || die "the edge did not log its pprof address"
fi
# Bytes the edge made the kernel write to the disk (ext4 data and metadata, fsyncs included), for
# the flash wear per reading; needs the same user as the edge, which this script is.
write_bytes() { awk '/^write_bytes:/ {print $2}' "/proc/$1/io" 2>/dev/null || echo 0; }
profile() {
	[[ -n "$pprof_addr" ]] || return 0
	curl -fsS -o "$PROFILE_DIR/heap-$1.pb.gz" "http://$pprof_addr/debug/pprof/heap?gc=1" || true
	curl -fsS -o "$PROFILE_DIR/goroutine-$1.txt" "http://$pprof_addr/debug/pprof/goroutine?debug=1" || true
	# The runtime's own accounting (heap, stacks, released) is at the end of the text heap profile.
	curl -fsS "http://$pprof_addr/debug/pprof/heap?debug=1" | sed -n '/^# runtime.MemStats/,$p' >"$PROFILE_DIR/memstats-$1.txt" || true
}
writes_before=$(write_bytes "$edge_pid")
echo "edge-rss: edge pid $edge_pid on mqtt $mqtt_addr, http $http_addr; idle RSS $(mib "$idle_kib") MiB"

total=$(awk -v d="$DEVICES" -v r="$RATE" -v s="$DURATION" 'BEGIN {printf "%d", d * r * s}')
echo "edge-rss: $DEVICES devices x $RATE readings/s x ${DURATION}s = $total readings planned (QoS 1)"
"$work/firmware-sim" --broker "tcp://$mqtt_addr" --devices "$DEVICES" --rate "$RATE" --qos 1 \
	--duration "${DURATION}s" --format json --max-device-rows 0 >"$work/report.json" 2>"$work/sim.log" &
sim_pid=$!

peak_kib=$idle_kib
peak_anon=$idle_anon
peak_file=$idle_file
samples=0
sum_kib=0
started=$SECONDS
profiled=0
deadline=$((SECONDS + DURATION + 120)) # the fleet connects, publishes, then drains its acks
while kill -0 "$sim_pid" 2>/dev/null; do
	if ((SECONDS > deadline)); then
		die "firmware-sim still running 120 s after its duration"
	fi
	kib=$(rss_kib "$edge_pid")
	read -r anon file <<<"$(rss_parts "$edge_pid")"
	if ((kib > peak_kib)); then
		peak_kib=$kib
		peak_anon=$anon
		peak_file=$file
	fi
	samples=$((samples + 1))
	sum_kib=$((sum_kib + kib))
	if ((profiled == 0 && SECONDS - started >= DURATION * 2 / 3)); then
		profile peak
		profiled=1
	fi
	if ((samples % 5 == 1)); then
		echo "edge-rss: t=$((SECONDS - started))s RSS $(mib "$kib") MiB"
	fi
	sleep "$SAMPLE_EVERY"
done
sim_status=0
wait "$sim_pid" || sim_status=$?
run_seconds=$((SECONDS - started)) # the fleet's connects, publishing and ack drain
sim_pid=""
kill -0 "$edge_pid" 2>/dev/null || { tail -20 "$work/edge.log" >&2; echo "edge-rss: the edge died during the run" >&2; exit 1; }
final_kib=$(rss_kib "$edge_pid")
if ((final_kib > peak_kib)); then
	peak_kib=$final_kib
	read -r peak_anon peak_file <<<"$(rss_parts "$edge_pid")"
fi
writes_after=$(write_bytes "$edge_pid")
# The fleet is gone: give the runtime a few seconds to hand freed memory back, then read again.
sleep 5
left_kib=$(rss_kib "$edge_pid")
read -r left_anon left_file <<<"$(rss_parts "$edge_pid")"
profile left

field() { sed -n "s/^  \"$1\": \([0-9.e+-]*\),*$/\1/p" "$work/report.json" | head -1; }
acked=$(field acked)
unacked=$(field unacked)
acked_per_s=$(printf "%.0f" "$(field acked_per_second)")
# The device's view of durability: publish to PUBACK, including the group commit's linger and fsync.
ack_ms() { sed -n '/"ack_latency"/,/}/p' "$work/report.json" | sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p" |
	awk 'NR == 1 {printf "%.1f", $1 / 1e6}'; } # the first is the fleet's; per-device rows follow
[[ -n "$acked" ]] || { cat "$work/sim.log" >&2; die "firmware-sim wrote no report (exit $sim_status)"; }

metrics=""
if [[ -n "$http_addr" ]] && command -v curl >/dev/null; then
	metrics=$(curl -fsS "http://$http_addr/metrics" || true)
fi
metric() { awk -v m="$1" '$1 == m {printf "%.0f", $2}' <<<"$metrics"; }
# The sum of a labelled counter over its labels.
metric_sum() { awk -v m="$1{" 'index($1, m) == 1 {s += $2; n++} END {if (n) printf "%.0f", s}' <<<"$metrics"; }
# A quantile of a histogram over the whole run, interpolated within its bucket as Prometheus'
# histogram_quantile does, in ms.
hist_ms() {
	awk -v m="$1_bucket{" -v q="$2" '
		index($1, m) == 1 {
			le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le)
			n++; b[n] = (le == "+Inf") ? -1 : le + 0; c[n] = $2 + 0
		}
		END {
			if (n == 0 || c[n] == 0) exit
			rank = q * c[n]; lo = 0; prev = 0
			for (i = 1; i <= n; i++) {
				if (c[i] >= rank) {
					if (b[i] < 0) {printf "> %.1f", lo * 1000; exit}
					printf "%.1f", (lo + (b[i] - lo) * (rank - prev) / (c[i] - prev)) * 1000; exit
				}
				lo = b[i]; prev = c[i]
			}
		}' <<<"$metrics"
}
edge_acked=$(metric tributary_edge_readings_acked_total)
fsyncs=$(metric tributary_edge_log_fsyncs_total)
duplicates=$(metric_sum tributary_edge_duplicates_total)

kill -TERM "$edge_pid"
edge_status=""
for _ in $(seq $((STOP_TIMEOUT * 10))); do
	if ! kill -0 "$edge_pid" 2>/dev/null; then
		edge_status=0
		wait "$edge_pid" || edge_status=$?
		break
	fi
	sleep 0.1
done
[[ -n "$edge_status" ]] || { echo "edge-rss: the edge did not exit ${STOP_TIMEOUT}s after SIGTERM" >&2; exit 1; }
edge_pid=""

# Sizes after shutdown: the log as it stays on the gateway (bbolt metadata included).
data_bytes=$(du -sb "$data" | cut -f1)
log_bytes=$(find "$data" -type f ! -name '*.db' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
# The runtime's own accounting in a saved profile: goroutines, their stacks, the heap in use, the
# heap freed but not yet handed back, and the GC's and runtime's metadata, in MiB.
runtime_figures() {
	local m="$PROFILE_DIR/memstats-$1.txt" g="$PROFILE_DIR/goroutine-$1.txt"
	[[ -s "$m" ]] || return 0
	awk -v gr="$(sed -n 's/^goroutine profile: total \([0-9]*\).*/\1/p' "$g" 2>/dev/null)" '
		{v[$2] = $4}
		END {printf "%s goroutines, stacks %.1f MiB, heap in use %.1f MiB, heap free not returned %.1f MiB, runtime metadata %.1f MiB",
			gr, v["Stack"] / 1048576, v["HeapInuse"] / 1048576, (v["HeapIdle"] - v["HeapReleased"]) / 1048576,
			(v["MSpan"] + v["MCache"] + v["BuckHashSys"] + v["GCSys"] + v["OtherSys"]) / 1048576}' "$m"
}
per_reading() { awk -v b="$1" -v n="$acked" 'BEGIN {if (n > 0) printf "%.1f", b / n; else print "n/a"}'; }

echo
echo "edge RSS, hour-equivalent run ($DEVICES devices, $RATE/s each for ${DURATION}s, QoS 1, fsync group${EDGE_CONFIG:+, config $EDGE_CONFIG})"
printf '  %-28s %s\n' \
	"RSS idle" "$(mib "$idle_kib") MiB (anon $(mib "$idle_anon"), file $(mib "$idle_file"))" \
	"RSS peak" "$(mib "$peak_kib") MiB (anon $(mib "$peak_anon"), file $(mib "$peak_file"))" \
	"RSS mean over run" "$(mib $((samples > 0 ? sum_kib / samples : 0))) MiB ($samples samples every ${SAMPLE_EVERY}s)" \
	"RSS as the fleet left" "$(mib "$final_kib") MiB" \
	"RSS 5 s after" "$(mib "$left_kib") MiB (anon $(mib "$left_anon"), file $(mib "$left_file"))" \
	"RSS per device at peak" "$(awk -v p="$peak_kib" -v i="$idle_kib" -v d="$DEVICES" 'BEGIN {printf "%.0f bytes", (p - i) * 1024 / d}')" \
	"readings acked" "$acked of $(field offered) offered, $total planned ($unacked unacked; edge counted ${edge_acked:-?})" \
	"acked readings/s" "$acked_per_s" \
	"ack latency p50 / p99" "$(ack_ms p50_ns) ms / $(ack_ms p99_ns) ms at the devices; $(hist_ms tributary_edge_ack_latency_seconds 0.5) ms / $(hist_ms tributary_edge_ack_latency_seconds 0.99) ms in the edge" \
	"fsyncs" "${fsyncs:-?} ($(awk -v a="$acked" -v f="${fsyncs:-0}" 'BEGIN {if (f > 0) printf "%.1f readings/fsync", a / f; else print "n/a"}'); $(awk -v f="${fsyncs:-0}" -v s="$run_seconds" 'BEGIN {if (s > 0) printf "%.0f", f / s; else print "?"}')/s over the ${run_seconds}s from the fleet's start to its end; fsync p50 $(hist_ms tributary_edge_fsync_seconds 0.5) / p99 $(hist_ms tributary_edge_fsync_seconds 0.99) ms)" \
	"duplicates recognised" "${duplicates:-?}" \
	"data dir" "$data_bytes bytes ($(per_reading "$data_bytes") bytes/reading)" \
	"log segments only" "$log_bytes bytes ($(per_reading "$log_bytes") bytes/reading)" \
	"disk writes (write_bytes)" "$((writes_after - writes_before)) bytes ($(per_reading $((writes_after - writes_before))) bytes/reading; payloads $(field bytes) bytes)" \
	"edge exit after SIGTERM" "$edge_status"
if [[ -n "$PROFILE_DIR" ]]; then
	printf '  %-28s %s\n' \
		"runtime near the peak" "$(runtime_figures peak)" \
		"runtime after the fleet" "$(runtime_figures left)"
fi

status=0
if [[ "$edge_status" != 0 ]]; then
	echo "edge-rss: the edge exited $edge_status after SIGTERM, want 0" >&2
	tail -20 "$work/edge.log" >&2
	status=1
fi
if [[ "$sim_status" != 0 || "${unacked:-0}" != 0 ]]; then
	echo "edge-rss: firmware-sim exited $sim_status with ${unacked:-?} unacked readings" >&2
	tail -5 "$work/sim.log" >&2
	status=1
fi
exit "$status"
