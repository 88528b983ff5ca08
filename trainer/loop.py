"""The self-improvement loop: sample -> self-verify -> filter -> update -> evaluate, round after round.

Round 0 evaluates the starting model. Round t >= 1 samples the train prompts from the model of round
t-1, lets it verify its own samples, filters them, trains a new checkpoint with the update rule
(`update.name`: SFT on the kept samples, DPO on kept-vs-dropped pairs, GRPO on its own rollouts
scored by a reward; trainer/update/), swaps that into the running engine, evaluates it on the
held-out prompts, logs the round and judges the stopping rules: `Study.run_round` reads in that order. Every stage writes its files atomically into
the round's folder and is recorded there (trainer/runfolder.py: `round_stages` are a round's); a
finished stage is reused, checked first, so re-running the command resumes.

Under `accelerate launch` every rank runs the same code: sampling and verification are split across
ranks and gathered, training runs on all ranks (DDP or DeepSpeed), and only the main process writes.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from accelerate import PartialState
from accelerate.utils import gather_object

from core.config import rename_old_keys, to_dict
from core.errors import UserError
from core.io import write_json, write_text
from eval.gap import confidence_label, fmt_ci, summarize
from eval.metrics import json_safe, verifier_metrics
from eval.report import write_report
from eval.saturation import judge as saturation_judge
from eval.saturation import stop_reason
from trainer.config import CompareConfig, IterateConfig
from trainer.console import StudyConsole
from trainer.memory import gpu_mb, rss_mb
from trainer.models import resolve_model
from trainer.run import ENGINE_RESUMABLE, prepare_prompts, seed_everything
from trainer.runfolder import RunFolder, Stage
from trainer.samplers.base import Sampler
from trainer.stages import VerifierPool, generate_rows, select_rows, verify_rows
from trainer.tracking import Tracker
from trainer.update import RULES, UpdateRule, make_rule
from trainer.verifiers.ensemble import add_shared_member_costs

# Keys that may change between a run and its resume without invalidating finished stages.
# output_dir names the folder itself (the same study folder, reached from another working directory).
RESUMABLE_CHANGES = (
    "rounds",
    "report_to",
    "wandb_project",
    "wandb_group",
    "run_name",
    "saturation",
    "log_samples",
    "output_dir",
    *ENGINE_RESUMABLE,
)

# Keys round 0's held-out samples and their verification do not read (round 0 evaluates the starting
# model): studies that differ only in these, such as a comparison's conditions, share those stages.
ROUND0_UNREAD = ("sampling", "filter", "update", "bootstrap", "confidence", "ci_method")

# Seeds. Round t's stages draw from `seed + ROUND_STRIDE * t + stage`, so no two stages of a study
# share a stream; each rank adds `RANK_STRIDE * rank` (a prime, so rank and round offsets never
# coincide) to sample other draws than its neighbours.
ROUND_STRIDE = 1000
TRAIN_STAGE = 1  # sampling the train prompts, and the random control's choice among them
EVAL_STAGE = 2  # sampling the held-out prompts, and the random control's choice among them
RANK_STRIDE = 7919


# How long a rank waits at a collective (a barrier, a gather) before the launch fails: long enough for
# rank 0 to gather and save a ZeRO-3 model, or to start a large vLLM server (torch's default is 10 min
# for NCCL). MINDGAP_DIST_TIMEOUT (seconds) overrides it.
DIST_TIMEOUT_SECONDS = 2 * 3600


def stage_seed(seed: int, t: int, stage: int) -> int:
    return seed + ROUND_STRIDE * t + stage


def round_stages(t: int, rule: str = "sft") -> dict[str, Stage]:
    """Round t's stages in the order they are made: from round 1 the train prompts' samples, their
    verification and selection and the update of the model by the rule `rule` (its checkpoint and
    `<rule>.json`; the stage is named as the rule's on the console: distill, dpo, grpo); in every round the
    held-out evaluation and the round's metrics (its last stage: the round is finished). Keyed by
    name, the update stage as "update"."""
    rd = f"round_{t:03d}"
    train = {
        "generations": Stage(rd, "generations", ("generations.parquet",)),
        "verification": Stage(rd, "verification", ("verification.parquet", "verification_costs.json")),
        "selection": Stage(rd, "selection", ("selection.parquet",)),
        "update": Stage(rd, RULES[rule].stage, ("checkpoint", f"{rule}.json")),
    }
    evaluation = [
        Stage(rd, "eval_generations", ("eval_generations.parquet",)),
        Stage(rd, "eval_verification", ("eval_verification.parquet", "eval_verification_costs.json")),
        Stage(rd, "eval", ("eval.parquet",)),
        Stage(rd, "metrics", ("metrics.json",)),
    ]
    return {**(train if t else {}), **{s.name: s for s in evaluation}}


def open_study_folder(cfg: IterateConfig) -> RunFolder:
    """The study folder, checked (trainer/runfolder.py): every round there or to come is in its layout."""
    out = Path(cfg.output_dir)
    found = [int(p.name[6:]) for p in out.glob("round_[0-9][0-9][0-9]") if p.name[6:].isdigit()]
    last = max([cfg.rounds, *found])
    # the options of the rules the study does not use may change too (a config holds several rules')
    unused = tuple(f"update.{name}" for name in RULES if name != cfg.update.name)
    return RunFolder.open(
        out,
        to_dict(cfg),
        (*RESUMABLE_CHANGES, *unused),
        to_dict(IterateConfig()),
        layout=[s for t in range(last + 1) for s in round_stages(t, cfg.update.name).values()],
        chain=True,
        study=True,
        upgrade=lambda saved: rename_old_keys(IterateConfig, saved),  # `sft` is update.sft now
    )


def share_of(items: list, group: int, groups: int) -> list:
    """Group `group`'s contiguous share of `items` split over `groups` (the first ones get one more
    where they do not divide evenly), as accelerate's `split_between_processes` splits over ranks."""
    base, extra = divmod(len(items), groups)
    start = group * base + min(group, extra)
    return items[start : start + base + (1 if group < extra else 0)]


