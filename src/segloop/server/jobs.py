"""Long work started from the server: rounds, training and prediction as jobs, each in its own process.

The server records the job (a row of the store's ``jobs`` table) and answers at once; the work runs
in a child process started with ``spawn`` (a fresh interpreter: it shares no database connection,
thread or lock with the server, and torch is loaded there, never in the server). The child opens
the project by its folder and database URL and runs the loop's use case
(`segloop.loop.rounds.run_round`, `segloop.loop.training.train_project`, ...), whose job takes the
server's row over (`segloop.loop.jobs.job_scope`) and stores its progress and end there; the server
reads that row to answer and to stream progress. Work refused before it starts (no labelled case)
ends the job ``failed`` with the reason.

Stopping a job terminates its process: `JobRunner.cancel` stores the job (and the jobs it ran
inside, such as a round's training) ``cancelled``, `JobRunner.shutdown` (server exit) stores them
``interrupted``; both can be resumed (`JobRunner.resume`): a round continues where it stopped, a
training continues from its checkpoint, a prediction runs again. If the server dies, its children
notice (their pipe from the server closes) and stop as after Ctrl-C: their jobs end
``interrupted``.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing.util  # noqa: F401 - its exit handler (joining children) registers before any runner's
import threading
import traceback
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection
from typing import Any

from segloop.errors import ConflictError, InvalidInputError, SegloopError
from segloop.store import JobRecord, JobStatus, Project
from segloop.store.database import sqlite_path

__all__ = [
    "DEVICES",
    "KINDS",
    "MAX_PREDICT_JOBS",
    "RUN_PARAMS",
    "TRAINING_KINDS",
    "JobRunner",
    "check_request",
    "run_request",
]

KINDS = ("round", "train", "predict")
#: Kinds that train a network: one of them at a time per project.
TRAINING_KINDS = ("round", "train")
#: Prediction jobs (each a process holding a network) running at once, at most.
MAX_PREDICT_JOBS = 2
DEVICES = ("auto", "cpu", "cuda")
#: The params of each kind that are not training settings, with their JSON type(s). Round and train
#: jobs take every other param as a training setting (`segloop.loop.training.training_settings`:
#: ``epochs``, ``minutes``, ``dims``, ``seed``, ``window``, ``val_cases`` and any `TrainConfig` field).
#: ``include_pseudo`` is a policy (``none``, ``all``, ``confident``) or a flag (false: none, true:
#: all); ``pseudo_entropy`` the ``confident`` policy's threshold (0-1), as `segloop train` takes them.
RUN_PARAMS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "round": {"mode": str, "strategy": str, "n": int, "include_pseudo": (bool, str), "device": str},
    "train": {"mode": str, "include_pseudo": (bool, str), "pseudo_entropy": (int, float), "device": str},
    "predict": {
        "cases": list,
        "unlabeled": bool,
        "model": int,
        "tta": bool,
        "postprocess": list,
        "device": str,
    },
}
#: Longest wait for a terminated job process to end before it is killed.
STOP_TIMEOUT_S = 10.0


def check_request(project: Project, kind: str, params: Any) -> dict[str, Any]:
    """Check what a job of ``kind`` is asked to do before any process starts.

    Args:
        project: the open project.
        kind: ``round``, ``train`` or ``predict``.
        params: the request's params (JSON object; see `RUN_PARAMS`).

    Returns:
        The params as given (a dict), to store with the job and to run it with (`run_request`).

    Raises:
        InvalidInputError: an unknown kind or param, a value of the wrong type or out of range.
        NotFoundError: a case or model to predict with that does not exist (or no finished model).
        ConflictError: the model to predict with is not finished; a round asks for other
            training settings than those of the interrupted round it would continue.
    """
    from segloop.loop.training import MODES, finished_model

    if kind not in KINDS:
        msg = f"unknown job kind {kind!r}: expected one of {', '.join(KINDS)}"
        raise InvalidInputError(msg)
    if not isinstance(params, Mapping):
        msg = f"job params must be a JSON object; got {type(params).__name__}"
        raise InvalidInputError(msg)
    run, settings = _split_params(kind, params)
    for name, kind_of_value in RUN_PARAMS[kind].items():
        if name in run:
            _check_type(name, run[name], kind_of_value)
    if run.get("device", "auto") not in DEVICES:
        msg = f"device {run['device']!r} is not known: expected one of {', '.join(DEVICES)}"
        raise InvalidInputError(msg)
    if kind in TRAINING_KINDS:
        if run.get("mode", "full") not in MODES:
            msg = f"unknown training mode {run['mode']!r}: expected one of {', '.join(MODES)}"
            raise InvalidInputError(msg)
        _train_config(project, settings)  # every training setting is checked here
        _check_pseudo(run)
    if kind == "round":
        from segloop.loop.ranking import get_strategy

        get_strategy(run.get("strategy", "uncertainty"))
        if run.get("n", 0) < 0:
            msg = f"the correction queue needs n >= 0 cases; got {run['n']}"
            raise InvalidInputError(msg)
        _check_round_continues(project, {**_settings(settings), "include_pseudo": run.get("include_pseudo")})
    if kind == "predict":
        _check_predict(project, run)
        finished_model(project, run.get("model"))
    return dict(params)


def run_request(
    project: Project, kind: str, request: Mapping[str, Any], *, author: str, resume: bool
) -> None:
    """Run a checked job request (`check_request`) in this process, as a job of the loop.

    Args:
        project: the open project.
        kind: ``round``, ``train`` or ``predict``.
        request: its params.
        author: who asked.
        resume: continue the interrupted training run (``train``) instead of starting one; a
            round always continues its interrupted round, a prediction always runs again.
    """
    from segloop.loop.training import predict_cases, resume_training, train_project

    run, settings = _split_params(kind, request)
    device = run.get("device", "auto")
    if kind == "round":
        from segloop.loop.rounds import run_round

        include_pseudo = run.get("include_pseudo", False)
        run_round(
            project,
            _train_config(project, settings),
            mode=run.get("mode", "continual"),
            strategy=run.get("strategy", "uncertainty"),
            n_next=run.get("n", 5),
            include_pseudo=include_pseudo,
            device=device,
            author=author,
            asked={**_settings(settings), "include_pseudo": include_pseudo or None},
        )
    elif kind == "train" and resume:
        resume_training(project, device=device, author=author)
    elif kind == "train":
        train_project(
            project,
            _train_config(project, settings),
            mode=run.get("mode", "full"),
            device=device,
            include_pseudo=run.get("include_pseudo", False),
            pseudo_entropy=run.get("pseudo_entropy"),
            author=author,
        )
    else:
        from segloop.engine.config import InferConfig
        from segloop.loop.tools import Postprocess

        steps = run.get("postprocess") or []
        predict_cases(
            project,
            run.get("cases") or None,
            unlabeled=run.get("unlabeled", False),
            model_id=run.get("model"),
            infer_config=InferConfig.from_tta_flag(run.get("tta")),
            postprocess=Postprocess.from_presets(steps).morphology_kwargs() if steps else None,
            device=device,
            author=author,
        )


def _split_params(kind: str, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(run params, training settings)`` of a request; a predict job has no training settings."""
    run = {k: v for k, v in params.items() if k in RUN_PARAMS[kind]}
    settings = {k: v for k, v in params.items() if k not in RUN_PARAMS[kind]}
    if kind not in TRAINING_KINDS and settings:
        msg = (
            f"unknown params {', '.join(sorted(settings))} of a {kind} job:"
            f" expected some of {', '.join(RUN_PARAMS[kind])}"
        )
        raise InvalidInputError(msg)
    return run, settings


