"""The client of compact.sh: one sequential client drives N diamond workflows through either
today's script library (`today`) or compact.lua's (`compact`), the same way for both: submit
all (pipelined, 50 per round trip), then read up to 32 entries (begun in the read) and
complete them (pipelined), until nothing is left; then checks every workflow completed.

    python compact_drive.py capture MONITOR_OUTPUT SUBMIT_JSON
    python compact_drive.py today|compact PORT N SUBMIT_JSON [SUBMIT_BATCH READ_COUNT COMPLETE_BATCH]

The batch sizes (defaults 50, 32, 32) set how many requests share one round trip: the
submissions per pipeline, the entries one read asks for, and the completions per pipeline
(batching.sh varies them to show what a round trip costs Redis).

With the environment variable COMPLETE_MANY=k (k > 1) the `today` backend completes k
entries per call of `<library>_complete_many` (lua/complete_many.lua, what a busy worker's
grouped completions call; docs/benchmarks.md "The fifteenth round"), in the order the read
gave them, so a diamond's siblings read together are completed together.

With SUBMIT_ONLY=1 it submits and stops (the submissions' share of the instructions:
profile.sh's count divided by the tasks submitted).

`capture` takes one `submit` call from the output of `redis-cli MONITOR` (a benchmark
submission), so both backends submit exactly what `gleitzeit-bench` submits: the same task
specs, names, capabilities and counts, under fresh workflow ids.
"""
import json
import os
import sys
import time
import uuid

import redis

COMPLETE_MANY = int(os.environ.get("COMPLETE_MANY", "1"))
SUBMIT_ONLY = os.environ.get("SUBMIT_ONLY") == "1"

SEP, SUB, REF = b"\x1f", b"\x1e", b"\x1d"
FIELDS = 10  # submit.lua's arguments per task (task hashes, fields layout)
PACKED_FIELDS = 5  # ... in the packed layout
RESULT = (b'{"value":"bench: root","meta":{"model":"bench","endpoint":"sim",'
          b'"prompt_tokens":1,"completion_tokens":2,"duration_ms":0,"ttft_ms":0}}')


def monitor_args(line):
    """The quoted arguments of one MONITOR line, unescaped."""
    s, out, j = line[line.index("] ") + 2:], [], 0
    escapes = {"n": 10, "r": 13, "t": 9, "a": 7, "b": 8, '"': 34, "\\": 92}
    while j < len(s):
        if s[j] != '"':
            j += 1
            continue
        j, buf = j + 1, bytearray()
        while s[j] != '"':
            if s[j] == "\\":
                if s[j + 1] == "x":
                    buf.append(int(s[j + 2:j + 4], 16))
                    j += 4
                else:
                    buf.append(escapes[s[j + 1]])
                    j += 2
            else:
                buf += s[j].encode()
                j += 1
        out.append(bytes(buf))
        j += 1
    return out


def capture(monitor, path):
    for line in open(monitor, encoding="utf-8", errors="surrogateescape"):
        if '"FCALL"' in line and '_submit"' in line:
            json.dump([a.hex() for a in monitor_args(line)], open(path, "w"))
            return
    sys.exit("no submit call in " + monitor)


