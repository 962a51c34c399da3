"""The core of a run, shared by the three gates and free of pytest: config, device, matrix,
loading, skip reasons, the one place an exception becomes an outcome, per-case cleanup, and
what keeps cases apart: the sandbox of process-wide state (`accelgate.sandbox`), the time
limit (`accelgate.limits`) and, under `--accelgate-isolate`, a process per case
(`accelgate.isolate`).

**Load once per model.** Reading a pipeline from disk for every case costs more than
generating with it (a tiny SDXL case spent ~2 s loading for ~0.3 s of generation; a real
SDXL would reload 7 GB for each of its ~26 cases). The session reads each model once with
`from_pretrained` (the real loading path still runs) into a pristine copy kept in CPU
memory, and gives every case an independent deep copy on the run's device: a backend that
mutates weights, patches modules or attaches hooks changes only its own copy. Tokenizers and
image processors are shared, not copied: they hold no state a generation changes, and
copying a CLIP vocabulary costs more than generating a tiny model's images. One pristine
model is kept at a time (cases arrive grouped by model), so memory holds two copies at most.

Nothing here imports torch until a case needs it: a repository that installs the plugin and
collects no accelgate case pays nothing.
"""
from __future__ import annotations

import copy
import gc
import sys
import traceback
from pathlib import Path
from typing import Any

from accelgate.config.load import Config
from accelgate.config.schema import ConfigError, format_resolution
from accelgate.errors import CaseFailed, CaseUnavailable
from accelgate.isolate import Job, child_result, run_isolated
from accelgate.limits import case_timeout, is_out_of_memory, out_of_memory_reason
from accelgate.matrix import Case, Matrix, Narrowing, build_matrix
from accelgate.sandbox import Sandbox, loaded_classes
from accelgate.verdict import Verdict, problem