def _settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Training settings as `TrainConfig` fields, JSON lists as tuples."""
    from segloop.loop.training import training_settings

    def plain(value: Any) -> Any:
        return tuple(plain(v) for v in value) if isinstance(value, list) else value

    return {name: plain(value) for name, value in training_settings(settings).items()}


def _train_config(project: Project, settings: Mapping[str, Any]) -> Any:
    from segloop.loop.training import train_config

    try:
        return train_config(project, **_settings(settings))
    except TypeError as error:  # a value of a type TrainConfig does not compare (a dict for a number)
        msg = f"a training setting has a value of the wrong type ({error}): expected numbers, text or lists"
        raise InvalidInputError(msg) from error


def _check_round_continues(project: Project, asked: Mapping[str, Any]) -> None:
    """Refuse settings that the training of the interrupted round (which a round continues) did not use."""
    from segloop.loop.training import run_setting_differences

    rounds = project.list_rounds()
    if not rounds or rounds[-1].status != "running":
        return
    number = rounds[-1].number
    for model in project.list_models():
        differences = run_setting_differences(model, asked) if model.round == number else []
        if model.status == "running" and differences:
            msg = (
                f"round {number} stopped while training model {model.id} with other settings"
                f" ({'; '.join(differences)}): resume its job, or ask for the settings it used"
            )
            raise ConflictError(msg)


_SHOWN_TYPES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "text",
    list: "a list of text",
}


def _check_type(name: str, value: Any, expected: type | tuple[type, ...]) -> None:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    ok = isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))
    if list in kinds and ok:
        ok = all(isinstance(item, str) for item in value)
    if not ok:
        shown = " or ".join(_SHOWN_TYPES[kind] for kind in kinds if not (kind is int and float in kinds))
        msg = f"param {name} must be {shown}; got {value!r}"
        raise InvalidInputError(msg)


def _check_pseudo(run: Mapping[str, Any]) -> None:
    """Refuse a pseudo-label policy `segloop.loop.training.train_project` would refuse, before it starts."""
    from segloop.loop.training import pseudo_policy

    policy = pseudo_policy(run.get("include_pseudo"))
    threshold = run.get("pseudo_entropy")
    if threshold is not None and policy != "confident":
        msg = f"param pseudo_entropy with include_pseudo {policy!r}: expected include_pseudo 'confident'"
        raise InvalidInputError(msg)
    if threshold is not None and not 0 < threshold <= 1:
        msg = f"param pseudo_entropy must be in (0, 1] (normalised entropy); got {threshold!r}"
        raise InvalidInputError(msg)


def _check_predict(project: Project, run: Mapping[str, Any]) -> None:
    from segloop.core.names import validate_case_id
    from segloop.loop.tools import Postprocess

    if run.get("cases") and run.get("unlabeled"):
        msg = "predict either the named cases or the unlabelled ones; got both"
        raise InvalidInputError(msg)
    for case_id in run.get("cases") or ():
        project.get_case(validate_case_id(case_id))
    Postprocess.from_presets(run.get("postprocess") or [])


@dataclass(eq=False)
class _Child:
    """A job process: its job, and the pipe whose closing tells it that the server is gone."""

    process: Any  # multiprocessing's SpawnProcess
    lifeline: Connection
    job_id: int


class JobRunner:
    """Starts, tracks and stops the server's jobs (one training job per project at a time).

    Args:
        project: the open project.
    """

    def __init__(self, project: Project) -> None:
        self.project = project
        self._context = get_context("spawn")
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        if not project.read_only:
            project.mark_interrupted_jobs()  # those of a server that died: stored while their pids are fresh
        # a process that ends without `shutdown` (no lifespan: a test, a notebook) still stops its jobs,
        # before multiprocessing's exit handler (registered earlier, so run later) waits for them
        atexit.register(_shutdown_if_alive, weakref.ref(self))

    def start(self, kind: str, params: Mapping[str, Any], *, author: str) -> JobRecord:
        """Start a job of ``kind`` (``round``, ``train``, ``predict``) with ``params`` (`check_request`).

        Returns at once: the job is recorded ``running`` and its process is starting.

        Raises:
            InvalidInputError, NotFoundError: bad params (nothing started).
            ConflictError: a training job (round or train) is running and ``kind`` trains too
                (the message and the problem's ``job`` name it), `MAX_PREDICT_JOBS` predictions
                run already (``jobs``), or the project is read-only.
        """
        request = check_request(self.project, kind, params)
        return self._start(kind, {"request": request}, author=author, resume=False)

    def resume(self, job_id: int, *, author: str) -> JobRecord:
        """Start again an ``interrupted`` or ``cancelled`` job as a new job that continues its work.

        A round continues its round (finished stages are kept, training resumes from its
        checkpoint), a training run continues from its checkpoint, a prediction runs again.

        Raises:
            NotFoundError: no such job.
            ConflictError: the job is running, done or failed, ran inside another job (resume
                that one), or its work was finished meanwhile.
        """
        job = self.project.get_job(job_id)
        if job.status not in (JobStatus.INTERRUPTED, JobStatus.CANCELLED):
            msg = f"job {job_id} is {job.status}: only an interrupted or cancelled job can be resumed"
            raise ConflictError(msg)
        if "within" in job.params:
            msg = f"job {job_id} ran inside job {job.params['within']}: resume job {job.params['within']}"
            raise ConflictError(msg)
        request = job.params.get("request")
        if job.kind == "round" and job.params.get("round") is not None:
            record = self.project.get_round(int(job.params["round"]))
            if record.status != "running":
                msg = f"round {record.number} of job {job_id} is {record.status}: there is nothing to resume"
                raise ConflictError(msg)
        resume = True
        if job.kind == "train" and "model" not in job.params:
            resume = False  # stopped before its training was recorded: it starts again
        elif job.kind == "train":
            model = self.project.get_model(int(job.params["model"]))
            if model.status != "running":
                msg = f"model {model.id} of job {job_id} is {model.status}: there is nothing to resume"
                raise ConflictError(msg)
        if job.kind == "predict" and request is None:
            msg = f"job {job_id} was not started by the server: start the prediction again with its cases"
            raise ConflictError(msg)
        params = {"request": dict(request or {}), "resumes": job_id}
        return self._start(job.kind, params, author=author, resume=resume)

    def running(self, kinds: Sequence[str] | None = None) -> list[JobRecord]:
        """The project's running jobs (of ``kinds``), this server's or another process's, oldest first."""
        return self._running(kinds)

    def cancel(self, job_id: int, *, author: str | None = None) -> JobRecord:
        """Stop a running job started by this server; it (and the jobs it runs inside) ends ``cancelled``.

        Args:
            job_id: the job.
            author: who stops it (recorded in the project's journal), or None.

        Raises:
            NotFoundError: no such job.
            ConflictError: the job is not running, or runs in a process this server did not start.
        """
        with self._lock:
            job = self.project.get_job(job_id)
            if job.status != JobStatus.RUNNING:
                msg = f"job {job_id} is {job.status}, not running: there is nothing to cancel"
                raise ConflictError(msg)
            child = next((c for c in self._children if job.id == c.job_id or job.pid == c.process.pid), None)
            if child is None:
                msg = (
                    f"job {job_id} runs in process {job.pid} on {job.host}, which this server did not"
                    " start: stop it there"
                )
                raise ConflictError(msg)
            self._stop(child, JobStatus.CANCELLED)
        if author is not None:
            self.project.log_event("cancel", author, {"job": job_id, "kind": job.kind})
        return self.project.get_job(job_id)

    def shutdown(self) -> None:
        """Stop every job of this server (server exit): they end ``interrupted`` and can be resumed."""
        with self._lock:
            for child in list(self._children):
                self._stop(child, JobStatus.INTERRUPTED)

    # -- inside ----------------------------------------------------------------------------------

    def _start(self, kind: str, params: dict[str, Any], *, author: str, resume: bool) -> JobRecord:
        if self.project.read_only:
            msg = f"the project {self.project.root} is open read-only: a job cannot be recorded"
            raise ConflictError(msg)
        with self._lock:
            if kind in TRAINING_KINDS:
                self._refuse_second_training(kind)
            elif kind == "predict":
                self._refuse_too_many_predictions()
            job = self.project.start_job(kind, author=author, params=params)
            lifeline_end, lifeline = self._context.Pipe(duplex=False)
            process = self._context.Process(
                target=_run_child,
                args=(str(self.project.root), _database_url(self.project), job.id, kind, params["request"]),
                kwargs={"author": author, "resume": resume, "lifeline": lifeline_end},
                name=f"segloop-{kind}-{job.id}",
            )
            try:
                process.start()
            except BaseException:
                self.project.finish_job(job.id, status=JobStatus.FAILED, error="its process did not start")
                raise
            finally:
                lifeline_end.close()
            child = _Child(process, lifeline, job.id)
            self._children.append(child)
        threading.Thread(
            target=self._watch, args=(child,), name=f"segloop-watch-{job.id}", daemon=True
        ).start()
        return job

    def _running(self, kinds: Sequence[str] | None) -> list[JobRecord]:
        running = self.project.list_jobs(status=JobStatus.RUNNING)
        return [job for job in running if kinds is None or job.kind in kinds]

    def _refuse_second_training(self, kind: str) -> None:
        running = [j for j in self._running(TRAINING_KINDS) if "within" not in j.params]
        if running:
            other = running[0]
            msg = (
                f"{other.kind} job {other.id} (started by {other.author}) is training this project:"
                f" wait for it or cancel it before starting a {kind} job"
            )
            error = ConflictError(msg)
            error.problem_extra = {"job": other.id}  # type: ignore[attr-defined]
            raise error

    def _refuse_too_many_predictions(self) -> None:
        running = [j for j in self._running(("predict",)) if "within" not in j.params]
        if len(running) >= MAX_PREDICT_JOBS:
            numbers = ", ".join(str(j.id) for j in running)
            msg = f"prediction jobs {numbers} are running (at most {MAX_PREDICT_JOBS} at once): wait for one"
            error = ConflictError(msg)
            error.problem_extra = {"jobs": [j.id for j in running]}  # type: ignore[attr-defined]
            raise error

    def _stop(self, child: _Child, status: JobStatus) -> None:
        """Terminate a job process and store ``status`` for each job it left running (lock held)."""
        child.process.terminate()
        child.process.join(STOP_TIMEOUT_S)
        if child.process.is_alive():
            child.process.kill()
            child.process.join()
        self._forget(child, status, status.value)

    def _watch(self, child: _Child) -> None:
        """Wait for a job process to end by itself; its jobs it did not finish end ``interrupted``.

        A process killed from outside (out of memory, a signal) leaves its work resumable.
        """
        child.process.join()
        with self._lock:
            if child in self._children:  # not stopped by `_stop`
                code = child.process.exitcode
                self._forget(child, JobStatus.INTERRUPTED, f"its process ended (exit code {code})")

    def _forget(self, child: _Child, status: JobStatus, error: str) -> None:
        """Drop an ended job process; store ``status`` for its jobs still running (lock held)."""
        child.lifeline.close()
        self._children.remove(child)
        for job in self.project.list_jobs():
            ran_it = job.id == child.job_id or (job.id > child.job_id and job.pid == child.process.pid)
            if ran_it and job.finished_at is None:
                # another job's start may have stored it interrupted meanwhile: then it stays so
                with contextlib.suppress(ConflictError):
                    self.project.finish_job(job.id, status=status, error=error)


def _shutdown_if_alive(runner: weakref.ref[JobRunner]) -> None:
    alive = runner()
    if alive is not None:
        alive.shutdown()


def _database_url(project: Project) -> str:
    """The URL a job's process opens the project's database with (the one the server uses)."""
    url = project.engine.url
    path = sqlite_path(url)
    return f"sqlite:///{path}" if path is not None else url.render_as_string(hide_password=False)


def _run_child(
    root: str,
    database_url: str,
    job_id: int,
    kind: str,
    request: dict[str, Any],
    *,
    author: str,
    resume: bool,
    lifeline: Connection,
) -> None:
    """A job's process: open the project and run the request as the server's job ``job_id``."""
    from segloop.loop.jobs import error_line, job_scope

    threading.Thread(target=_watch_server, args=(lifeline,), daemon=True).start()
    project = Project.open(root, database_url=database_url)
    taken: list[JobRecord] = []
    try:
        with job_scope(job_id, on_start=taken.append):
            run_request(project, kind, request, author=author, resume=resume)
    except KeyboardInterrupt:
        if not taken:
            project.finish_job(job_id, status=JobStatus.INTERRUPTED, error="interrupted")
        raise SystemExit(130) from None
    except Exception as error:  # noqa: BLE001 - the process's last word: the job must say why
        if not taken:  # refused before its work started: the job was not the work's yet
            project.finish_job(job_id, status=JobStatus.FAILED, error=error_line(error))
        if not isinstance(error, SegloopError):
            traceback.print_exc()
        raise SystemExit(1) from None


def _watch_server(lifeline: Connection) -> None:
    """Interrupt the job (as Ctrl-C does) once the server's end of ``lifeline`` closes."""
    import _thread

    with contextlib.suppress(EOFError, OSError):
        while True:
            lifeline.recv()
    _thread.interrupt_main()
