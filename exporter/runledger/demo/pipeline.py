"""A simulated multi-tenant pipeline, instrumented with runledger.sdk.

A Coordinator drives projects of three tenants through brief -> research -> build ->
review -> publish. Agents make (simulated) model calls with realistic token counts, write
artifacts, fail validation now and then and retry (the retry downgrades nothing: it is the
demo), publish, ask owners for proofs, and a microsite and an Uber Mode demo produce
traffic. One project of ``globex`` stalls in review. Cost controls are real: every run draws
on its tenant's daily cap through a budget lease (``initech``'s small cap is reached and its
runs end ``partial``), and Implementer runs have a per-run token cap.
Everything goes through the SDK: its spool, its sender, its spans and its run logs (OTLP:
Tempo and Loki under docker compose), exactly as a real agent's would.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from runledger import _env
from runledger.cost import RunCaps
from runledger.demo.validator import render_site
from runledger.sdk import CostOptions, Ledger, PublisherFrozen, Run, RunCapReached

PHASES = ("brief", "research", "build", "review", "publish")
ROLE = {
    "brief": "coordinator",
    "research": "implementer",
    "build": "implementer",
    "review": "validator",
    "publish": "publisher",
}
MODELS = {
    "coordinator": ("gpt-5-nano", "openai"),
    "implementer": ("claude-sonnet-4-5", "anthropic"),
    "validator": ("gpt-5-mini", "openai"),
    "publisher": ("gemini-2.5-flash", "google"),
}
PLAYBOOK = {"acme": "local-business", "globex": "saas-launch", "initech": "local-business"}
STALLED = "globex-p2"


class Project:
    """One project's position in the pipeline."""

    def __init__(self, tenant: str, project_id: str) -> None:
        self.tenant = tenant
        self.project_id = project_id
        self.phase_index = 0
        self.attempt = 1
        self.version = 0
        self.entered = False

    @property
    def phase(self) -> str:
        return PHASES[self.phase_index]


