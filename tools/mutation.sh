#!/usr/bin/env bash
# Mutation testing before a release (not part of CI): mutmut 3, one module at a time, each module with
# the tests of that module only, so a full run fits well under an hour on 2 cores.
#
#   pip install -e ".[dev]"                 # mutmut (pinned)
#   tools/mutation.sh                       # all modules, one after the other
#   tools/mutation.sh metrics layout        # some of them
#   tools/mutation.sh --list                # the modules, their functions and test subsets
#
# Modules: metrics layout captions shards plan check push (see the table below), and `manual`: the
# hand-written mutants of tools/mutation_manual.py (the breaks issue 15 found, and module-level constants). Every module runs in
# its own snapshot of the working tree ($MUT_WORK/<module>, default /tmp/fusionrs-mutation/<module>), so
# edits made while it runs do not change it; the snapshot's commit and `git diff --stat` are written
# next to its results (snapshot.txt). Results: $MUT_WORK/<module>/summary.md and summary.json (counts
# per status, every survivor with its diff, `equivalent` where tools/mutation_equivalent.tsv explains it),
# and one line per module on stdout. Browse a module's mutants: cd $MUT_WORK/<module> && mutmut browse.
#
# What is not mutated (a choice, so the counts mean something): mutmut 3 mutates function bodies only, not
# module-level constants (those are pinned by explicit tests: tests/test_promises_*.py); and lines that
# only build an error or log message (`raise ...(...)`, `logger.*(...)`, `warnings.warn(...)`) are left
# alone, because mutating the wording of a message is not a change of behaviour the README promises.
# check and push are sampled: only the functions that hold their promises, and only the mutants whose
# number ends in one of $MUT_DIGITS_<MODULE> (an even, deterministic sample); the sample is printed.
#
# Env: MUT_ROOT (the repo, default: the folder above this script), MUT_WORK, MUT_JOBS (parallel mutants, default 2), MUT_DIGITS_CHECK / MUT_DIGITS_PUSH (default
# "05": the mutants numbered ...0 and ...5, ~20%; "0-9" = all of the listed functions), MUT_TIMEOUT (per
# module, seconds, default 3000).
set -euo pipefail

ROOT=${MUT_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
WORK=${MUT_WORK:-/tmp/fusionrs-mutation}
JOBS=${MUT_JOBS:-2}
PY=${PYTHON:-python}

# module | files to mutate | mutant name patterns (fnmatch; {D} = the digit sample) | tests (pytest args)
module_files() {
  case $1 in
    metrics)  echo "fusionrs_hf/metrics.py" ;;
    layout)   echo "fusionrs_hf/layout.py" ;;
    captions) echo "fusionrs_hf/captions/policies.py fusionrs_hf/captions/rules.py fusionrs_hf/captions/irfilter.py" ;;
    shards)   echo "fusionrs_hf/shards.py" ;;
    plan)     echo "fusionrs_hf/torch/plan.py fusionrs_hf/torch/dataset.py fusionrs_hf/torch/epochs.py" ;;
    check)    echo "fusionrs_hf/check/keys.py fusionrs_hf/check/images.py fusionrs_hf/check/target.py fusionrs_hf/check/shards.py fusionrs_hf/check/card.py fusionrs_hf/check/joins.py fusionrs_hf/check/repo.py fusionrs_hf/check/cli.py" ;;
    push)     echo "fusionrs_hf/push/plan.py fusionrs_hf/push/local.py fusionrs_hf/push/sender.py fusionrs_hf/push/hub.py fusionrs_hf/push/store.py fusionrs_hf/push/flow.py" ;;
    *) echo "unknown module $1" >&2; return 1 ;;
  esac
}

module_patterns() {
  local d
  case $1 in
    metrics)  echo "fusionrs_hf.metrics.*" ;;
    layout)   echo "fusionrs_hf.layout.*" ;;
    captions) echo "fusionrs_hf.captions.policies.* fusionrs_hf.captions.rules.* fusionrs_hf.captions.irfilter.*" ;;
    shards)   echo "fusionrs_hf.shards.*" ;;
    plan)     # the work plan: which rows, in which order, on which rank and worker
      for f in x_split_files x_plan_units x__slot_pieces x__buffer_order x__resolve_rank; do
        printf 'fusionrs_hf.torch.plan.%s__mutmut_* ' "$f"
      done
      printf 'fusionrs_hf.torch.dataset.xǁFusionRSIterableǁ_fast_rows__mutmut_* '
      for f in worker_rows __len__ set_epoch; do
        printf 'fusionrs_hf.torch.epochs.xǁEpochPlanningǁ%s__mutmut_* ' "$f"
      done; echo ;;
    check)
      d=${MUT_DIGITS_CHECK:-05}
      for f in keys.x_caption_key images.x_inspect_image shards.x__check_batch joins.x__joins joins.x__runs \
               joins.x__earliest_first card.x__card_findings shards.x__schema_problems target.x_resolve_target \
               repo.x__check_repo repo.x__concat_rows cli.x_run shards.x__executor_kind joins.x__resolve_sample_ids; do
        printf 'fusionrs_hf.check.%s__mutmut_*[%s] ' "$f" "$d"
      done; echo ;;
    push)     # planning: what is uploaded, in which commits, after which check
      d=${MUT_DIGITS_PUSH:-05}
      for f in flow.x__plan_files flow.x__push_snapshot flow.x_push_repo flow.x__run_check flow.x__parse_target \
               local.x__footer_only "hub.xǁ_HubTargetǁapply" "hub.xǁ_HubTargetǁsame" "hub.xǁ_HubTargetǁsame_bytes" \
               "hub.xǁ_HubTargetǁlist" "hub.xǁ_HubTargetǁprepare" "sender.xǁ_Senderǁtake" "sender.xǁ_Senderǁfinal_card" \
               local.x_rights_summary hub.x__is_pushed_path; do
        printf 'fusionrs_hf.push.%s__mutmut_*[%s] ' "$f" "$d"
      done; echo ;;
  esac
}

