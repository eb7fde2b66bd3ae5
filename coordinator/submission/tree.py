"""Write the submission tree (MLCommons' submission_structure.md, as the v6.x checker reads it):

    DIVISION/ORG/systems/NAME.json
    DIVISION/ORG/src/BENCHMARK/README.md          (the layout document says code/; the checker since v6.0 src/)
    DIVISION/ORG/results/NAME/BENCHMARK/SCENARIO/
        performance/run_1/   mlperf_log_summary.txt, mlperf_log_detail.txt (and its accuracy log)
        accuracy/            accuracy.txt (with the hash), mlperf_log_accuracy.json (truncated), LoadGen's logs
        TEST06/              verify_accuracy.txt, accuracy/mlperf_log_accuracy.json, performance/run_1/
        user.conf, mlperf.conf, measurements.json, README.md

The tree is written into a temporary folder beside --output and renamed into place once whole.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from llmbench.coordinator.loadgen.detail_log import DETAIL_FILE
from llmbench.coordinator.loadgen.summary import SUMMARY_FILE
from llmbench.coordinator.run.outputs import ACCURACY_FILE, ACCURACY_LOG, VERIFY_FILE
from llmbench.coordinator.submission import conf_files, texts, truncate
from llmbench.coordinator.submission.plan import Plan, Result
from llmbench.coordinator.submission.run_folder import RunFolder

CODE_FOLDER = "src"
RUN_1 = Path("performance", "run_1")


def _copy(run: RunFolder, names: list[str], to: Path, optional: tuple[str, ...] = ()) -> None:
    to.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name in optional and not run.file(name).is_file():
            continue
        shutil.copyfile(run.file(name), to / name)


def _result(plan: Plan, result: Result, folder: Path, mlperf_conf: str, demo_note: str) -> None:
    logs = [SUMMARY_FILE, DETAIL_FILE]
    _copy(result.performance, [*logs, ACCURACY_LOG], folder / RUN_1, optional=(ACCURACY_LOG,))
    accuracy = folder / "accuracy"
    _copy(result.accuracy, logs, accuracy)
    truncate.write_truncated(result.accuracy.file(ACCURACY_LOG), result.accuracy.file(ACCURACY_FILE).read_text(),
                             accuracy / ACCURACY_LOG, accuracy / ACCURACY_FILE)
    if result.test06 is not None:
        test06 = folder / "TEST06"
        _copy(result.test06, [VERIFY_FILE], test06)
        _copy(result.test06, [ACCURACY_LOG], test06 / "accuracy")
        _copy(result.test06, logs, test06 / RUN_1)
    (folder / "user.conf").write_text(conf_files.user_conf(result.performance))
    (folder / "mlperf.conf").write_text(mlperf_conf)
    (folder / "measurements.json").write_text(texts.measurements(result))
    (folder / "README.md").write_text(texts.scenario_readme(plan, result, demo_note))


def write(plan: Plan, system: dict, output: Path, *, system_id: str, demo_note: str) -> Path:
    """The tree under `output` (which must not exist yet, or be empty); returns the submitter's folder."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"--output {output} already exists and is not empty: choose a new folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    mlperf_conf = conf_files.mlperf_conf(str(plan.runs[0].detail.get("loadgen_version", "")))
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        org = staging / system["division"] / system["submitter"]
        (org / "systems").mkdir(parents=True)
        (org / "systems" / f"{system_id}.json").write_text(json.dumps(system, indent=4) + "\n")
        code = org / CODE_FOLDER / plan.benchmark.name
        code.mkdir(parents=True)
        (code / "README.md").write_text(texts.code_readme(plan, demo_note))
        for result in plan.results:
            _result(plan, result, org / "results" / system_id / plan.benchmark.name / result.scenario, mlperf_conf,
                    demo_note)
        if output.exists():
            output.rmdir()
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output / system["division"] / system["submitter"]