@dataclass
class Study:
    """One study: its config and every piece of state the rounds share."""

    cfg: IterateConfig
    console: StudyConsole | None = None  # the terminal's live display (a silent one by default)
    run: RunFolder | None = None  # the study folder, opened (checked) before the study starts
    out: Path = field(init=False)  # the study folder
    base_dir: Path = field(init=False)  # the starting model (round 0's checkpoint)
    state: PartialState = field(init=False)  # this process's rank among the launch's processes
    task: object = field(init=False)  # eval.tasks.Task
    train_problems: list = field(init=False)  # sampled, verified and distilled every round
    train_prompts: list = field(init=False)
    test_problems: list = field(init=False)  # held out: every round's evaluation
    test_prompts: list = field(init=False)
    shots: list = field(init=False)  # worked examples for verifier prompts, never sampled or verified
    rule: UpdateRule = field(init=False)  # how a round's selected samples train the next checkpoint
    sampler: Sampler | None = None  # the one engine, started on first use
    loaded: Path | None = None  # the checkpoint whose weights the engine holds
    pool: VerifierPool | None = None  # the verifiers' engines (the generator's, and cross-verifiers')
    tracker: Tracker | None = None  # W&B (main process only)
    history: list[dict] = field(default_factory=list)  # every round's metrics so far
    written: int = 0  # rounds already in metrics.jsonl and report.md
    swap_seconds: float | None = None  # the last weight swap of this round
    donors: tuple[Path, ...] = ()  # study folders whose round 0 this one may share (a comparison's)

    def __post_init__(self):
        cfg = self.cfg
        self.out = Path(cfg.output_dir)
        self.run = self.run or open_study_folder(cfg)
        self.console = self.console or StudyConsole(self.out, "", cfg.rounds)
        self.base_dir = resolve_model(cfg.model)
        self.state = PartialState()
        context = cfg.engine.max_model_len
        self.task, self.train_problems, self.train_prompts, self.shots = prepare_prompts(
            cfg.task,
            self.base_dir,
            "train",
            cfg.seed,
            ("sampling.max_tokens", cfg.sampling.max_tokens, context),
        )
        _, self.test_problems, self.test_prompts, _ = prepare_prompts(
            cfg.task,
            self.base_dir,
            "test",
            cfg.seed,
            ("eval_sampling.max_tokens", cfg.eval_sampling.max_tokens, context),
        )
        first = self.cfg.verifiers[0]
        self.rule = make_rule(self.cfg.update, first, first.filter or self.cfg.filter)

    # ------------------------------------------------------------------ a round

    def run_round(self, t: int, prev: Path) -> tuple[dict, Path, str | None]:
        """Run (or resume) round t from checkpoint `prev`; return its metrics, checkpoint and stop reason."""
        stages = round_stages(t, self.rule.name)
        if self.run.done(stages["metrics"]):
            return self.resume_round(t, stages)
        seconds, train, checkpoint = {}, {}, prev
        self.swap_seconds = None
        if t > 0:
            seed = stage_seed(self.cfg.run_seed, t, TRAIN_STAGE)
            with self.timed(seconds, "sample", t):
                rows = self.sample(
                    stages["generations"],
                    prev,
                    self.train_problems,
                    self.train_prompts,
                    self.cfg.sampling,
                    seed,
                )
            with self.timed(seconds, "verify", t):
                rows, costs = self.verify(stages["verification"], rows, prev)
            rows = self.select(stages["selection"], rows, seed)
            train = self.training_set(rows, costs, t)
            if not train.get("stop"):
                with self.timed(seconds, self.rule.stage, t):
                    checkpoint, stats = self.update(stages["update"], rows, prev, t)
                train.update(self.rule.record(stats))
        with self.timed(seconds, "evaluate", t):
            eval_rows, metrics = self.evaluate(stages, checkpoint, t)
        metrics.update(
            round=t,
            checkpoint=self.checkpoint_ref(checkpoint),
            train=train,
            seconds={k: round(v, 2) for k, v in seconds.items()},
            swap_seconds=self.swap_seconds,
            rss_mb=rss_mb(),
            gpu_mb=gpu_mb(),
        )
        self.history.append(metrics)
        stop = self.judge(metrics)
        if self.state.is_main_process:
            write_json(self.run.path(stages["metrics"]), metrics)
        self.run.finish(stages["metrics"])
        self.log_round(t, metrics, eval_rows)
        return metrics, checkpoint, stop

    def resume_round(self, t: int, stages: dict[str, Stage]) -> tuple[dict, Path, str | None]:
        """A finished round from its metrics.json, judged again (the stopping rules may have changed)."""
        m = self.run.read(stages["metrics"])
        self.history.append(m)
        before = (m.get("stop"), m.get("saturation"))
        stop = self.judge(m)
        if (stop, m.get("saturation")) != before:  # every process judges alike: all record it again
            if self.state.is_main_process:
                write_json(self.run.path(stages["metrics"]), m)
            self.run.finish(stages["metrics"])
        if self.tracker is not None:
            self.tracker.remember(t, m)
        self.console.round_line(f"round {t}: finished before ({self.summary(m)})")
        return m, self.checkpoint_path(m["checkpoint"]), stop

    def training_set(self, rows: pd.DataFrame, costs: dict, t: int) -> dict:
        """What the round records about its train samples and what the update rule trains on (a
        `stop` reason where that is nothing)."""
        kept = rows[rows["kept"]]
        truncated = rows["finish_reason"] == "length"
        data, counts = self.rule.training_data(rows, self.update_seed(t))
        on_train = verifier_metrics(
            rows, self.cfg.verifiers[0].column, rows["kept"].to_numpy(dtype=float), **self.cfg.boot
        )
        train = {
            "rule": self.rule.name,
            "sampled": len(rows),
            "kept": len(kept),
            **counts,  # what the rule trains on: `distilled` rows (sft), `dpo_pairs` (dpo), ...
            "truncated_sampled": int(truncated.sum()),
            "truncated_kept": int(truncated[rows["kept"]].sum()),
            "train_accuracy": on_train["generation_utility"],
            "kept_precision": on_train["kept_precision"],
            "train_gap": on_train["gap"],
            **json_safe({key: on_train[key] for key in ("rare_answer_recall", "kept_answer_entropy")}),
            "verification_tokens": sum(c["tokens"] for c in costs.values()),
        }
        if len(data) == 0:
            train["stop"] = f"round {t}: {self.rule.nothing_to_train(rows, counts)}"
        return train

    def judge(self, metrics: dict) -> str | None:
        """Judge the stopping rules after the round `metrics` (the last of the history so far), recording
        every rule's verdict in it; the reason to stop: an empty kept set, or the first rule that fired."""
        if metrics["round"] == 0:
            metrics["saturation"], metrics["stop"] = {}, None
            return None
        cfg = self.cfg
        verdicts = saturation_judge(
            self.history, cfg.saturation, cfg.rounds, cfg.bootstrap, cfg.confidence, cfg.seed
        )
        metrics["saturation"] = verdicts
        metrics["stop"] = metrics["train"].get("stop") or stop_reason(verdicts, cfg.saturation)
        return metrics["stop"]

    # ------------------------------------------------------------------ the engine

    def sampler_for(self, checkpoint: Path) -> Sampler:
        """The study's one engine, holding `checkpoint`'s weights (swapped in place when they differ)."""
        from trainer.samplers import build_sampler

        if self.loaded != checkpoint:
            self.run.check_use(checkpoint)  # a checkpoint of an earlier run: its weights as written
        if self.sampler is None:
            with self.console.stage("starting the engine"):
                self.sampler = build_sampler(
                    checkpoint, self.cfg.engine, self.cfg.run_seed, log_dir=self.run.log_dir
                )
                self.state.wait_for_everyone()  # a shared server is ready (and holds `checkpoint`)
            self.sampler.progress = self.console.progress
            self.loaded = checkpoint
            self.pool = VerifierPool(
                self.sampler, self.base_dir, self.cfg.engine, self.task, self.shots, self.cfg.run_seed
            )
        elif self.loaded != checkpoint:
            start = time.perf_counter()
            self.sampler.load_weights(checkpoint)
            # a server shared by the ranks is swapped by one of them: none samples before it is done
            self.state.wait_for_everyone()
            self.loaded = checkpoint
            self.swap_seconds = time.perf_counter() - start
        return self.sampler

    def share(self, items: list) -> tuple[list, int, bool]:
        """This rank's share of `items` to sample or verify: (the share, its group's index, whether this
        rank's results count). Ranks that hold one engine together (`tensor_parallel_size` under a
        launcher) must send it the same requests: they get the same share, and one of them reports."""
        from trainer.samplers import ranks_per_engine

        size = ranks_per_engine(self.cfg.engine, self.state.num_processes)
        groups, group = self.state.num_processes // size, self.state.process_index // size
        return share_of(items, group, groups), group, self.state.process_index % size == 0

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        if self.sampler is not None:
            self.sampler.close()
        self.sampler = None
        if self.tracker is not None:
            self.tracker.finish()

    # ------------------------------------------------------------------ stages (all ranks)

    def sample(self, stage: Stage, checkpoint: Path, problems, prompts, sampling, seed: int) -> pd.DataFrame:
        """Generate on this rank's share of the prompts, gather; the main process writes the table."""

        def make() -> pd.DataFrame:
            sampler = self.sampler_for(checkpoint)
            idx, group, speaks = self.share(list(range(len(problems))))
            rows = generate_rows(
                sampler,
                self.task,
                [problems[i] for i in idx],
                [prompts[i] for i in idx],
                sampling,
                seed + RANK_STRIDE * group,
            )
            rows = pd.DataFrame.from_records(gather_object(rows.to_dict("records") if speaks else []))
            order = {str(p.id): i for i, p in enumerate(problems)}
            return rows.sort_values(
                ["prompt_id", "sample_idx"],
                key=lambda s: s.map(order) if s.name == "prompt_id" else s,
                kind="stable",
            ).reset_index(drop=True)

        return self.run.stage(stage, make)

    def verify(self, stage: Stage, rows: pd.DataFrame, checkpoint: Path) -> tuple[pd.DataFrame, dict]:
        """Score this rank's share of the rows with every verifier, gather; the main process writes
        the scored rows and the verifiers' costs."""

        def make() -> tuple[pd.DataFrame, dict]:
            self.sampler_for(checkpoint)
            self.pool.generator = self.sampler
            # Whole prompts per rank: a tournament compares a prompt's generations with each other.
            mine, _, speaks = self.share(list(dict.fromkeys(rows["prompt_id"])))
            mine = set(mine)
            idx = [i for i, p in enumerate(rows["prompt_id"]) if p in mine]
            part, costs = verify_rows(rows.iloc[idx].reset_index(drop=True), self.cfg.verifiers, self.pool)
            cols = [v.column for v in self.cfg.verifiers]
            scored = [(i, rec) for i, rec in zip(idx, part[cols].to_dict("records"))] if speaks else []
            by_row = dict(gather_object(scored))
            scored_rows = rows.copy()
            for col in cols:
                scored_rows[col] = [by_row[i][col] for i in range(len(rows))]
            costs = add_shared_member_costs(_merge_costs(gather_object([costs] if speaks else [])))
            return scored_rows, costs

        return self.run.stage(stage, make)

    def select(self, stage: Stage, rows: pd.DataFrame, seed: int) -> pd.DataFrame:
        return self.run.stage(stage, lambda: select_rows(rows, self.cfg.verifiers, self.cfg.filter, seed))

    def update_seed(self, t: int) -> int:
        """Round t's seed of the update stage: its draws (DPO's pairs) and its training."""
        return self.cfg.run_seed + t

    def update(self, stage: Stage, rows: pd.DataFrame, prev: Path, t: int) -> tuple[Path, dict]:
        """Train round t's checkpoint from `prev` with the update rule on the selected `rows`, or read
        it back (with the stats in `<rule>.json`) where a run before finished it."""
        ckpt, stats_file = self.run.path(stage, "checkpoint"), f"{self.rule.name}.json"
        if self.run.done(stage):
            return ckpt, self.run.read(stage, stats_file)
        self.run.check_use(prev)  # trained further from here
        with self.run.making(stage):
            if self.rule.online:
                self.rule.context = self.online_context()
            judging = self.rule.needs_judge()
            if self.pool is not None and not judging:
                self.pool.sleep()  # frees the engines' GPU memory while training runs (no-op on CPU)
            ckpt, stats = self.rule.train(
                rows, prev, ckpt, seed=self.update_seed(t), callbacks=[self.console.train_callback()]
            )
            gc.collect()
            if self.pool is not None and not judging:
                self.pool.wake_up()
            if self.state.is_main_process:
                write_json(self.run.path(stage, stats_file), stats)
        return ckpt, stats

    def online_context(self):
        """What an online rule (grpo) reads from the study: the task, the train problems, the rollout
        defaults, the engine, the verifiers, and the judge: the study's verifiers on a checkpoint
        (the round's start), on the study's one engine."""
        from trainer.update.grpo import OnlineContext

        def judge(checkpoint: Path) -> VerifierPool:
            self.sampler_for(checkpoint)
            self.pool.generator = self.sampler
            return self.pool

        return OnlineContext(
            task=self.task,
            problems={str(p.id): p for p in self.train_problems},
            sampling=self.cfg.sampling,
            engine=self.cfg.engine,
            verifiers=list(self.cfg.verifiers),
            judge=judge,
            share=self.share,
        )

    def evaluate(self, stages: dict[str, Stage], checkpoint: Path, t: int) -> tuple[pd.DataFrame, dict]:
        """Held-out evaluation of `checkpoint`: accuracy, the gap of its self-verification, pass@k, diversity."""
        seed = stage_seed(self.cfg.run_seed, t, EVAL_STAGE)
        if t == 0:
            self.share_round0(stages)
        rows = self.sample(
            stages["eval_generations"],
            checkpoint,
            self.test_problems,
            self.test_prompts,
            self.cfg.eval_sampling,
            seed,
        )
        rows, costs = self.verify(stages["eval_verification"], rows, checkpoint)
        rows = self.select(stages["eval"], rows, seed)
        ids = [v.id or v.name for v in self.cfg.verifiers]
        return rows, summarize(rows, ids, costs, **self.cfg.boot)

    def share_round0(self, stages: dict[str, Stage]) -> None:
        """Take round 0's held-out samples, and their verification where the verifiers are the same,
        from the first donor study that made them with the settings they depend on: the same model,
        held-out prompts, evaluation sampling and seeds give the same samples, so a comparison's
        conditions need not sample them again."""
        generations, verification = stages["eval_generations"], stages["eval_verification"]
        for donor in self.donors:
            if self.run.reuse(generations, donor, (*ROUND0_UNREAD, "verifiers")):
                reused = "samples"
                if self.run.reuse(verification, donor, ROUND0_UNREAD):
                    reused += " and their verification"
                self.console.round_line(f"round 0: held-out {reused} taken from {donor} (the same settings)")
                return

    # ------------------------------------------------------------------ bookkeeping

    def timed(self, seconds: dict, name: str, t: int):
        """A stage shown on the console and timed into `seconds[name]`."""
        return self.console.stage(f"round {t} · {name}", record=(seconds, name))

    def checkpoint_ref(self, checkpoint: Path) -> str:
        """How metrics.json names a checkpoint: relative to the study folder when inside it (the study
        resumes from any working directory, and the folder may move), else as an absolute path."""
        checkpoint = Path(checkpoint).resolve()
        try:
            return str(checkpoint.relative_to(self.out.resolve()))
        except ValueError:
            return str(checkpoint)

    def checkpoint_path(self, ref: str) -> Path:
        path = Path(ref)
        return path if path.is_absolute() else self.out / path

    def write_outputs(self) -> None:
        """metrics.jsonl and report.md from every round so far (main process)."""
        if not self.state.is_main_process or not self.history or self.written == len(self.history):
            return
        self.written = len(self.history)
        write_text(self.out / "metrics.jsonl", "".join(_jsonl(m) for m in self.history))
        write_report(
            self.out,
            self.history,
            title=f"mindgap study: {self.cfg.model} on {self.task.name}",
            stop_reason=self.history[-1].get("stop"),
        )

    @staticmethod
    def summary(metrics: dict) -> str:
        train = metrics["train"]
        return (
            f"accuracy {fmt_ci(metrics['generation_utility'], signed=False)}, gap {fmt_ci(metrics['gap'])} "
            f"({confidence_label(metrics)} CI)"
            + (f", kept {train['kept']}/{train['sampled']}" if train.get("kept") is not None else "")
            + (f", {train['dpo_pairs']} pairs" if train.get("dpo_pairs") is not None else "")
            + (f", reward {train['grpo_reward']:.2f}" if train.get("grpo_reward") is not None else "")
            + f", {sum(metrics.get('seconds', {}).values()):.0f}s"
        )

    def log_round(self, t: int, metrics: dict, eval_rows: pd.DataFrame) -> None:
        if not self.state.is_main_process:
            return
        self.write_outputs()
        if self.tracker is not None:
            cols = ["prompt_id", "question", "completion", "answer", "correct", "kept"] + [
                v.column for v in self.cfg.verifiers
            ]
            skip = ("checkpoint", "stop", "per_prompt")
            self.tracker.log_round(
                t,
                {k: v for k, v in metrics.items() if k not in skip},
                eval_rows[cols].head(self.cfg.log_samples),
            )
        self.console.round_line(f"round {t}: {self.summary(metrics)}")