module_tests() {
  case $1 in
    metrics)  echo "tests/test_metrics.py tests/test_promises_metrics.py" ;;
    layout)   echo "tests/test_promises_layout.py tests/test_foundation.py tests/test_loading_script.py" ;;
    captions) echo "tests/test_captions.py tests/test_promises_captions.py" ;;
    shards)   echo "tests/test_promises_shards.py tests/test_foundation.py" ;;
    plan)     echo "tests/test_promises_stream.py tests/test_torch_stream.py -k
not vlm and not hub and (test_promises_stream or every_row or more_workers or shuffle_epochs or resume or equal_batches or bad_arguments)" ;;
    check)    echo "tests/test_check.py tests/test_promises_check.py" ;;
    push)     echo "tests/test_push.py tests/test_promises_push.py" ;;
  esac
}

ALL="metrics layout captions shards plan check push manual"

if [[ ${1:-} == --list ]]; then
  for m in ${ALL% manual}; do
    echo "$m: mutate $(module_files "$m")"
    echo "  mutants: $(module_patterns "$m")"
    echo "  tests:   $(module_tests "$m" | tr '\n' ' ')"
  done
  exit 0
fi

"$PY" -c "import mutmut" 2>/dev/null || { echo "mutmut is not installed: pip install -e '.[dev]'" >&2; exit 2; }
mods=${*:-$ALL}
mkdir -p "$WORK"

snapshot() {  # snapshot DIR MODULE
  local dir=$1 m=$2
  rm -rf "$dir"
  mkdir -p "$dir"
  # a snapshot of the working tree (tracked and untracked files, not .git or build outputs)
  (cd "$ROOT" && tar --exclude=.git --exclude=mutants --exclude='__pycache__' --exclude='*.egg-info' \
      --exclude=.ruff_cache --exclude=.pytest_cache -cf - fusionrs_hf tests tools pyproject.toml README.md \
      $(cd "$ROOT" && for d in loading_script dataset_card examples; do [[ -d $d ]] && echo $d; done)) \
    | (cd "$dir" && tar xf -)
  {
    echo "module: $m"
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git -C "$ROOT" log -1 --format=%h 2>/dev/null || echo '?')"
    echo "git diff --stat (working tree at snapshot time):"
    git -C "$ROOT" diff --stat 2>/dev/null || true
    echo "untracked: $(git -C "$ROOT" ls-files --others --exclude-standard 2>/dev/null | tr '\n' ' ')"
  } > "$dir/snapshot.txt"
}

run_manual() {  # the hand-written mutants of tools/mutation_manual.py, in their own snapshot
  local dir="$WORK/manual" start
  start=$(date +%s)
  snapshot "$dir" manual
  (cd "$dir" && "$PY" "$ROOT/tools/mutation_manual.py" "$dir")
  echo "manual: $(( $(date +%s) - start )) s; details in $dir/manual.md"
}

run_module() {
  local m=$1 dir="$WORK/$1" start
  start=$(date +%s)
  snapshot "$dir" "$m"
  {
    echo "[mutmut]"
    echo "source_paths = fusionrs_hf"
    echo "only_mutate ="
    for f in $(module_files "$m"); do echo "    $f"; done
    echo "pytest_add_cli_args_test_selection ="
    module_tests "$m" | tr ' ' '\n' | awk 'BEGIN{k=0} /^-k$/{print "    -k"; k=1; next} k==1{printf "    %s", $0; k=2; next} k==2{printf " %s", $0; next} NF{print "    " $0} END{if(k==2) print ""}'
    echo "also_copy ="
    for f in README.md loading_script dataset_card examples; do [[ -e "$dir/$f" ]] && echo "    $f"; done
    echo "pytest_add_cli_args ="
    echo "    -p"
    echo "    no:cacheprovider"
    echo "do_not_mutate_patterns ="
    echo "    ^\\s*raise\\s"
    echo "    ^\\s*logger\\.(debug|info|warning|error)\\("
    echo "    ^\\s*warnings\\.warn\\("
  } > "$dir/setup.cfg"
  # shellcheck disable=SC2046
  (cd "$dir" && timeout "${MUT_TIMEOUT:-3000}" mutmut run --max-children "$JOBS" $(module_patterns "$m") \
      > run.log 2>&1) || echo "$m: mutmut exited $? (see $dir/run.log)" >&2
  # shellcheck disable=SC2046
  (cd "$dir" && "$PY" "$ROOT/tools/mutation_report.py" "$m" $(module_patterns "$m"))
  echo "$(( $(date +%s) - start ))" > "$dir/seconds"
  echo "$m: $(cat "$dir/seconds") s; details in $dir/summary.md"
}

for m in $mods; do
  if [[ $m == manual ]]; then run_manual; continue; fi
  module_files "$m" > /dev/null
  run_module "$m"
done