class Pipeline:
    """Step projects forward one run at a time."""

    def __init__(self, ledger: Ledger, rng: random.Random) -> None:
        self.ledger = ledger
        self.rng = rng
        self.projects = [
            Project(tenant, f"{tenant}-p{i}") for tenant in PLAYBOOK for i in range(1, 4)
        ]

    def step(self) -> None:
        project = self.rng.choice(self.projects)
        if project.project_id == STALLED and project.phase == "review":
            return
        tenant = project.tenant
        role = ROLE[project.phase]
        run_id = self.ledger.run_queued(
            tenant, project.project_id, project.phase, role,
            playbook=PLAYBOOK[tenant], attempt=project.attempt,
        )  # fmt: skip
        time.sleep(self.rng.uniform(0.01, 0.2))  # queue latency
        with self.ledger.run(
            tenant, project.project_id, project.phase, role, run_id=run_id,
            playbook=PLAYBOOK[tenant], attempt=project.attempt,
            caps=RunCaps(max_tokens=30_000) if role == "implementer" else None,
        ) as run:  # fmt: skip
            if not project.entered:
                run.phase_entered()
                project.entered = True
            try:
                calls = self.rng.randint(1, 3)
                for _ in range(calls):
                    self._model_call(run, role)
                run.log(f"{role} drafted the {project.phase} step", model_calls=calls)
                if self.rng.random() < 0.3:
                    with run.external_call("maps-api", cost_usd=Decimal("0.005")) as ext:
                        ext.summary = "geocoded the venue address"
            except RunCapReached as stop:
                run.log(f"stopped by the {stop.cap} cap", level=logging.WARNING, cap=stop.cap)
                # Hand over what exists so far: a partial artifact and a summary.
                project.version += 1
                run.partial(
                    f"{project.project_id}/site/index.html",
                    project.version,
                    f"{project.phase} stopped by the {stop.cap} cap",
                    missing="the remaining sections",
                    instructions="raise the cap or wait for tomorrow, then re-run the step",
                )
                return
            self._finish_phase(run, project)

    def _model_call(self, run: Run, role: str) -> None:
        model, provider = MODELS[role]
        tokens_in = self.rng.randint(800, 9000)
        max_tokens = 2500
        with run.model_call(
            model=model, provider=provider, prompt_tokens=tokens_in, max_tokens=max_tokens
        ) as call:
            call.record(
                tokens_in=tokens_in,
                tokens_out=self.rng.randint(150, max_tokens),
                cached_tokens_in=self.rng.randint(0, tokens_in // 2),
            )

    def _finish_phase(self, run: Run, project: Project) -> None:
        phase = project.phase
        if phase == "research":
            project.version += 1
            run.artifact_written(f"{project.project_id}/site/index.html", version=project.version)
        if phase == "build":
            # The built page itself goes to the ledger: proof sampling re-validates it and
            # the drift check compares its structure with earlier days' (docs/quality.md).
            project.version += 1
            page = render_site(PLAYBOOK[project.tenant], project.project_id, self.rng)
            run.artifact_written(
                f"{project.project_id}/site/index.html", version=project.version, content=page
            )
        if phase == "review" and self.rng.random() < 0.25:
            run.validation_failed(
                "hero section has no call to action",
                artifact_path=f"{project.project_id}/site/index.html",
                artifact_version=max(project.version, 1),
                rule="cta-present",
            )
            run.log("validation failed: back to build", level=logging.WARNING, rule="cta-present")
            project.attempt += 1
            project.phase_index = PHASES.index("build")
            raise RuntimeError("validation failed: hero section has no call to action")
        if phase == "publish":
            path = f"{project.project_id}/site/index.html"
            try:
                run.publish_done(path, version=project.version)
            except PublisherFrozen:
                # Quality sampling froze this playbook's Publisher: record a partial publish
                # whose instructions say how to finish, and leave the project in publish.
                run.partial(path, project.version, missing="the whole release")
                return
            run.log("published the site", version=project.version)
            proof = f"{project.project_id}-proof-{project.version}"
            run.proof_requested(
                proof, due_at=datetime.now(UTC) + timedelta(hours=48), artifact_path=path,
                artifact_version=project.version,
            )  # fmt: skip
            if self.rng.random() < 0.7:
                run.proof_completed(proof, approved=self.rng.random() < 0.9)
            site = f"{project.project_id}-site"
            for _ in range(self.rng.randint(1, 6)):
                run.microsite_visit(site)
            if self.rng.random() < 0.3:
                run.microsite_conversion(site)
            if self.rng.random() < 0.2:
                run.user_override("approved the proof on the owner's behalf", actor="support-1")
            demo = f"{project.project_id}-demo"
            run.demo_started(demo, location=(38.7223, -9.1393))
            if self.rng.random() < 0.8:
                run.demo_completed(demo, location=(38.7223, -9.1393))
            # Versions keep counting: an artifact version, once stored, never changes.
            project.phase_index, project.entered = 0, False
        else:
            run.phase_advanced(PHASES[project.phase_index + 1])
            project.phase_index += 1
            project.entered = False
        project.attempt = 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="control service base URL")
    parser.add_argument("--interval", type=float, default=0.4, help="seconds between runs")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--steps", type=int, default=0, help="stop after N runs (0: forever)")
    parser.add_argument(
        "--create-tenants",
        action="store_true",
        help="create the demo tenants and tokens in RUNLEDGER_DATABASE_URL first (once; kept "
        "in RUNLEDGER_HOME/tokens.json) and send with the demo admin token (docker compose)",
    )
    args = parser.parse_args(argv)
    token = None
    if args.create_tenants:
        from runledger.demo.stack import seed_demo
        from runledger.store import resolve_database_url, state_dir

        home = Path(os.environ.get(_env.HOME) or state_dir())
        home.mkdir(parents=True, exist_ok=True)
        token = seed_demo(resolve_database_url(), home)["admin"]
    stop = {"now": False}

    def on_signal(_signum: int, _frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # The tenant daily cap is enforced (the default) through budget leases; the demo keeps
    # working when the control service is briefly away, within a small offline allowance
    # (Publishers never).
    ledger = Ledger(
        url=args.url,
        token=token,
        costs=CostOptions(on_ledger_down="fail_open", offline_allowance_usd="0.05"),
    )
    pipeline = Pipeline(ledger, random.Random(args.seed))
    steps = 0
    try:
        while not stop["now"] and (not args.steps or steps < args.steps):
            try:
                pipeline.step()
            except RuntimeError:
                pass  # a failed validation ends its run as run_failed; the project retries
            steps += 1
            time.sleep(args.interval)
    finally:
        ledger.close(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