def run_study(cfg: IterateConfig, donors: tuple[Path, ...] = ()) -> list[dict]:
    """Run (or resume) a whole study; return the metrics of every round. `donors`: study folders
    whose round-0 evaluation it may share where made with the same settings (Study.share_round0)."""
    seed_everything(cfg.run_seed)
    # the process group of a multi-process launch (gloo on CPU), before anything else creates it
    PartialState(cpu=_on_cpu(), timeout=dist_timeout())
    out = Path(cfg.output_dir)
    run = open_study_folder(cfg)  # a resume's checks, before any model loads
    with StudyConsole(out, title=f"{cfg.model} on {cfg.task.name}", rounds=cfg.rounds) as console:
        for note in run.notes:
            console.round_line(note)
        study = Study(cfg, console, run, donors=tuple(donors))
        run.begin()
        meta = run.meta
        if study.state.is_main_process:
            study.tracker = Tracker(
                cfg.report_to,
                out,
                cfg.wandb_project,
                cfg.run_name or out.name,
                meta.get("wandb_run_id"),
                to_dict(cfg),
                group=cfg.wandb_group,
            )
            if study.tracker.run_id and meta.get("wandb_run_id") != study.tracker.run_id:
                meta["wandb_run_id"] = study.tracker.run_id
                run.write_meta()
        checkpoint, stop = study.base_dir, None
        try:
            for t in range(cfg.rounds + 1):
                _, checkpoint, stop = study.run_round(t, checkpoint)
                if stop:
                    break
            study.write_outputs()  # also after a resume that found every round already done
            if study.state.is_main_process:
                if stop:
                    console.round_line(f"stopped: {stop}")
                if study.tracker is not None:
                    study.tracker.log_summary(
                        {
                            "stop_reason": stop or f"completed {cfg.rounds} rounds",
                            "rounds_run": len(study.history) - 1,
                        }
                    )
                console.round_line(f"report: {out / 'report.md'}")
        finally:
            study.close()
    return study.history


