"""Running a planned sweep locally: members one after another or N at a time, each in its own subprocess.

Why subprocesses: a member is exactly the command a user (or `--print`'s scheduler) would run, with its
own log, and one member's crash or leaked memory cannot touch the others. Finished members are skipped;
an interrupted member resumes from its checkpoints, since its command re-run with the same --workdir
does. A failed member is one line (exit code, its last log line, the log's path) and the sweep goes on
with the others; it exits non-zero at the end if any member did not finish. SIGINT/SIGTERM reach the
sweep only (members run in their own sessions) and are passed on once to every running member, which
saves a checkpoint and stops; a second signal stops them at once.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from sorajax.runs.checkpoints import open_run
from sorajax.runs.paths import is_local, run_path
from sorajax.sweeps.manifest import LOG, write_manifest, write_marker
from sorajax.sweeps.plan import PROBE, PYTHON, Member, SweepPlan

INTERRUPTED_EXIT = 130


def _last_line(log: str) -> str:
    """The member's last words (the trainers end a failure with one `error: ...` line)."""
    with open(log, errors="replace") as f:
        text = f.read()[-20000:]
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else "(empty log)"


def _final_step(run: str) -> int | None:
    try:
        ckpt = open_run(run, None, "")
    except (FileNotFoundError, ValueError):
        return None
    try:
        return ckpt.latest_step()
    finally:
        ckpt.close()


class SweepRunner:
    """Runs `plan`'s unfinished members; `say` prints a progress line (thread-safe)."""

    def __init__(self, plan: SweepPlan, parallel: int = 1, python: str = sys.executable,
                 say: Callable[[str], None] = print):
        if parallel < 1:
            raise ValueError(f"--parallel must be >= 1, got {parallel}")
        if not is_local(plan.workdir):
            raise ValueError(f"--workdir={plan.workdir} is not on this machine: a local sweep keeps its members' logs "
                             "beside them; for a cluster's gs:// runs use --print and a scheduler")
        self.plan, self.parallel, self.python = plan, parallel, python
        self._say, self._lock = say, threading.Lock()
        self._children: dict[int, subprocess.Popen] = {}
        self.signals = 0

    def say(self, line: str) -> None:
        with self._lock:
            self._say(line)

    def _save(self) -> None:
        with self._lock:
            write_manifest(self.plan.workdir, self.plan.record())

    def _tag(self, member: Member) -> str:
        return f"[{member.index + 1}/{len(self.plan.members)}] {member.name}"

    def _signal(self, signum: int, frame: Any) -> None:
        del frame
        self.signals += 1
        first = self.signals == 1
        self.say(f"signal {signum}: " + ("asking running members to save a checkpoint and stop; starting no more"
                                         if first else "stopping running members now"))
        for child in list(self._children.values()):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def _run_member(self, member: Member) -> None:
        if self.signals:
            return
        log = str(run_path(member.run) / LOG)
        run_path(member.run).mkdir(parents=True, exist_ok=True)
        resuming = member.status in ("started", "interrupted", "failed")
        member.status, member.note, start = "running", "", time.time()
        self._save()
        ran_all = True
        for argv in member.commands:
            if self.signals:  # a signal between two commands: the member's next command waits for the next run
                ran_all = False
                break
            what = "probe report" if argv[2] == PROBE else ("resuming" if resuming else "training")
            self.say(f"{self._tag(member)}: {what} (log: {log})")
            with open(log, "a") as out:
                out.write(f"\n== {datetime.datetime.now().isoformat(timespec='seconds')} {shlex.join(argv)}\n")
                out.flush()
                child = subprocess.Popen([self.python if argv[0] == PYTHON else argv[0], *argv[1:]], stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
                self._children[child.pid] = child
                try:
                    member.exit_code = child.wait()
                finally:
                    self._children.pop(child.pid, None)
            if member.exit_code != 0:
                ran_all = False
                break
        member.wall_s = round((member.wall_s or 0.0) + time.time() - start, 1)
        self._finish(member, log, ran_all)
        self._save()

    def _finish(self, member: Member, log: str, ran_all: bool) -> None:
        steps = int(member.config.train.steps)
        reached = _final_step(member.run)
        if ran_all and reached == steps:  # a trainer stopped by a signal exits 0 too, short of the last step
            member.status = "done"
            write_marker(member.run, {"name": member.name, "overrides": member.overrides, "steps": steps,
                                      "probe_prompts": self.plan.probe_prompts, "wall_s": member.wall_s})
            self.say(f"{self._tag(member)}: done in {member.wall_s:.0f} s")
        elif member.exit_code == 0 or self.signals:  # stopped (by us, or a scheduler's signal to the member)
            where = f"at step {reached} of {steps}" if reached is not None else "before its first checkpoint"
            member.status, member.note = "interrupted", f"stopped {where}"
            self.say(f"{self._tag(member)}: interrupted {where}; run the sweep again to resume (log: {log})")
        else:
            member.status, member.note = "failed", _last_line(log)
            self.say(f"{self._tag(member)}: failed (exit {member.exit_code}): {member.note} (log: {log})")

    def run(self) -> int:
        """0 when every member finished, 1 when one failed or stopped early, 130 after a signal."""
        for note in self.plan.notes:
            self.say(f"note: {note}")
        todo = [m for m in self.plan.members if m.status != "done"]
        for member in self.plan.members:
            if member.status == "done":
                self.say(f"{self._tag(member)}: finished earlier, skipped")
        self._save()
        previous = {}
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[s] = signal.signal(s, self._signal)
            except ValueError:  # not the main thread (a notebook's worker): members keep their own handlers
                pass
        try:
            with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
                pending = {pool.submit(self._run_member, m) for m in todo}
                while pending:  # a timeout keeps the main thread free to take signals
                    done, pending = concurrent.futures.wait(pending, timeout=0.5)
                    for future in done:
                        future.result()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        counts = {s: sum(m.status == s for m in self.plan.members) for s in ("done", "failed", "interrupted")}
        left = len(self.plan.members) - sum(counts.values())
        self.say(f"sweep: {counts['done']} of {len(self.plan.members)} members done, {counts['failed']} failed, "
                 f"{counts['interrupted']} interrupted{f', {left} not run' if left else ''}; manifest: "
                 f"{run_path(self.plan.workdir) / 'sweep.json'}")
        if self.signals:
            return INTERRUPTED_EXIT
        return 0 if counts["done"] == len(self.plan.members) else 1
