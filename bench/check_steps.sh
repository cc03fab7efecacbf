# What the device check scripts share (bench/cuda_check.sh, bench/cores_check.sh): sourced, not run.
# They set PY (the python), OUT (where results.jsonl goes), ANALOGIES and WS (the test sets).

step() {  # step NAME LIMIT_S COMMAND...: run it, time it, keep going
    local name=$1 limit=$2; shift 2
    echo "=== $name: $*"
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@"
    echo "=== $name: exit $? after $((SECONDS - t0)) s"
}

record() {  # record NAME RUN_DIR: its summary and its evaluation, one JSON line
    local ev
    ev=$(timeout 120 $PY -m w2v_dist -q eval --json --analogies "$ANALOGIES" --similarity "$WS" "$2" 2>/dev/null)
    $PY - "$1" "$2" "${ev:-null}" >>"$OUT/results.jsonl" <<'PYEOF'
import json, pathlib, sys
name, run, ev = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else None
ev = json.loads(ev)
print(json.dumps({"name": name, "summary": summary, "eval": ev}))
brief = {k: summary.get(k) for k in ("words_per_s", "elapsed_s", "reader_wait_s", "final_loss", "world_size", "threads", "replicas")} if summary else {}
if ev:
    brief["analogy"] = next(iter(ev["analogies"].values()))["accuracy"]
    brief["ws353"] = next(iter(ev["similarity"].values()))["spearman"]
print(name, json.dumps(brief), file=sys.stderr)
PYEOF
}