def run_comparison(cfg: CompareConfig) -> dict[str, list[list[dict]]]:
    """Every condition's studies (each resumable; replicate by replicate, so a comparison stopped part
    way holds whole sets of conditions), then comparison.md beside them; the histories."""
    from eval.compare import read_replicates, write_comparison

    studies = cfg.studies()
    done: list[Path] = []
    for r in range(cfg.replicates):
        for runs in studies.values():
            run_study(runs[r], donors=tuple(done))  # a condition shares round 0 with the ones before
            done.append(Path(runs[r].output_dir))
    out = Path(cfg.output_dir)
    histories = {name: read_replicates(out, name, cfg.replicates) for name in studies}
    first = next(iter(studies.values()))[0]
    if PartialState().is_main_process:
        path = write_comparison(
            out,
            histories,
            cfg.control,
            title=f"mindgap comparison: {first.model} on {first.task.name}",
            n_boot=first.bootstrap,
            confidence=first.confidence,
            seed=first.seed,
            controls=cfg.controls(),
        )
        print(f"comparison: {path}")
    return histories


def dist_timeout():
    """`DIST_TIMEOUT_SECONDS`, or $MINDGAP_DIST_TIMEOUT seconds, as the timedelta torch wants."""
    import datetime
    import os

    value = os.environ.get("MINDGAP_DIST_TIMEOUT", "").strip()
    try:
        seconds = float(value) if value else DIST_TIMEOUT_SECONDS
    except ValueError:
        raise UserError(f"MINDGAP_DIST_TIMEOUT: expected seconds, got {value!r}") from None
    return datetime.timedelta(seconds=seconds)