def main():
    if sys.argv[1] == "capture":
        capture(sys.argv[2], sys.argv[3])
        return
    backend, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sizes = [int(x) for x in sys.argv[5:8]]
    submit_batch, read_count, complete_batch = sizes + [50, 32, 32][len(sizes):]
    argv = [bytes.fromhex(h) for h in json.load(open(sys.argv[4]))]
    # FCALL <function> 1 <workflow key> <prefix> <group> <wf> <name> <idem> <digest> <policy>
    # <input> <now> <retention> <maxlen> <N> <watch> [<layout>] <tasks...> (the layout
    # argument since the eleventh round: the tasks are the last N * FIELDS, or, in the
    # packed layout of the twelfth round, N * PACKED_FIELDS, taken apart here)
    prefix, group, wf0 = argv[4], argv[5], argv[6]
    tasks = int(argv[15])
    if argv[17] == b"packed":
        first = len(argv) - tasks * PACKED_FIELDS
        spec = []
        for k in range(tasks):
            d, kids, deps, cap, prio = argv[first + k * PACKED_FIELDS:
                                            first + (k + 1) * PACKED_FIELDS]
            name, maxa, onf, below, refs, body = d.split(SEP, 5)
            refs = b",".join(r.split(SUB)[0] for r in refs.split(REF) if r)
            children = b",".join(c.split(SUB)[0] for c in kids.split(REF) if c)
            spec.append([name, cap, prio, body, deps, children, refs, maxa, onf, below])
    else:
        first = len(argv) - tasks * FIELDS
        spec = [argv[first + k * FIELDS:first + (k + 1) * FIELDS] for k in range(tasks)]
    r = redis.Redis(port=port)
    today = argv[1].decode()[:-len("_submit")]
    # The code before the twelfth round's review passed the task's hash as complete.lua's
    # KEYS[1] (three keys); since then the workflow hash and the stream (two).
    code = r.execute_command("FUNCTION", "LIST", "LIBRARYNAME", today, "WITHCODE")
    task_key_first = b"local tk, wk, stream = KEYS[1], KEYS[2], KEYS[3]" in repr(code).encode()
    consumer, maxlen = b"c1", argv[14]
    streams = [prefix + b"q:" + spec[0][1] + s for s in (b"#high", b"", b"#low")]

    def now():
        return str(int(time.time() * 1000)).encode()

    def submit(ids):
        p = r.pipeline(transaction=False)
        for wf in ids:
            if backend == "today":
                a = list(argv[4:])
                a[2], a[8] = wf, now()
                p.execute_command("FCALL", today + "_submit", 1, prefix + b"wf:" + wf, *a)
                continue
            names = [t[0] for t in spec]
            packed = []
            for name, cap, prio, body, deps, children, refs, maxa, onf, below in spec:
                refs = REF.join(x + SUB + names[int(x)] for x in refs.split(b",") if x)
                kids = SEP.join(c + SUB + spec[int(c)][1] + SUB + spec[int(c)][2]
                                for c in children.split(b",") if c)
                packed += [SEP.join([name, refs, maxa, onf, below, body]), kids, deps, cap, prio]
            p.execute_command("FCALL", "gleitzeit_compact_submit", 1, prefix + b"w:" + wf,
                              prefix, group, wf, argv[7], argv[8], argv[9], argv[10], argv[11],
                              now(), argv[13], maxlen, argv[15], b"", *packed)
        for reply in p.execute():
            assert reply[0] == 1, reply

    def work():
        fn = today if backend == "today" else "gleitzeit_compact"
        while True:
            out, _ = r.execute_command("FCALL", fn + "_read", 3, *streams, prefix, group,
                                       consumer, read_count, now(), maxlen, b"")
            if not out:
                return
            p = r.pipeline(transaction=False)

            many = []

            def send_many():
                keys, args = [], [prefix, group, consumer, maxlen]
                for wk, stream, entry, wf, t in many:
                    keys += [wk, stream]
                    args += [entry, b"1", RESULT, now(), wf, t]
                p.execute_command("FCALL", today + "_complete_many", len(keys), *keys, *args)
                many.clear()

            def flush():
                if many:
                    send_many()
                for reply in p.execute():
                    # complete_many replies with one completion's reply per entry.
                    for one in reply if COMPLETE_MANY > 1 else [reply]:
                        assert one == 1 or (isinstance(one, list) and one[0] == 1), one

            for j in range(0, len(out), 5):
                k, entry, wf, t, begun = out[j:j + 5]
                assert begun[0] == 1, begun
                if backend == "today" and COMPLETE_MANY > 1:
                    many.append((prefix + b"wf:" + wf, streams[k - 1], entry, wf, t))
                    if len(many) >= COMPLETE_MANY:
                        send_many()
                elif backend == "today":
                    keys = [prefix + b"wf:" + wf, streams[k - 1]]
                    if task_key_first:
                        keys.insert(0, prefix + b"wf:" + wf + b":t:" + t)
                    p.execute_command("FCALL", today + "_complete", len(keys), *keys, prefix,
                                      group, entry, consumer, b"1", RESULT, now(), maxlen, wf,
                                      t)
                else:
                    p.execute_command("FCALL", "gleitzeit_compact_complete", 2,
                                      prefix + b"w:" + wf, streams[k - 1], prefix, group, entry,
                                      consumer, b"1", RESULT, now(), maxlen, wf, t)
                if len(p) >= complete_batch:
                    flush()
            flush()

    ids = [wf0[:-12] + uuid.uuid4().hex[:12].encode() for _ in range(n)]
    for s in range(0, n, submit_batch):
        submit(ids[s:s + submit_batch])
    if SUBMIT_ONLY:
        print(f"{backend}: {n} workflows submitted")
        return
    work()
    # Every workflow ended completed: its status field, in either layout.
    p = r.pipeline(transaction=False)
    for wf in ids:
        if backend == "today":
            p.hget(prefix + b"wf:" + wf, "status")
        else:
            p.hget(prefix + b"w:" + wf, "st")
    statuses = p.execute()
    assert all(s == b"completed" for s in statuses), set(statuses)
    print(f"{backend}: {n} workflows completed")


if __name__ == "__main__":
    main()