def resolve_device(requested: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without one is a ConfigError."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def worker_device(device: str, worker: tuple[int, int] | None) -> str:
    """Under pytest-xdist with `--device cuda`, worker i of N takes its own GPU, `cuda:<i mod GPUs>`
    (each worker's GPU model then decides its baselines). N larger than the GPU count is refused:
    two workers on one GPU would time and fill it together. `cuda:N` and CPU are kept as given."""
    if worker is None or device != "cuda":
        return device
    import torch

    index, workers = worker
    count = torch.cuda.device_count()
    if workers > count:
        raise ConfigError(f"pytest -n {workers} with --device cuda: this machine has {count} GPU(s) and each xdist "
                          f"worker takes one of its own; run with -n {count} (or fewer), or pin one device with "
                          "--device cuda:N")
    return f"cuda:{index % count}"


def describe_error(error: BaseException) -> str:
    """'TypeError at fast.py:14: message': the type, where it was raised, what it said."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}{where}: {error}"


def verdict_for_exception(case: Case, error: BaseException, *, unavailable: str = "skipped",
                          device: str = "cpu") -> Verdict:
    """The one place an exception becomes a case's outcome.

    `CaseUnavailable` (weights, a data file or a package missing here) -> skipped, or the
    outcome the caller asks for (the distribution gate's --strict-metrics makes it failed);
    `CaseFailed` (a stale or damaged baseline, degenerate output, corrupt weights) -> failed
    with its message; running out of memory -> "oom" with the peak and the resolution;
    `SystemExit` (a backend calling sys.exit) -> error; anything else a backend or pipeline
    raises -> error, naming where in the reason (results.json) and keeping the exception itself
    on the verdict (`error`), so the pytest side re-raises it with the backend's whole traceback
    for --tb=long and --pdb.
    """
    if isinstance(error, CaseUnavailable):
        return problem(case, unavailable, str(error))
    if isinstance(error, CaseFailed):
        return problem(case, "failed", str(error))
    if is_out_of_memory(error):
        return problem(case, "oom", out_of_memory_reason(error, format_resolution(case.resolution), device))
    if isinstance(error, SystemExit):
        return problem(case, "error", f"{describe_error(error)} (the backend or pipeline called sys.exit({error.code!r}); "
                                      "accelgate kept the run going)")
    verdict = problem(case, "error", describe_error(error))
    verdict.error = error
    return verdict


def raise_case_error(verdict: Verdict) -> None:
    """The other way round, for the pytest side: a case whose backend or pipeline raised
    re-raises that exception itself, so pytest shows the backend's whole (chained) traceback
    down to the user's frame under --tb=long and --pdb stops there; the report already holds
    the case as an error with its one-line reason. The verdict lets go of the exception first:
    its frames hold the case's pipeline."""
    __tracebackhide__ = True  # pytest shows the backend's frames, not this one
    error = verdict.error
    if error is None:
        return
    verdict.error = None
    error.add_note(f"accelgate: case {verdict.case_id} ended in an error ({verdict.reason.splitlines()[0]}); "
                   "the traceback above is the backend's own")
    raise error


def _shared_component(component: Any) -> bool:
    """Tokenizers and processors: read-only during generation, so every copy may share them."""
    names = [cls.__name__ for cls in type(component).__mro__]
    return any(name.endswith(("Tokenizer", "TokenizerFast", "Processor", "FeatureExtractor", "ImageProcessor"))
               or name in ("PreTrainedTokenizerBase", "ProcessorMixin") for name in names)


class Session:
    """One run's shared state: what every gate needs to load and run a case."""

    def __init__(self, config: Config, device: str | None = None, narrowing: Narrowing | None = None, *,
                 isolate: bool = False, timeout_option: float | None = None, worker: tuple[int, int] | None = None):
        self.config = config
        self.worker = worker  # (index, count) of this pytest-xdist worker: its own GPU under --device cuda
        self.requested_device = device or config.device
        self.narrowing = narrowing or Narrowing()
        self.isolate = isolate  # --accelgate-isolate: each case in its own process
        self.timeout_option = timeout_option  # --case-timeout (0: no limit)
        self.sandbox = Sandbox()
        self._device: str | None = None
        self._matrix: Matrix | None = None
        self._pristine: tuple[str, Any] | None = None  # (model id, the pipeline as loaded, on CPU)
        self.model_hashes: dict[str, str] = {}
        self.progress = None  # per-step progress of the running case (accelgate.progress), set by the pytest side

    # -- resolved when a case first needs it (no torch import before) --------------------
    @property
    def device(self) -> str:
        if self._device is None:
            device = resolve_device(self.requested_device)
            if device.startswith("cuda"):
                import torch

                if not torch.cuda.is_available():
                    raise ConfigError(f"--device {device}: this machine has no CUDA device torch can use "
                                      f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); run with "
                                      "--device cpu or on a GPU machine")
                device = worker_device(device, self.worker)
            else:
                import torch

                torch.set_num_threads(self.config.threads)  # output differs by a level between thread counts
            self._device = device
        return self._device

    @property
    def device_resolved(self) -> bool:
        """The device was needed (a case ran): asking for it does not import torch."""
        return self._device is not None

    @property
    def case_timeout(self) -> float | None:
        """Seconds one case may run here (None: no limit); see accelgate.limits."""
        return case_timeout(self.timeout_option, self.config.case_timeout, self.device)

    @property
    def matrix(self) -> Matrix:
        if self._matrix is None:
            kept = self.narrowing
            self._matrix = build_matrix(self.config, kept.models, kept.backends, kept.resolutions)
        return self._matrix

    # -- what cannot run here -------------------------------------------------------------
    def skip_reason(self, case: Case) -> str | None:
        """Why a case cannot run on this machine, phrased as what to install or provide."""
        from accelgate.models.loading import check_available, gpu_only_reason

        if case.model.gpu and not self.device.startswith("cuda"):
            source = self.config.source
            table = f"[model.{case.model.id}]" if source and source.name != "pyproject.toml" else \
                f"[tool.accelgate.model.{case.model.id}]"
            return gpu_only_reason(case.model, self.device, f"{table} of {source or 'your pyproject.toml'}")
        reason = case.backend.skip_reason(self.device)
        if reason:
            return reason
        if case.model.source == "hub":
            return check_available(case.model, self.config.model_paths.get(case.model.id))
        return None

    # -- loading ---------------------------------------------------------------------------
    def load(self, case: Case):
        """A fresh, independent pipeline for `case` on the run's device, at its resolution."""
        from accelgate.models.loading import prepare_resolution

        pristine = self._pristine_of(case.model)
        shared = {id(c): c for c in pristine.components.values() if _shared_component(c)}
        pipe = copy.deepcopy(pristine, memo=shared).to(self.device)
        prepare_resolution(pipe, case.model, case.height, case.width)
        return pipe

    def _pristine_of(self, model):
        from accelgate.models.loading import load_pipeline, model_hash

        if self._pristine is None or self._pristine[0] != model.id:
            self._pristine = None
            gc.unfreeze()
            gc.collect()  # the previous model's copy goes before the next one is read
            pipe = load_pipeline(model, "cpu", path=self.config.model_paths.get(model.id))
            self.model_hashes.setdefault(model.id, model_hash(pipe))
            self._pristine = (model.id, pipe)
            # Everything alive now (the libraries, the pristine model) lives until the next
            # model: frozen, the per-case collection walks only what the case allocated.
            gc.freeze()
        return self._pristine[1]

    def pipeline_classes(self, model) -> list[type]:
        """The classes the model's pipeline is made of (read from disk once, like `load`)."""
        return loaded_classes(self._pristine_of(model))

    def model_hash(self, model) -> str:
        if model.id not in self.model_hashes:
            self._pristine_of(model)
        return self.model_hashes[model.id]

    # -- around every case -----------------------------------------------------------------
    def case_started(self) -> None:
        """A fresh peak-memory mark, so an out-of-memory verdict reports this case's peak."""
        if self._device is not None and self._device.startswith("cuda") and "torch" in sys.modules:
            import torch

            if torch.cuda.is_initialized():
                torch.cuda.reset_peak_memory_stats(torch.device(self._device))

    def run_isolated(self, case: Case, runner: str, **kwargs) -> Any:
        """`runner(session, case, **kwargs)` in a child process under the case's time limit
        (accelgate.isolate); its exceptions say what happened to the child."""
        config = self.config
        job = Job(dict(config.raw), str(config.source) if config.source else None, str(config.root), self.device,
                  case.id, runner, kwargs, tuple(sys.path))
        return run_isolated(job, self.case_timeout, isolated_child)

    # -- after every case ------------------------------------------------------------------
    def cleanup(self) -> None:
        """Free what a case left behind (its pipeline copy, CUDA blocks) before the next."""
        gc.collect()  # cheap: the long-lived heap is frozen (see _pristine_of)
        if self._device is not None and self._device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def close(self) -> None:
        """Drop the pristine model and unfreeze the heap, so interpreter exit collects as usual."""
        self._pristine = None
        gc.unfreeze()
        gc.collect()


def isolated_child(job: Job, conn) -> None:
    """The child process of `Session.run_isolated`: the same config and device, the case by id."""
    def build(job: Job):
        from accelgate.config.load import build_config

        config = build_config(job.raw, Path(job.source) if job.source else None, Path(job.root))
        session = Session(config, job.device)
        return session, next(c for c in session.matrix.cases if c.id == job.case_id)

    child_result(job, conn, build)