def _merge_costs(per_rank: list[dict[str, dict]]) -> dict[str, dict]:
    """One cost record per verifier from every rank's: counts add up, seconds are the slowest rank's,
    and `verdict_mass` is the mean over every rank's items: each rank's mean weighted by the count it is
    over, the rank's `calls` where its record counts them (a tournament's comparisons), else its `rows`
    (mc: one verdict per row). A rank without a verdict mass (it scored nothing) carries no weight."""
    merged: dict[str, dict] = {}
    mass: dict[str, list[tuple[float, int]]] = {}
    for costs in per_rank:
        for vid, cost in costs.items():
            into = merged.setdefault(vid, {})
            for key, value in cost.items():
                if key == "verdict_mass":
                    if value is not None:
                        mass.setdefault(vid, []).append((float(value), int(cost.get("calls", cost["rows"]))))
                    into.setdefault(key, None)
                elif key not in into:
                    into[key] = value
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    into[key] = max(into[key], value) if "seconds" in key else into[key] + value
    for vid, pairs in mass.items():
        count = sum(n for _, n in pairs)
        merged[vid]["verdict_mass"] = sum(m * n for m, n in pairs) / count if count else None
    return merged


def _on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def _jsonl(m: dict) -> str:
    import json

    return json.dumps(m) + "\n"
