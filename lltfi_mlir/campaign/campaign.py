"""A fault-injection campaign, three lines from Python:

    campaign = Campaign.from_onnx("lenet.onnx", "input.yaml", inputs="inputs/")
    campaign.run(1000)
    print(campaign.summary())

Compile (cached), instrument for the configured selection (cached), profile every input once,
plan trials from the seed, run them on fork-servers, classify, and store every trial in SQLite.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..build import Build
from ..compiler import CompileOptions, compile_onnx, options_of_build
from ..dialect_passes.sites import DEFAULT_OPCODES, GROUPS, SiteSelector
from ..errors import RunError, UsageError
from ..frontend.importer import OP_HOOK
from ..instrument import InstrumentedBuild, instrument_build
from ..workdir import locked, source_key, weights_digest, write_text_atomic
from .config import CampaignConfig, load_config
from .database import CampaignDatabase
from .early_end import EarlyEnd, early_end_policy
from .executor import LocalExecutor, ProgramRun, RawResult, split_outputs
from .inputs import find_input_sets
from .interrupts import signals_deferred, terminate_as_interrupt
from .memory import WeightTarget, activation_targets, check_memory_campaign, uninstrumented, weight_plan, weight_targets
from .memory import population as memory_population
from .outcomes import SdcJudge, classify
from .plan import Trial, exhaustive_size, exhaustive_trials, uniform_trial
from .profile import InputProfile, campaign_inputs_list, load_profiles, profile_cache_path, run_profile, save_profiles
from .propagation import layer_rows
from .report import summarize
from .stats import planned_trials, wilson
from .walk_executor import WalkExecutor

# Instances per input up to which the hooked self-check runs (about a second on this machine).
SELF_CHECK_LIMIT = 200_000_000
# Seconds a fault-free profile run may take when the config sets no timeout (the reference build of
# VGG16 takes about 200 s per inference here).
DEFAULT_GOLDEN_TIMEOUT = 600.0
# Output a C/C++ program may write in a trial (stdout and output files): the larger of these; more
# ends the trial as an SDC (status `output_limit`) without collecting it.
OUTPUT_LIMIT_FLOOR = 4 << 20
OUTPUT_LIMIT_FACTOR = 16

ENGINES = ("walk", "simple")
SHADOW = 1 << 40  # trial id offset of the fault-free shadow runs that record golden trace windows
WIDTH = {"f32": 32, "f64": 64, "i1": 1, "i8": 8, "i16": 16, "i32": 32, "i64": 64, "!llvm.ptr": 64}


def _jsonable(value):
    if isinstance(value, frozenset):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _engine(engine: str | None, build: Build) -> str:
    """`walk` (fork each trial at its injection point) for models, `simple` (one fork-server child
    per trial, running the whole inference) for C/C++ programs, unless asked otherwise."""
    if engine is None:
        return "simple" if build.is_program else "walk"
    if engine not in ENGINES:
        raise UsageError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "walk" and build.is_program:
        raise UsageError("the walk engine runs ONNX models; C/C++ programs run with --engine simple")
    return engine


def _cached_build(model: Path, build_dir: Path, codegen: str, opt_level: int | None) -> Build:
    """The work folder's build of `model`, reused only while the model's bytes (`source_key`), path,
    code generation and llc level are the same; under the work folder's lock, so that campaigns
    started together compile once and never run a build another one is writing."""
    key = source_key(model) if model.is_file() else None
    with locked(build_dir.parent):
        if key and (build_dir / "manifest.json").exists():
            build = Build(build_dir)
            if (build.manifest.get("source_key") == key and build.manifest.get("source") == str(model)
                    and build.manifest.get("codegen", "reference") == codegen
                    and opt_level in (None, build.manifest["opt_level"])):
                return build
        return compile_onnx(model, build_dir, CompileOptions(codegen=codegen, opt_level=opt_level))


def default_jobs(engine: str) -> int:
    """One trial per core; the walk engine one more: each walker idles while it forks and reaps its
    trial and between targets, and a core waits for a fresh child while the scheduler places it
    (ResNet-18 on 2 cores, 800 trials: 3 jobs ran 11-21% more trials/s than 2, in three A/B pairs)."""
    cores = os.cpu_count() or 1
    return cores + 1 if engine == "walk" and cores > 1 else cores


class Campaign:
    # Run although a fault-free output holds NaN or Inf (see _check_golden); set before run().
    allow_nonfinite_golden = False

    def __init__(self, build: Build, config: CampaignConfig, input_sets: list[list[Path]],
                 db: str | Path | None = None, jobs: int | None = None, program: ProgramRun | None = None,
                 engine: str | None = None, dask: str | None = None, dask_batch: int | None = None,
                 early_end: bool = True) -> None:
        self.build = build
        if build.is_program:
            program = program or ProgramRun()
            if config.sdc.files:  # files the SDC criterion compares are captured like --output-file
                program = dataclasses.replace(program, output_files=tuple(dict.fromkeys(
                    config.sdc.files + program.output_files)))
            if config.selector.require_operator:
                # A C/C++ program has no tensor operators; the model default (FP arithmetic in operators)
                # becomes every instruction kind, as LLFI's `insttype: all`.
                opcodes = GROUPS["all"] if config.selector.opcodes == DEFAULT_OPCODES else config.selector.opcodes
                config = dataclasses.replace(config, selector=dataclasses.replace(
                    config.selector, require_operator=False, opcodes=opcodes))
        self.program = program
        self.config = config
        self.input_sets = input_sets
        self.engine = _engine(engine, build)  # how trials run; not part of the campaign's identity
        self.weight_targets: list[WeightTarget] = []  # fault target weights or activations: the tensors
        if config.target != "instructions":
            check_memory_campaign(config, build, engine)
            self.engine = "simple"  # the fork-server applies memory faults (runtime/memory_faults.c)
        self.jobs = jobs or default_jobs(self.engine)
        self.dask, self.dask_batch = dask, dask_batch  # a Dask scheduler address (or "local") runs the trials
        identity = {
            "model": hashlib.sha256((build.directory / "model.llvm.mlir").read_bytes()).hexdigest()[:16],
            # Retrained weights of the same architecture are another model (not in the module above).
            **({"weights": digest[:16]} if (digest := weights_digest(build.directory, build.manifest)) else {}),
            "opt_level": build.manifest["opt_level"],
            "config": _jsonable(dataclasses.asdict(dataclasses.replace(config, runs=0, notes=()))),
            "inputs": [[str(p.resolve()) for p in s] for s in input_sets],
            "program": _jsonable(dataclasses.asdict(program)) if program else None,  # as read back from JSON
        }
        self.identity = identity
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
        self.db_path = Path(db) if db else build.directory.parent / f"campaign-{key}.db"
        self.instrumented: InstrumentedBuild | None = None
        self.profiles: list[InputProfile] = []
        self.self_check = "not run"
        self.golden: list[list[np.ndarray]] = []
        self.judge = SdcJudge(config.sdc)
        self.work_build = build
        self.output_shapes = [t.shape for t in build.outputs]
        self.output_dtypes = [t.dtype for t in build.outputs]
        self.all_shapes = self.output_shapes  # with the traced layers, once prepare() knows the build
        self.all_dtypes = self.output_dtypes
        self.output_bytes = sum(int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize
                                for t in build.outputs)  # model outputs only
        self.node_index = {n["name"]: n["index"] for n in build.manifest.get("nodes", [])}
        self.node_names = {n["index"]: n["name"] for n in build.manifest.get("nodes", [])}
        self._fast_golden: list[bytes | None] | None = None  # see _golden_bytes
        self.allow_early_end = early_end  # False: every trial runs to the end (same outcomes, slower)
        self.early_end = EarlyEnd(False, "off: not prepared")
        self.last_run_seconds = 0.0
        self.planned_trials: int | None = None  # with a margin: Leveugle's trial count
        self.last_trials = 0
        self.profile_cache: Path | None = None  # the profile's cache file, once prepare() ran
        self.profile_cached = False             # whether prepare() read it instead of profiling

    def _profile(self, inputs_list: Path) -> list[InputProfile]:
        """The profile of every input set, from its cache beside the instrumented executable when the
        executable and the input contents are unchanged (a resume starts its trials at once)."""
        self.profile_cache = profile_cache_path(self.instrumented.executable, self.input_sets, self.program)
        cached = load_profiles(self.profile_cache)
        self.profile_cached = cached is not None
        if cached is not None:
            profiles, check = cached
            self.self_check = "passed (cached)" if check == "passed" else check
            slowest = max(range(len(profiles)), key=lambda i: profiles[i].golden_seconds)
            seconds = profiles[slowest].golden_seconds
            if self.config.timeout is not None and seconds > self.config.timeout:
                raise RunError(f"a fault-free run of input set {slowest} takes {seconds:.3g} s (cached profile), "
                               f"longer than the timeout of {self.config.timeout:g} s")
            return profiles
        profiles = self._run_profile(inputs_list)
        save_profiles(self.profile_cache, profiles, self.self_check)
        return profiles

    def _run_profile(self, inputs_list: Path) -> list[InputProfile]:
        """Golden runs with unit counters, plus the hooked self-check once per instrumented build:
        with every instance through the hooks it costs seconds per 10^9 instances, so above
        SELF_CHECK_LIMIT it is skipped (and said so); the fast-path and unit counts still must agree.
        Each fault-free run gets the trial timeout (DEFAULT_GOLDEN_TIMEOUT when none is set)."""
        units = self.instrumented.units
        timeout = self.config.timeout or DEFAULT_GOLDEN_TIMEOUT
        if self.program is not None:
            return run_profile(self.instrumented.executable, inputs_list, units, program=self.program,
                               timeout=timeout)
        marker = self.instrumented.directory / "self-check.ok"
        profiles = run_profile(self.instrumented.executable, inputs_list, units, check=False, timeout=timeout)
        total = max(p.total for p in profiles)
        if marker.exists():
            self.self_check = "passed (cached)"
        elif total <= SELF_CHECK_LIMIT:
            run_profile(self.instrumented.executable, inputs_list, units, repeat=1, check=True, timeout=timeout)
            marker.write_text(f"{total}\n")
            self.self_check = "passed"
        else:
            self.self_check = (f"skipped: {total:,} instances per input exceed {SELF_CHECK_LIMIT:,} (the fast paths "
                               "and unit counters agree)")
        return profiles

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_onnx(cls, model: str | Path, config: CampaignConfig | str | Path | None = None,
                  inputs: str | Path | None = None, out_dir: str | Path | None = None,
                  opt_level: int | None = None, codegen: str = "optimized", **kwargs) -> Campaign:
        model = Path(model)
        config = config if isinstance(config, CampaignConfig) else load_config(config)
        # Exported models are often all called model.onnx: name the work directory after the folder.
        name = model.parent.name if model.stem == "model" and model.parent.name else model.stem
        out = Path(out_dir) if out_dir else Path("lltfi-out") / name
        build = _cached_build(model, out / "build", codegen, opt_level)
        return cls(build, config, find_input_sets(inputs, build, model.parent), **kwargs)

    @classmethod
    def from_build(cls, build_dir: str | Path, config: CampaignConfig | str | Path | None = None,
                   inputs: str | Path | None = None, **kwargs) -> Campaign:
        build = Build(build_dir)
        config = config if isinstance(config, CampaignConfig) else load_config(config)
        if build.is_program:
            return cls(build, config, [[]], **kwargs)
        source = build.manifest.get("source", "")
        model_dir = Path(source).parent if source and not source.startswith("<") else None
        return cls(build, config, find_input_sets(inputs, build, model_dir), **kwargs)

    # -- preparation ----------------------------------------------------------------------------------
    def prepare(self) -> CampaignDatabase:
        """Instrument, profile every input, and open (or resume) the database."""
        selector = self.config.selector
        if self.config.level == "operator":
            if self.build.is_program or self.config.trace_layers:
                raise UsageError("operator-level injection needs an ONNX model and no layer tracing")
            self.work_build = self._sibling_build("ophooks", op_hooks=True)
            selector = dataclasses.replace(selector, opcodes=frozenset({"call"}), exclude_opcodes=frozenset(),
                                           callees=frozenset({OP_HOOK}), register="dst")
        elif self.config.trace_layers and not self.build.is_program:
            self.work_build = self._sibling_build("traced", trace=True)
        else:
            self.work_build = self.build
        self.all_shapes = [t.shape for t in self.work_build.all_outputs]
        self.all_dtypes = [t.dtype for t in self.work_build.all_outputs]
        if self.config.target == "weights":
            # On the traced build when layers are traced: the same tensors, in its own weight table.
            self.weight_targets = weight_targets(self.work_build, self.config.selector, self.config.tensors)
            if self.work_build is not self.build and [(t.tensor, t.count) for t in self.weight_targets] != [
                    (t.tensor, t.count) for t in weight_targets(self.build, self.config.selector, self.config.tensors)]:
                raise UsageError("the layer-tracing build stores other weight tensors than the plain build")
            self.instrumented = uninstrumented(self.work_build)
        elif self.config.target == "activations":  # flipped at the operator boundaries of an instrumented build
            self.weight_targets = activation_targets(self.build, self.config.selector)
            self.instrumented = instrument_build(self.build, SiteSelector())
        else:
            self.instrumented = instrument_build(self.work_build, selector)
            self._check_bits()
        if self.config.trace_layers and self.work_build is not self.build and not self.weight_targets:
            plain = instrument_build(self.build, self.config.selector)
            if [(s.opcode, s.node, s.register) for s in plain.sites] != \
                    [(s.opcode, s.node, s.register) for s in self.instrumented.sites]:
                raise UsageError("the layer-tracing build selects different instructions than the plain build; "
                                 "trace with the default floating-point selection")
        self.early_end = (early_end_policy(self.build, self.config, self.instrumented) if self.allow_early_end
                          else EarlyEnd(False, "off: --no-early-end"))
        inputs_list = self.inputs_list = campaign_inputs_list(self.input_sets, self.instrumented.directory)
        self.profiles = self._profile(inputs_list)
        self.golden_all = [self._outputs(p.golden, everything=True) for p in self.profiles]
        self.golden = [g[:len(self.build.outputs)] if not self.build.is_program else g for g in self.golden_all]
        self._check_golden()
        if not self.weight_targets and not any(p.total for p in self.profiles):
            raise UsageError("the selected sites never execute on these inputs: nothing to inject into")
        db = CampaignDatabase(self.db_path)
        db.bind_campaign(self.identity)
        counts = np.sum([p.site_counts for p in self.profiles], axis=0)
        db.set_sites([t.site_row() for t in self.weight_targets] or
                     [(s.id, s.function, s.opcode, s.type, s.register, s.node, s.op_type, s.layer, int(counts[s.id]))
                      for s in self.instrumented.sites])
        db.set_meta("model", self.build.manifest.get("source"))
        db.set_meta("graph", [{"name": n["name"], "op_type": n["op_type"], "inputs": n.get("inputs", []),
                               "outputs": [o["name"] for o in n["outputs"]]}
                              for n in self.build.manifest.get("nodes", [])])
        # What `lltfi-mlir replay` needs to re-run any trial of this database on its own.
        db.set_meta("replay", {
            "executable": str(self.instrumented.executable.resolve()),
            "inputs_list": str(inputs_list.resolve()),
            "timeout_us": int(self.timeout_seconds() * 1e6),
            "max_output": self.max_output(),
            "output_shapes": [list(t.shape) for t in self.build.outputs],
            "output_dtypes": [t.dtype for t in self.build.outputs],
            "sdc": dataclasses.asdict(self.config.sdc),
            "program": dataclasses.asdict(self.program) if self.program else None,
            "golden": [p.golden.hex() for p in self.profiles],
        })
        db.set_meta("early_end", dataclasses.asdict(self.early_end))
        db.set_meta("seed", self.config.seed)
        db.set_meta("nonfinite_golden", self.nonfinite_golden)
        db.set_meta("trace_layers", bool(self.config.trace_layers and self.work_build is not self.build))
        db.set_meta("level", self.config.level)
        db.set_meta("target", self.config.target)
        if self.weight_targets:  # replay: how each tensor's trial lines start
            db.set_meta("memory_targets", {str(t.index): t.prefix for t in self.weight_targets})
        db.set_meta("sdc", self.config.sdc.criterion)
        if self.config.sdc.criterion == "threshold":
            db.set_meta("thresholds", list(self.config.sdc.thresholds))
        golden_s = min(p.golden_seconds for p in self.profiles)
        check_s = min(p.check_seconds for p in self.profiles)
        db.set_meta("profile_summary", {
            "static_sites": len(self.instrumented.sites),
            "dynamic_instances": [p.total for p in self.profiles],
            "golden_seconds": golden_s,
            "check_seconds": check_s,
            "versioned_blocks": self.instrumented.versioned_blocks,
            "inline_blocks": self.instrumented.inline_blocks,
            "versioned_nests": self.instrumented.versioned_nests,
        })
        return db

    def _check_bits(self) -> None:
        """A fixed bit (fi_bit) or a bit count beyond every selected register's width would leave
        every trial not activated: refuse it up front."""
        width = max(WIDTH.get(s.type, 64) for s in self.instrumented.sites)
        for number, fault in enumerate(self.config.faults):
            if fault.bit is not None and fault.bit >= width:
                raise UsageError(f"run block {number}: bit {fault.bit} is beyond the selected registers (the widest "
                                 f"has {width} bit{'s' if width > 1 else ''}: bits 0..{width - 1})")
            if fault.num_bits > width:
                raise UsageError(f"run block {number}: {fault.num_bits} bits per fault exceed the selected "
                                 f"registers' width ({width})")

    def timeout_seconds(self) -> float:
        if self.config.timeout is not None:
            return self.config.timeout
        # The floor keeps a loaded machine from turning slow fault-free runs into "hangs".
        return max(50 * max(p.golden_seconds for p in self.profiles), 2.0)

    def max_output(self) -> int:
        """Bytes of output a program's trial may write (0: a model, whose outputs have a fixed size)."""
        if not self.build.is_program:
            return 0
        return max(OUTPUT_LIMIT_FLOOR, OUTPUT_LIMIT_FACTOR * max(len(p.golden) for p in self.profiles))

    def population(self) -> int:
        if self.weight_targets:
            return memory_population(self.weight_targets, len(self.profiles))
        width = max(WIDTH[s.type] for s in self.instrumented.sites)
        return sum(p.total for p in self.profiles) * width

    def _outputs(self, data: bytes, everything: bool = False) -> list:
        """A model's raw output bytes as arrays (with the traced layers if `everything`); a
        program's stdout stays bytes."""
        if self.build.is_program:
            return [data]
        if everything:
            return split_outputs(data, self.all_shapes, self.all_dtypes)
        return split_outputs(data, self.output_shapes, self.output_dtypes)

    def _sibling_build(self, name: str, **options) -> Build:
        """The same model compiled again with tracing outputs or operator hooks (cached)."""
        source = self.build.manifest.get("source") or ""
        if source.startswith("<") or not Path(source).exists():
            raise UsageError("layer tracing recompiles the model: the ONNX file this build came from is missing")
        if self.build.manifest.get("sid"):
            raise UsageError("layer tracing of hardened (SID) builds is not supported")
        directory = self.build.directory / name
        if (directory / "manifest.json").exists():
            traced = Build(directory)
            if traced.manifest.get("model_hash") == self.identity["model"] + self.identity.get("weights", ""):
                return traced
        compile_options = CompileOptions(**options_of_build(self.build.manifest),
                                         shapes={t.name: t.shape for t in self.build.inputs}, **options)
        traced = compile_onnx(source, directory, compile_options)
        manifest = dict(traced.manifest, model_hash=self.identity["model"] + self.identity.get("weights", ""))
        write_text_atomic(directory / "manifest.json", json.dumps(manifest, indent=1) + "\n")
        return Build(directory)

    # -- running --------------------------------------------------------------------------------------
    def _golden_bytes(self, input_index: int) -> bytes | None:
        """The golden raw outputs when a bit-identical trial output is benign whatever the criterion
        computes (models with finite golden outputs and a built-in criterion, without layer tracing);
        else None."""
        if self._fast_golden is None:
            usable = (not self.build.is_program and self.config.sdc.criterion != "python"
                      and not (self.config.trace_layers and self.work_build is not self.build))
            self._fast_golden = [
                p.golden if usable and all(np.all(np.isfinite(g)) for g in outs if g.dtype.kind == "f") else None
                for p, outs in zip(self.profiles, self.golden_all)]
        return self._fast_golden[input_index]

    def _row(self, result: RawResult) -> tuple[dict, list[tuple]]:
        """The trial's database row, and its layer-trace rows when layers are traced."""
        trial = result.trial
        faults = result.faults
        activated = any(f.before != f.after for f in faults)
        faulty = None
        deviation = None
        golden = self.golden[trial.input]
        layers: list[tuple] = []
        ok = result.status == "ok"
        if ok and self._golden_bytes(trial.input) == result.output:
            # The outputs are the golden run's, bit for bit (every trial that ended early): what the judge
            # would conclude, without the arrays (the driver is the bottleneck on small models).
            outcome = "benign" if activated else "not_activated"
            deviation = 0.0 if activated else None
        elif ok:
            faulty = self._outputs(result.output, everything=True)
            if self.config.trace_layers and self.work_build is not self.build:
                layers = layer_rows(trial.id, self.work_build.traced, self.node_index, len(self.build.outputs),
                                    self.golden_all[trial.input], faulty)
                faulty = faulty[:len(self.build.outputs)]
            if activated:
                deviation = self.judge.deviation(golden, faulty)
            outcome = classify(result.status, activated, self.judge, golden, faulty)
        else:
            outcome = classify(result.status, activated, self.judge, golden, faulty)
        first = faults[0] if faults else None
        output = None if not ok else result.output if self.build.is_program else result.output[:self.output_bytes]
        return {
            "id": trial.id, "input": trial.input, "target": trial.target, "fault_type": trial.fault.type,
            "num_bits": trial.fault.num_bits, "bit": trial.bit, "max_multiple": trial.fault.max_multiple,
            "window_len": trial.fault.window_code, "seed": trial.seed, "status": result.status,
            "code": result.code, "outcome": outcome, "activated": int(activated),
            "site": first.site if first else None, "dyn_index": first.index if first else None,
            "mask": f"{first.mask:x}" if first else None, "value_before": f"{first.before:x}" if first else None,
            "value_after": f"{first.after:x}" if first else None,
            "faults": json.dumps([dataclasses.astuple(f) for f in faults]) if len(faults) > 1 else None,
            "deviation": None if deviation is None or math.isinf(deviation) else deviation,
            "output": output,
            "masked_at": None if result.masked_at is None else self.node_names.get(result.masked_at, "?"),
        }, layers

    def run(self, n: int | None = None, *, margin: float | None = None, exhaustive: bool = False,
            progress: bool = True, console: Console | None = None) -> dict:
        """Run (or resume) the campaign and return its summary."""
        console = console or Console(stderr=True)
        if (exhaustive or self.config.draw == "exhaustive") and len(self.config.faults) > 1:
            raise UsageError(f"an exhaustive campaign enumerates one fault model; this config has "
                             f"{len(self.config.faults)} run blocks: run them as separate configs")
        db = self.prepare()
        try:
            return self._run(db, n, margin, exhaustive or self.config.draw == "exhaustive", progress, console)
        finally:
            db.close()

    def _run(self, db: CampaignDatabase, n: int | None, margin: float | None, exhaustive: bool, progress: bool,
             console: Console) -> dict:
        counts = [p.total for p in self.profiles]
        if self.weight_targets:
            runs = planned_trials(self.population(), margin) if margin is not None else n or self.config.runs
            self.planned_trials = runs if margin is not None else None
            total, trials_iter = weight_plan(self.config, self.weight_targets, len(self.profiles), runs, exhaustive)
        elif exhaustive:
            width = max(WIDTH[s.type] for s in self.instrumented.sites)
            total = exhaustive_size(counts, width)
            trials_iter = exhaustive_trials(self.config, counts, width)
        else:
            if margin is not None:
                total = planned_trials(self.population(), margin)
                self.planned_trials = total
            else:
                total = n if n is not None else self.config.runs
            trials_iter = (uniform_trial(self.config, counts, i) for i in range(total))
        done = db.done_ids()
        remaining = total - len([i for i in done if i < total])
        timeout_us = int(self.timeout_seconds() * 1e6)
        if self.config.draw == "per_layer" and not exhaustive:
            results = self._stratified_results(total, done, timeout_us, db)
        else:
            executor = self._executor(self.instrumented.executable, self.inputs_list, timeout_us)
            results = executor.run(self._expand(t for t in trials_iter if t.id not in done))
        tally: Counter = Counter(o for (o,) in db.query("SELECT outcome FROM trials WHERE id < ?", (total,)))
        batch: list[dict] = []
        last_commit = time.monotonic()
        columns = [TextColumn("[bold]injecting"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                   TimeRemainingColumn()]
        with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
            task = bar.add_task(self._tally_text(tally), total=total, completed=total - remaining)
            started = time.perf_counter()
            self.last_trials = 0
            traced_layers: list[tuple] = []
            inst_rows: list[tuple] = []
            pairs: dict[int, dict] = {}
            already_tight = margin is not None and self._tight_enough(tally, margin)  # a resumed run

            def flush() -> None:  # idempotent until cleared: an interrupted write is simply redone
                db.add_traces(traced_layers, inst_rows)
                db.add_trials(batch)
                batch.clear()
                traced_layers.clear()
                inst_rows.clear()

            # Every trial the bar counts is in `batch` until written: on Ctrl-C, SIGTERM or an error
            # the finally clause writes it (signals held meanwhile) before the servers are ended.
            with terminate_as_interrupt():
                try:
                    if remaining > 0 and not already_tight:
                        for result in results:
                            if self.config.max_trace:
                                result, golden_run = self._pair(result, pairs)
                                if result is None:
                                    continue
                                inst_rows += [(result.trial.id, i, site, f"{bits:x}",
                                               f"{golden_run.trace[i][1]:x}" if i < len(golden_run.trace) else None)
                                              for i, (site, bits) in enumerate(result.trace)]
                            row, layers = self._row(result)
                            traced_layers += layers
                            batch.append(row)
                            self.last_trials += 1
                            tally[row["outcome"]] += 1
                            bar.update(task, advance=1, description=self._tally_text(tally))
                            if len(batch) >= 256 or time.monotonic() - last_commit > 1.0:
                                flush()
                                last_commit = time.monotonic()
                                if margin is not None and self._tight_enough(tally, margin):
                                    break
                finally:
                    with signals_deferred():
                        if batch:
                            flush()
                        if hasattr(results, "close"):
                            results.close()  # ends the fork-servers now, not when collected
            self.last_run_seconds = time.perf_counter() - started  # trials only (benchmarks read it)
        return summarize(db)

    def _executor(self, executable: Path, inputs_list: Path, timeout_us: int) -> LocalExecutor | WalkExecutor:
        if self.dask:
            from .dask_runner import DaskExecutor

            return DaskExecutor(self.dask, executable, inputs_list, timeout_us, self.engine, self.program,
                                self.max_output(), workers=self.jobs, batch=self.dask_batch,
                                early_end=self.early_end.enabled)
        if self.engine == "walk":
            return WalkExecutor(executable, inputs_list, self.jobs, timeout_us, n_inputs=len(self.input_sets),
                                early_end=self.early_end.enabled)
        return LocalExecutor(executable, inputs_list, self.jobs, timeout_us, self.program,
                             max_output=self.max_output(), early_end=self.early_end.enabled)

    def _expand(self, trials: Iterator[Trial]) -> Iterator[Trial]:
        """With maxTrace, each trial is followed by its shadow: the same instance reached without a
        fault, recording the golden window of the same length."""
        for trial in trials:
            if not self.config.max_trace:
                yield trial
                continue
            yield dataclasses.replace(trial, trace_len=self.config.max_trace)
            yield Trial(trial.id + SHADOW, trial.input, trial.target, dataclasses.replace(trial.fault, type="none"),
                        trial.bit, trial.seed, self.config.max_trace)

    @staticmethod
    def _pair(result: RawResult, pairs: dict) -> tuple[RawResult | None, RawResult | None]:
        """Match a trial with its shadow, whichever arrives first."""
        trial_id = result.trial.id
        key = trial_id - SHADOW if trial_id >= SHADOW else trial_id
        slot = pairs.setdefault(key, {})
        slot["golden" if trial_id >= SHADOW else "faulty"] = result
        if len(slot) < 2:
            return None, None
        del pairs[key]
        return slot["faulty"], slot["golden"]

    def _stratified_results(self, total: int, done: set[int], timeout_us: int,
                            db: CampaignDatabase) -> Iterator[RawResult]:
        """Per-layer stratified draws: trial i goes to layer i mod L, uniform within that layer.

        Each layer gets its own instrumented build whose countdown sees only that layer's sites (the
        countdown is global, so "the k-th instance of layer L" needs a build that selects only L);
        its site ids are mapped back to the full build's so reports stay comparable. The database
        records each layer's build and site map: `replay` runs trial i on the build of layer i mod L."""
        full = self.instrumented
        key = (lambda s: s.function) if self.build.is_program else (lambda s: s.node)
        per_site = [p.site_counts for p in self.profiles]
        layers: dict[str, list[int]] = {}
        for site in full.sites:
            if any(counts[site.id] for counts in per_site):
                layers.setdefault(key(site), []).append(site.id)
        strata = sorted(layers)
        db.set_meta("replay_strata", len(strata))
        for index, name in enumerate(strata):
            ids = [i for i in range(index, total, len(strata)) if i not in done]
            if not ids:
                continue
            field = {"functions": frozenset({name})} if self.build.is_program else {"nodes": frozenset({name})}
            selector = dataclasses.replace(self.config.selector, **field)
            layer_build = instrument_build(self.build, selector)
            id_map = layers[name]
            if len(layer_build.sites) != len(id_map):
                raise UsageError(f"layer {name}: its build selects {len(layer_build.sites)} sites, the full build "
                                 f"{len(id_map)}; cannot stratify this selection")
            counts = [sum(c[i] for i in id_map) for c in per_site]
            list_path = campaign_inputs_list(self.input_sets, layer_build.directory)
            db.set_meta(f"replay_stratum_{index}", {"layer": name, "executable": str(layer_build.executable.resolve()),
                                                     "inputs_list": str(list_path.resolve()), "id_map": id_map})
            executor = self._executor(layer_build.executable, list_path, timeout_us)
            for result in executor.run(self._expand(uniform_trial(self.config, counts, i) for i in ids)):
                faults = tuple(dataclasses.replace(f, site=id_map[f.site]) for f in result.faults)
                trace = tuple((id_map[s], bits) for s, bits in result.trace)
                yield dataclasses.replace(result, faults=faults, trace=trace)

    @staticmethod
    def _tally_text(tally: Counter) -> str:
        return " ".join(f"{o}={tally[o]}" for o in ("sdc", "benign", "crash", "hang", "not_activated"))

    @staticmethod
    def _tight_enough(tally: Counter, margin: float) -> bool:
        activated = sum(tally[o] for o in ("sdc", "benign", "crash", "hang"))
        if activated < 100:
            return False
        _, low, high = wilson(tally["sdc"], activated)
        return (high - low) / 2 <= margin

    def _check_golden(self) -> None:
        """A NaN or Inf in a fault-free output masks every fault that reaches it (and a tolerance
        compares NaN equal to NaN): all-benign results that mean nothing. Refused unless
        `allow_nonfinite_golden`; the database records what was found."""
        self.nonfinite_golden = {}
        if self.build.is_program:
            return
        for i, outputs in enumerate(self.golden):
            count = sum(int(np.count_nonzero(~np.isfinite(o))) for o in outputs if o.dtype.kind == "f")
            if count:
                self.nonfinite_golden[str(i)] = count
        if self.nonfinite_golden and not self.allow_nonfinite_golden:
            sets = ", ".join(list(self.nonfinite_golden)[:8])
            raise UsageError(f"the fault-free outputs hold {sum(self.nonfinite_golden.values())} NaN or Inf value(s) "
                             f"(input set(s) {sets}): faults reaching them cannot be told from benign ones; check the "
                             "inputs, or pass --allow-nonfinite-golden to run anyway")

    def summary(self) -> dict:
        db = CampaignDatabase(self.db_path, create=False)
        try:
            return summarize(db)
        finally:
            db.close()
