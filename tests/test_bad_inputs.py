"""Bad inputs across every subcommand family: each gives exit status 2 and ONE clean stderr line that
names the cause, before any training starts (issue #14, items 5 and 6).

Each row is ``(id, argv, pattern)``: ``argv`` may hold ``{name}`` placeholders filled from the
:func:`files` fixture (malformed YAML, a text file named ``.zip``, a truncated zip, a QR-DQN zip...);
``pattern`` is a regex searched in the error line.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from equirl.assets import asset_path
from equirl.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RL_CONFIG = CONFIGS / "rl" / "dqn-CartPole-v1.yaml"
RL = str(RL_CONFIG)
GRID = str(CONFIGS / "rl" / "dqn-GridWorld-v0.yaml")
LANG = str(CONFIGS / "language" / "scan_lstm_add_jump.yaml")
GPT2 = str(CONFIGS / "language" / "gpt2_tiny.yaml")
VPRE = str(CONFIGS / "vision" / "pretrain_digits.yaml")
VFT = str(CONFIGS / "vision" / "finetune_lambda.yaml")

ROWS: list[tuple[str, list[str], str]] = [
    # --- top level / argparse -------------------------------------------------------------------
    ("unknown-command", ["frobnicate"], r"invalid choice: 'frobnicate'"),
    ("unknown-flag", ["envs", "--bogus"], r"unrecognized arguments: --bogus"),
    ("demo-extra-arg", ["demo", "now"], r"unrecognized arguments: now"),
    ("missing-required", ["eval", "--env", "CartPole-v1"], r"--agent"),
    # --- rl: check-symmetry ---------------------------------------------------------------------
    ("check-steps-0", ["check-symmetry", "CartPole-v1", "--steps", "0"], r"--steps.*'0'.*>= 1"),
    ("check-steps-huge", ["check-symmetry", "CartPole-v1", "--steps", "10000000000"], r"--steps.*<="),
    ("check-steps-text", ["check-symmetry", "CartPole-v1", "--steps", "ten"], r"--steps.*'ten'"),
    ("check-seed-neg", ["check-symmetry", "CartPole-v1", "--seed", "-3"], r"--seed.*'-3'.*>= 0"),
    ("check-unknown-env", ["check-symmetry", "NoSuchEnv-v0"], r"NoSuchEnv-v0"),
    ("check-atol-0", ["check-symmetry", "CartPole-v1", "--atol", "0"], r"--atol.*'0'.*> 0"),
    ("check-atol-nan", ["check-symmetry", "CartPole-v1", "--atol", "nan"], r"--atol.*'nan'"),
    # --- rl: pretrain/train config values -------------------------------------------------------
    ("gamma-neg", ["pretrain", RL, "--set", "hyperparams.gamma=-3"], r"hyperparams\.gamma.*-3.*\[0, 1\]"),
    ("gamma-big", ["pretrain", RL, "--set", "hyperparams.gamma=1.5"], r"hyperparams\.gamma.*1\.5"),
    (
        "lr-nan",
        ["pretrain", RL, "--set", "hyperparams.learning_rate=.nan"],
        r"hyperparams\.learning_rate.*nan",
    ),
    (
        "lr-inf",
        ["pretrain", RL, "--set", "hyperparams.learning_rate=.inf"],
        r"hyperparams\.learning_rate.*inf",
    ),
    ("lr-zero", ["pretrain", RL, "--set", "hyperparams.learning_rate=0"], r"hyperparams\.learning_rate.*> 0"),
    # a finite float beyond float32 (torch's) range: refused by the schema, in every adapter
    ("lr-f32", ["pretrain", RL, "--set", "hyperparams.learning_rate=1e308"], r"learning_rate.*float32"),
    ("lang-lr-f32", ["language", "pretrain", LANG, "--set", "train.lr=1e39"], r"train\.lr.*float32"),
    ("vision-lr-f32", ["vision", "pretrain", VPRE, "--set", "train.lr=-1e39"], r"train\.lr.*float32"),
    # files already there are never replaced unasked, checked before any work
    ("bench-csv-exists", ["bench", "symmetrizers", "--csv", "{afile}"], r"afile already exists.*--overwrite"),
    (
        "eval-auto-choice-exists",
        [
            "eval",
            "--agent",
            "{cartpole_zip}",
            "--env",
            "CartPole-v1",
            "--method",
            "auto",
            "--out",
            "{choice_dir}",
        ],
        r"auto_choice\.json already exists.*--overwrite",
    ),
    (
        "scan-edited-exists",
        ["language", "scan-generate", "--out", "{scan_dir}"],
        r"tasks\.txt already exists",
    ),
    # agents that are not what they seem: named by what they are
    ("agent-fifo", ["eval", "--agent", "{fifo_zip}", "--env", "CartPole-v1"], r"fifo\.zip is a named pipe"),
    ("agent-device", ["eval", "--agent", "{device_zip}", "--env", "CartPole-v1"], r"device\.zip is a device"),
    (
        "agent-no-optimizer",
        ["eval", "--agent", "{no_optim_zip}", "--env", "CartPole-v1"],
        r"no policy\.optimizer\.pth entry",
    ),
    ("agent-nan", ["eval", "--agent", "{nan_zip}", "--env", "CartPole-v1"], r"non-finite weights \(q_net"),
    (
        "agent-wrong-shape",
        ["eval", "--agent", "{shape_zip}", "--env", "CartPole-v1"],
        r"size mismatch for q_net\.q_net\.0\.weight.*\[67, 4\]",
    ),
    (
        "train-freq-0",
        ["pretrain", RL, "--set", "hyperparams.train_freq=0"],
        r"hyperparams\.train_freq.*0.*>= 1",
    ),
    (
        "gsde-discrete",
        ["pretrain", str(CONFIGS / "rl" / "ppo-CartPole-v1.yaml"), "--set", "hyperparams.use_sde=true"],
        r"hyperparams\.use_sde.*continuous actions; CartPole-v1 has discrete",
    ),
    (
        "gsde-freq",
        ["pretrain", str(CONFIGS / "rl" / "sac-Pendulum-v1.yaml"), "--set", "hyperparams.sde_sample_freq=-2"],
        r"hyperparams\.sde_sample_freq.*>= -1",
    ),
    (
        "grad-steps-0",
        ["pretrain", RL, "--set", "hyperparams.gradient_steps=0"],
        r"hyperparams\.gradient_steps",
    ),
    (
        "target-0",
        ["pretrain", RL, "--set", "hyperparams.target_update_interval=0"],
        r"target_update_interval",
    ),
    (
        "starts-neg",
        ["pretrain", RL, "--set", "hyperparams.learning_starts=-5"],
        r"hyperparams\.learning_starts.*>= 0",
    ),
    (
        "batch-huge",
        ["pretrain", RL, "--set", "hyperparams.batch_size=100000000"],
        r"hyperparams\.batch_size = 100000000: must lie in \[1, 1000000\]",
    ),
    (
        "batch-gt-buffer",
        ["pretrain", RL, "--set", "hyperparams.batch_size=2000", "--set", "hyperparams.buffer_size=1000"],
        r"batch_size.*buffer_size",
    ),
    (
        "buffer-0",
        ["pretrain", RL, "--set", "hyperparams.buffer_size=0"],
        r"hyperparams\.buffer_size = 0: must lie in \[1, ",
    ),
    (
        "buffer-ram",
        ["pretrain", GRID, "--set", "hyperparams.buffer_size=1000000000"],
        r"buffer_size.*GB.*RAM",
    ),
    (
        "buffer-huge",
        ["pretrain", RL, "--set", "hyperparams.buffer_size=10000000000"],
        r"buffer_size = 10000000000: must lie in \[1, 1000000000\]",
    ),
    (
        "net-arch-neg",
        ["pretrain", RL, "--set", "hyperparams.net_arch=[64,-1]"],
        r"hyperparams\.net_arch\[1\].*-1",
    ),
    (
        "grad-norm-nan",
        ["pretrain", RL, "--set", "hyperparams.max_grad_norm=.nan"],
        r"hyperparams\.max_grad_norm",
    ),
    (
        "expl-frac",
        ["pretrain", RL, "--set", "hyperparams.exploration_fraction=2"],
        r"exploration_fraction.*\[0, 1\]",
    ),
    (
        "eps-final",
        ["pretrain", RL, "--set", "hyperparams.exploration_final_eps=-0.1"],
        r"exploration_final_eps",
    ),
    ("quantiles-0", ["pretrain", RL, "--set", "hyperparams.n_quantiles=0"], r"hyperparams\.n_quantiles"),
    ("seed-neg", ["pretrain", RL, "--set", "seed=-1"], r"seed.*-1.*(>= 0|must lie in \[0, )"),
    ("timesteps-0", ["pretrain", RL, "--set", "timesteps=0"], r"timesteps = 0: must lie in \[1, "),
    (
        "timesteps-huge",
        ["pretrain", RL, "--set", "timesteps=10000000000"],
        r"timesteps = 10000000000: must lie in \[1, 1000000000\]",
    ),
    ("eval-freq-neg", ["pretrain", RL, "--set", "eval.freq=-1"], r"eval\.freq.*(>= 0|must lie in \[0, )"),
    (
        "final-episodes-0",
        ["pretrain", RL, "--set", "eval.final_episodes=0"],
        r"eval\.final_episodes.*(>= 1|must lie in \[1, )",
    ),
    (
        "cfg-eval-episodes-0",
        ["pretrain", RL, "--set", "eval.episodes=0"],
        r"eval\.episodes.*(>= 1|must lie in \[1, )",
    ),
    ("equi-freq-neg", ["pretrain", RL, "--set", "log.equi_freq=-1"], r"log\.equi_freq"),
    ("scorer-lr-nan", ["train", RL, "--set", "scorer.lr=.nan"], r"scorer\.lr"),
    ("partial-frac", ["pretrain", RL, "--set", "partial_fraction=1.5"], r"partial_fraction.*1\.5"),
    ("algo-bad", ["pretrain", RL, "--set", "algo=ddpg"], r"algo.*'ddpg'"),
    (
        "algo-keys",
        ["pretrain", RL, "--set", "algo=ppo"],
        r"unknown keys hyperparams\.buffer_size.*\(algo ppo\)",
    ),
    ("env-bad", ["pretrain", RL, "--set", "env=NoSuchEnv-v0"], r"NoSuchEnv-v0"),
    ("unknown-key", ["pretrain", RL, "--set", "hyperparams.gama=0.9"], r"unknown key hyperparams\.gama"),
    ("override-no-eq", ["pretrain", RL, "--set", "gamma"], r"override 'gamma'.*key=value"),
    ("int-as-text", ["pretrain", RL, "--set", "timesteps=1e5"], r"timesteps.*expected an integer"),
    (
        "kwargs-unknown",
        ["train", RL, "--set", "method=equizero", "--set", "method_kwargs.bogus=1"],
        r"unknown option 'bogus'",
    ),
    (
        "kwargs-value",
        ["train", RL, "--set", "method=equizero", "--set", "method_kwargs.proxy=nope"],
        r"option proxy.*'nope'",
    ),
    (
        "kwargs-for-init",
        ["train", RL, "--set", "method=lambda", "--set", "method_kwargs.lambda_hidden=-4"],
        r"lambda_hidden.*-4",
    ),
    ("method-bad", ["train", RL, "--method", "nope"], r"--method.*nope"),
    ("multigroup-cartpole", ["train", RL, "--method", "multigroup"], r"multigroup.*product"),
    ("config-missing", ["pretrain", "{tmp}/nope.yaml"], r"not found.*nope\.yaml"),
    ("config-malformed", ["pretrain", "{bad_yaml}"], r"malformed YAML.*bad\.yaml.*line"),
    ("config-list", ["pretrain", "{list_yaml}"], r"list\.yaml.*mapping"),
    ("config-dir", ["pretrain", "{tmp}"], r"is a directory|is not a file"),
    ("config-binary", ["pretrain", "{binary}"], r"binary\.yaml.*(UTF-8|text)"),
    ("config-under-file", ["pretrain", "{afile}/cfg.yaml"], r"afile.*not a directory|not found"),
    ("out-is-file", ["pretrain", RL, "--set", "out={afile}", "--set", "timesteps=100"], r"afile.*is a file"),
    (
        "out-under-file",
        ["pretrain", RL, "--set", "out={afile}/runs", "--set", "timesteps=100"],
        r"afile.*is a file",
    ),
    (
        "export-under-file",
        ["pretrain", RL, "--export", "{afile}/agents", "--set", "timesteps=100"],
        r"afile.*is a file",
    ),
    ("init-text-zip", ["train", RL, "--init-from", "{text_zip}"], r"text\.zip.*(corrupt|not a zip)"),
    ("init-trunc-zip", ["train", RL, "--init-from", "{trunc_zip}"], r"corrupt.*trunc\.zip"),
    ("init-empty-zip", ["train", RL, "--init-from", "{empty_zip}"], r"corrupt.*empty\.zip"),
    ("init-missing", ["train", RL, "--init-from", "{tmp}/none.zip"], r"not found.*none\.zip"),
    ("init-empty-dir", ["train", RL, "--init-from", "{empty_dir}"], r"no model zip in .*empty"),
    ("init-qrdqn-as-dqn", ["train", RL, "--init-from", "{qrdqn_zip}"], r"qrdqn\.zip.*QR-DQN.*algo"),
    # --- rl: eval -------------------------------------------------------------------------------
    (
        "eval-episodes-0",
        ["eval", "--agent", "x.zip", "--env", "CartPole-v1", "--episodes", "0"],
        r"--episodes.*'0'",
    ),
    (
        "eval-seeds-neg",
        ["eval", "--agent", "x.zip", "--env", "CartPole-v1", "--seeds", "-1"],
        r"--seeds.*'-1'",
    ),
    (
        "eval-episodes-huge",
        ["eval", "--agent", "x.zip", "--env", "CartPole-v1", "--episodes", "99999999"],
        r"--episodes.*<=",
    ),
    ("eval-algo", ["eval", "--agent", "x.zip", "--env", "CartPole-v1", "--algo", "ppo2"], r"--algo.*'ppo2'"),
    (
        "eval-method",
        ["eval", "--agent", "{cartpole_zip}", "--env", "CartPole-v1", "--method", "nope"],
        r"nope",
    ),
    ("eval-missing", ["eval", "--agent", "{tmp}/none.zip", "--env", "CartPole-v1"], r"not found.*none\.zip"),
    (
        "eval-text-zip",
        ["eval", "--agent", "{text_zip}", "--env", "CartPole-v1"],
        r"text\.zip.*(corrupt|not a zip)",
    ),
    ("eval-trunc-zip", ["eval", "--agent", "{trunc_zip}", "--env", "CartPole-v1"], r"corrupt.*trunc\.zip"),
    (
        "eval-qrdqn-as-dqn",
        ["eval", "--agent", "{qrdqn_zip}", "--env", "CartPole-v1", "--algo", "dqn", "--method", "base"],
        r"QR-DQN.*--algo qrdqn",
    ),
    (
        "eval-dqn-as-qrdqn",
        ["eval", "--agent", "{cartpole_zip}", "--env", "CartPole-v1", "--algo", "qrdqn", "--method", "base"],
        r"DQN.*--algo dqn",
    ),
    (
        "eval-obs-size",
        ["eval", "--agent", "{cartpole_zip}", "--env", "Acrobot-v1", "--method", "base"],
        r"observation.*4.*6|observation.*6.*4",
    ),
    (
        "eval-multigroup",
        ["eval", "--agent", "{cartpole_zip}", "--env", "CartPole-v1", "--method", "multigroup"],
        r"multigroup.*product",
    ),
    ("eval-unknown-env", ["eval", "--agent", "{cartpole_zip}", "--env", "NoSuchEnv-v0"], r"NoSuchEnv-v0"),
    # --- rl: bench rl ---------------------------------------------------------------------------
    ("bench-rl-eval-freq-0", ["bench", "rl", "--eval-freq", "0"], r"--eval-freq.*'0'"),
    ("bench-rl-jobs-0", ["bench", "rl", "--jobs", "0"], r"--jobs.*'0'"),
    ("bench-rl-budget-neg", ["bench", "rl", "--budget", "-5"], r"--budget.*'-5'"),
    ("bench-rl-seeds-0", ["bench", "rl", "--seeds", "0"], r"--seeds.*'0'"),
    ("bench-rl-first-seed", ["bench", "rl", "--first-seed", "-1"], r"--first-seed.*'-1'"),
    ("bench-rl-repeats", ["bench", "rl", "--walltime-repeats", "0"], r"--walltime-repeats.*'0'"),
    ("bench-rl-out-file", ["bench", "rl", "--out", "{afile}"], r"afile.*is a file"),
    ("bench-rl-part", ["bench", "rl", "--parts", "speed"], r"--parts.*'speed'"),
    ("bench-rl-env", ["bench", "rl", "--parts", "efficiency", "--envs", "NoSuchEnv-v0"], r"NoSuchEnv-v0"),
    (
        "bench-rl-sweep",
        ["bench", "rl", "--parts", "zero-shot", "sweep-walltime", "--sweep", "nosuch"],
        r"config file not found: nosuch",
    ),
    # --- language -------------------------------------------------------------------------------
    ("scan-out-file", ["language", "scan-generate", "--out", "{afile}"], r"afile.*is a file"),
    ("scan-out-under-file", ["language", "scan-generate", "--out", "{afile}/scan"], r"afile.*is a file"),
    ("scan-seed-neg", ["language", "scan-generate", "--out", "{tmp}/s", "--seed", "-2"], r"--seed.*'-2'"),
    (
        "scan-order",
        ["language", "scan-generate", "--out", "{tmp}/s", "--order", "random"],
        r"--order.*'random'",
    ),
    ("lang-lr-nan", ["language", "pretrain", LANG, "--set", "train.lr=.nan"], r"train\.lr.*nan"),
    ("lang-batch-0", ["language", "pretrain", LANG, "--set", "train.batch_size=0"], r"train\.batch_size"),
    ("lang-hidden-neg", ["language", "pretrain", LANG, "--set", "model.hidden=-1"], r"model\.hidden.*-1"),
    ("lang-dropout", ["language", "pretrain", LANG, "--set", "model.dropout=1.5"], r"model\.dropout.*1\.5"),
    ("lang-seed-neg", ["language", "pretrain", LANG, "--set", "train.seed=-1"], r"train\.seed.*-1"),
    ("lang-clip-nan", ["language", "pretrain", LANG, "--set", "train.grad_clip=.nan"], r"train\.grad_clip"),
    ("lang-split", ["language", "pretrain", LANG, "--set", "data.split=nope"], r"nope"),
    (
        "lang-cell",
        ["language", "pretrain", LANG, "--set", "model.cell=transformer"],
        r"model\.cell.*transformer",
    ),
    ("lang-limit-neg", ["language", "pretrain", LANG, "--set", "data.limit=-4"], r"data\.limit.*-4"),
    ("lang-out-file", ["language", "pretrain", LANG, "--out", "{afile}"], r"afile.*is a file"),
    ("lang-cfg-out-file", ["language", "pretrain", LANG, "--set", "out={afile}/x"], r"afile.*is a file"),
    ("lang-eval-missing", ["language", "eval", "{tmp}/none.pt"], r"not found.*none\.pt"),
    ("lang-eval-text", ["language", "eval", "{text_pt}"], r"text\.pt.*(corrupt|not a)"),
    (
        "lang-eval-pickle",
        ["language", "eval", "{pickle_pt}"],
        r"pickle\.pt.*(weights-only|weights only|unsafe|PurePosixPath)",
    ),
    ("lang-eval-empty", ["language", "eval", "{empty_pt}"], r"corrupt checkpoint .*empty\.pt"),
    ("lang-eval-limit-neg", ["language", "eval", "{tmp}/none.pt", "--limit", "-4"], r"--limit.*'-4'"),
    (
        "lang-eval-ft-lr-neg",
        ["language", "eval", "{tmp}/none.pt", "--finetune-lr", "-1"],
        r"--finetune-lr.*'-1'",
    ),
    (
        "lang-eval-ft-lr-nan",
        ["language", "eval", "{tmp}/none.pt", "--finetune-lr", "nan"],
        r"--finetune-lr.*'nan'",
    ),
    (
        "lang-eval-ft-epochs",
        ["language", "eval", "{tmp}/none.pt", "--finetune-epochs", "-1"],
        r"--finetune-epochs.*'-1'",
    ),
    ("lang-eval-vision-ckpt", ["language", "eval", "{vision_pt}"], r"vision_cnn\.pt.*not an equirl SCAN"),
    (
        "gpt2-method",
        ["language", "gpt2-generate", GPT2, "--set", "method=canonicalize"],
        r"method.*canonicalize",
    ),
    ("gpt2-tokens-0", ["language", "gpt2-generate", GPT2, "--set", "max_new_tokens=0"], r"max_new_tokens.*0"),
    ("gpt2-temp-nan", ["language", "gpt2-generate", GPT2, "--set", "temperature=.nan"], r"temperature.*nan"),
    ("gpt2-temp-0", ["language", "gpt2-generate", GPT2, "--set", "temperature=0"], r"temperature.*> 0"),
    ("gpt2-topk-neg", ["language", "gpt2-fairness", GPT2, "--set", "top_k=-1"], r"top_k.*-1"),
    (
        "gpt2-samples-0",
        ["language", "gpt2-fairness", GPT2, "--set", "samples_per_prompt=0"],
        r"samples_per_prompt",
    ),
    ("gpt2-seed-neg", ["language", "gpt2-generate", GPT2, "--set", "seed=-1"], r"seed.*-1"),
    ("gpt2-variant", ["language", "gpt2-generate", GPT2, "--set", "variant=GPT3"], r"variant.*GPT3"),
    ("gpt2-out-file", ["language", "gpt2-generate", GPT2, "--set", "out={afile}"], r"afile.*is a file"),
    # --- vision ---------------------------------------------------------------------------------
    ("vis-lr-nan", ["vision", "pretrain", VPRE, "--set", "train.lr=.nan"], r"train\.lr.*nan"),
    ("vis-size", ["vision", "pretrain", VPRE, "--set", "data.size=6"], r"data\.size.*6"),
    ("vis-width-0", ["vision", "pretrain", VPRE, "--set", "model.width=0"], r"model\.width.*0"),
    ("vis-batch-0", ["vision", "pretrain", VPRE, "--set", "train.batch_size=0"], r"train\.batch_size"),
    ("vis-threads-0", ["vision", "pretrain", VPRE, "--set", "threads=0"], r"threads.*0"),
    ("vis-ntest-0", ["vision", "pretrain", VPRE, "--set", "data.n_test=0"], r"data\.n_test.*0"),
    ("vis-seed-neg", ["vision", "pretrain", VPRE, "--set", "train.seed=-1"], r"train\.seed.*-1"),
    ("vis-out-under-file", ["vision", "pretrain", VPRE, "--set", "out={afile}/cnn.pt"], r"afile.*is a file"),
    ("vis-out-dir", ["vision", "pretrain", VPRE, "--set", "out={tmp}"], r"is a directory"),
    (
        "vis-ft-missing",
        ["vision", "finetune", VFT, "--set", "checkpoint={tmp}/none.pt"],
        r"not found.*none\.pt",
    ),
    (
        "vis-ft-text",
        ["vision", "finetune", VFT, "--set", "checkpoint={text_pt}"],
        r"text\.pt.*(corrupt|not a)",
    ),
    ("vis-ft-ntrain-0", ["vision", "finetune", VFT, "--set", "n_train=0"], r"n_train.*0"),
    ("vis-ft-group", ["vision", "finetune", VFT, "--set", "group=rot45"], r"rot45"),
    ("vis-ft-multigroup", ["vision", "finetune", VFT, "--set", "method=multigroup"], r"multigroup"),
    ("vis-ft-prior-nan", ["vision", "finetune", VFT, "--set", "prior_weight=.nan"], r"prior_weight"),
    (
        "vis-ft-auto-backbone",
        ["vision", "finetune", VFT, "--set", "method=auto", "--set", "train_backbone=true"],
        r"method auto.*train_backbone: false",
    ),
    (
        "vis-ft-auto-candidates",
        ["vision", "finetune", VFT, "--set", "method=auto", "--set", "candidates=[base, multigroup]"],
        r"candidates.*multigroup",
    ),
    ("vis-ft-auto-candidate-unknown", ["vision", "finetune", VFT, "--set", "candidates=[best]"], r"'best'"),
    (
        "vis-ft-out-file",
        ["vision", "finetune", VFT, "--set", "out={afile}/x.pt", "--set", "checkpoint={vision_pt}"],
        r"afile.*is a file",
    ),
    ("vis-eval-missing", ["vision", "eval", "{tmp}/none.pt"], r"not found.*none\.pt"),
    ("vis-eval-text", ["vision", "eval", "{text_pt}"], r"text\.pt.*(corrupt|not a)"),
    (
        "vis-eval-pickle",
        ["vision", "eval", "{pickle_pt}"],
        r"pickle\.pt.*(weights-only|weights only|unsafe|PurePosixPath)",
    ),
    ("vis-eval-trunc", ["vision", "eval", "{trunc_pt}"], r"corrupt checkpoint .*trunc\.pt"),
    ("vis-eval-lang-ckpt", ["vision", "eval", "{lang_pt}"], r"lang\.pt.*not an equirl vision"),
    ("vis-eval-dir", ["vision", "eval", "{tmp}"], r"is a directory"),
    ("vis-eval-seed", ["vision", "eval", "{vision_pt}", "--seed", "-1"], r"--seed.*'-1'"),
    ("vis-eval-method", ["vision", "eval", "{vision_pt}", "--method", "multigroup"], r"--method.*multigroup"),
    ("vis-eval-group", ["vision", "eval", "{vision_pt}", "--group", "rot45"], r"rot45"),
    (
        "vis-eval-auto-ntrain",
        ["vision", "eval", "{vision_pt}", "--method", "auto", "--n-train", "1"],
        r"--n-train.*'1'.*>= 5",
    ),
    ("vis-eval-out-no-auto", ["vision", "eval", "{vision_pt}", "--out", "{tmp}/c"], r"--out.*--method auto"),
    ("vis-eval-config", ["vision", "eval", "{vision_pt}", "--config", "{bad_yaml}"], r"malformed YAML"),
    ("clip-batch-0", ["vision", "clip", "{tmp}", "--batch-size", "0"], r"--batch-size.*'0'"),
    ("clip-folder-missing", ["vision", "clip", "{tmp}/nope"], r"not found.*nope"),
    ("clip-folder-file", ["vision", "clip", "{afile}"], r"afile.*not a (folder|directory)"),
    # --- bench ----------------------------------------------------------------------------------
    ("bench-sym-repeats", ["bench", "symmetrizers", "--repeats", "-1"], r"--repeats.*'-1'"),
    ("bench-sym-csv", ["bench", "symmetrizers", "--csv", "{afile}/t.csv"], r"afile.*is a file"),
    ("bench-product-group", ["bench", "product", "--groups", "C4xQ8"], r"C4xQ8"),
    ("bench-product-seed", ["bench", "product", "--seed", "-1"], r"--seed.*'-1'"),
    ("bench-product-out", ["bench", "product", "--out", "{afile}"], r"afile.*is a file"),
    ("bench-vision-seeds", ["bench", "vision", "--seeds", "0"], r"--seeds.*'0'"),
    ("bench-vision-nlambda", ["bench", "vision", "--n-lambda", "5000"], r"--n-lambda.*5000"),
    ("bench-vision-steps", ["bench", "vision", "--lambda-steps", "-1"], r"--lambda-steps.*'-1'"),
    ("bench-vision-multik", ["bench", "vision", "--multi-k", "0"], r"--multi-k.*'0'"),
    ("bench-vision-out", ["bench", "vision", "--out", "{afile}"], r"afile.*is a file"),
    ("bench-scan-epochs", ["bench", "language-scan", "--epochs", "-1"], r"--epochs.*'-1'"),
    ("bench-scan-jobs", ["bench", "language-scan", "--jobs", "0"], r"--jobs.*'0'"),
    ("bench-scan-lr", ["bench", "language-scan", "--lr", "inf"], r"--lr.*'inf'"),
    ("bench-scan-dropout", ["bench", "language-scan", "--dropout", "1.5"], r"--dropout.*1\.5"),
    ("bench-scan-seeds", ["bench", "language-scan", "--seeds", "0,x"], r"--seeds.*'0,x'"),
    ("bench-scan-cells", ["bench", "language-scan", "--cells", "lstm,cnn"], r"cnn"),
    ("bench-scan-splits", ["bench", "language-scan", "--splits", "nope"], r"nope"),
    ("bench-scan-batch", ["bench", "language-scan", "--batch-size", "0"], r"--batch-size.*'0'"),
    ("bench-scan-out", ["bench", "language-scan", "--out", "{afile}"], r"afile.*is a file"),
    ("bench-gpt2-layers", ["bench", "language-gpt2", "--layers", "0"], r"--layers.*'0'"),
    (
        "bench-gpt2-heads",
        ["bench", "language-gpt2", "--width", "256", "--heads", "3"],
        r"width \(256\).*heads \(3\)",
    ),
    ("bench-gpt2-tokens", ["bench", "language-gpt2", "--tokens", "0"], r"--tokens.*'0'"),
    ("bench-gpt2-variant", ["bench", "language-gpt2", "--variant", "GPT3"], r"variant.*GPT3"),
    ("bench-gpt2-out", ["bench", "language-gpt2", "--out", "{afile}"], r"afile.*is a file"),
]


#: seconds a row may take (imports of torch / SB3 / transformers included)
LIMIT_S = 15


class RunAway(BaseException):
    """A bad input was not refused up front (not an Exception: the CLI must not swallow it)."""


def _runaway(signum: int, frame: object) -> None:
    raise RunAway(f"still running after {LIMIT_S} s: the input was not validated up front")


def _rewrite_policy(src: Path, dst: Path, change: Any) -> None:
    """``src`` with every tensor of its ``policy.pth`` replaced by ``change(tensor)``."""
    import io
    import zipfile

    with zipfile.ZipFile(src) as a:
        state = torch.load(io.BytesIO(a.read("policy.pth")), weights_only=True)
        buf = io.BytesIO()
        torch.save({k: change(v) for k, v in state.items()}, buf)
        with zipfile.ZipFile(dst, "w") as b:
            for name in a.namelist():
                b.writestr(name, buf.getvalue() if name == "policy.pth" else a.read(name))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The bad files the rows point at (and a few good checkpoints to misuse)."""
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "bad.yaml").write_text("env: CartPole-v1\nhyperparams: [1, 2\n")
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    (tmp / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81 env: x\n")
    (tmp / "afile").write_text("a file, not a folder\n")
    (tmp / "text.zip").write_text("this is not a zip\n")
    (tmp / "text.pt").write_text("this is not a checkpoint\n")
    (tmp / "empty").mkdir()
    (tmp / "choice").mkdir()
    (tmp / "choice" / "auto_choice.json").write_text('{"a run": "its own choice"}')
    (tmp / "scan").mkdir()
    (tmp / "scan" / "tasks.txt").write_text("IN: jump OUT: I_JUMP\n")  # an edited copy
    (tmp / "empty.pt").write_bytes(b"")
    (tmp / "empty.zip").write_bytes(b"")
    cartpole = asset_path("agents") / "dqn" / "CartPole-v1" / "CartPole-v1.zip"
    data = cartpole.read_bytes()
    os.mkfifo(tmp / "fifo.zip")
    (tmp / "device.zip").symlink_to("/dev/zero")
    _rewrite_policy(cartpole, tmp / "nan.zip", lambda v: torch.full_like(v, float("nan")))
    import zipfile

    with zipfile.ZipFile(cartpole) as a, zipfile.ZipFile(tmp / "no_optim.zip", "w") as b:
        for name in a.namelist():
            if name != "policy.optimizer.pth":
                b.writestr(name, a.read(name))
    _rewrite_policy(cartpole, tmp / "shape.zip", lambda v: torch.zeros(v.shape[0] + 3, *v.shape[1:]))
    (tmp / "trunc.zip").write_bytes(data[: len(data) // 2])
    torch.save({"format": "x", "path": Path("/etc")}, tmp / "pickle.pt")
    from sb3_contrib import QRDQN

    QRDQN("MlpPolicy", "CartPole-v1", buffer_size=10, policy_kwargs={"net_arch": [8], "n_quantiles": 5}).save(
        tmp / "qrdqn.zip"
    )
    from equirl.language.config import ModelConfig, PretrainConfig
    from equirl.language.train import build_model, save_checkpoint
    from equirl.vision.models import SmallCNN, save_cnn

    save_cnn(SmallCNN(in_channels=1, image_size=16, width=2, hidden=4), tmp / "vision_cnn.pt")
    blob = (tmp / "vision_cnn.pt").read_bytes()
    (tmp / "trunc.pt").write_bytes(blob[: len(blob) // 2])
    lcfg = PretrainConfig(model=ModelConfig(hidden=4, embedding=4))
    save_checkpoint(tmp / "lang.pt", build_model(lcfg.model), lcfg, {})
    return {
        "tmp": str(tmp),
        "bad_yaml": str(tmp / "bad.yaml"),
        "list_yaml": str(tmp / "list.yaml"),
        "binary": str(tmp / "binary.yaml"),
        "afile": str(tmp / "afile"),
        "text_zip": str(tmp / "text.zip"),
        "trunc_zip": str(tmp / "trunc.zip"),
        "text_pt": str(tmp / "text.pt"),
        "pickle_pt": str(tmp / "pickle.pt"),
        "empty_dir": str(tmp / "empty"),
        "fifo_zip": str(tmp / "fifo.zip"),
        "device_zip": str(tmp / "device.zip"),
        "nan_zip": str(tmp / "nan.zip"),
        "no_optim_zip": str(tmp / "no_optim.zip"),
        "shape_zip": str(tmp / "shape.zip"),
        "choice_dir": str(tmp / "choice"),
        "scan_dir": str(tmp / "scan"),
        "empty_pt": str(tmp / "empty.pt"),
        "empty_zip": str(tmp / "empty.zip"),
        "trunc_pt": str(tmp / "trunc.pt"),
        "qrdqn_zip": str(tmp / "qrdqn.zip"),
        "cartpole_zip": str(cartpole),
        "vision_pt": str(tmp / "vision_cnn.pt"),
        "lang_pt": str(tmp / "lang.pt"),
    }


def test_rows_are_distinct() -> None:
    assert len({r[0] for r in ROWS}) == len(ROWS)
    assert len({tuple(r[1]) for r in ROWS}) == len(ROWS)
    assert len(ROWS) >= 60


@pytest.mark.parametrize(("argv", "pattern"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_one_clean_line(
    argv: list[str],
    pattern: str,
    files: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # default outputs (bench-rl/, runs/...) would land here
    args = [a.format(**files) for a in argv]
    before = set(os.listdir(files["tmp"]))
    t0 = time.perf_counter()
    signal.signal(signal.SIGALRM, _runaway)
    signal.alarm(LIMIT_S)  # a row that starts real work fails instead of running for minutes
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    finally:
        signal.alarm(0)
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2, f"exit {code}: {err}"
    assert len(lines) == 1 and lines[0].strip(), f"not one line: {err!r}"
    assert "\x1b" not in err
    assert lines[0].startswith("error: "), lines[0]
    assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    assert set(os.listdir(files["tmp"])) == before, "a bad input left files behind"
    assert not any(tmp_path.iterdir()), "a bad input left files behind"
    assert seconds < LIMIT_S, f"took {seconds:.1f} s: validation must happen before any work"


def test_unreadable_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """chmod 000 blocks reads only for non-root users (root reads anything)."""
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not block reads")
    cfg = tmp_path / "locked.yaml"
    cfg.write_text("env: CartPole-v1\n")
    cfg.chmod(0)
    assert main(["pretrain", str(cfg)]) == 2
    assert re.fullmatch(
        r"error: cannot read config .*locked\.yaml: permission denied\n", capsys.readouterr().err
    )


def test_parser_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--agent", "a.zip", "--env", "CartPole-v1", "--episodes", "0"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        "error: argument --episodes: '0' must be >= 1 (see `equirl eval --help`)\n"
    )


def test_check_range_messages() -> None:
    from equirl.config import FieldError, check_range

    check_range("gamma", 1.0, ge=0, le=1)
    with pytest.raises(FieldError, match=r"^gamma = -3: must lie in \[0, 1\]$"):
        check_range("gamma", -3, ge=0, le=1)
    with pytest.raises(FieldError, match=r"^lr = nan: must be a finite number$"):
        check_range("lr", float("nan"), gt=0)
    with pytest.raises(FieldError, match=r"^lr = 0.0: must be > 0$"):
        check_range("lr", 0.0, gt=0)
    with pytest.raises(FieldError, match=r"^partial_fraction = 1.0: must lie in \[0, 1\)$"):
        check_range("partial_fraction", 1.0, ge=0, lt=1)
    with pytest.raises(FieldError, match=r"must be a number"):
        check_range("seed", True, ge=0)


def test_config_keys_are_dotted_paths() -> None:
    from equirl.config import FieldError
    from equirl.rl.config import load_rl_config

    with pytest.raises(FieldError) as exc:
        load_rl_config(RL_CONFIG, ["hyperparams.net_arch=[64, 0]"])
    assert exc.value.key == "hyperparams.net_arch[1]" and exc.value.value == 0
    with pytest.raises(FieldError, match=r"^eval\.final_episodes = 0: must lie in \[1, 100000\]$"):
        load_rl_config(RL_CONFIG, ["eval.final_episodes=0"])


def test_replay_buffer_larger_than_ram_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from gymnasium.spaces import Box

    from equirl.config import FieldError
    from equirl.rl import config as rl_config

    space = Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
    assert rl_config.check_buffer_memory(space, 1000) == 4 * 4 * 1000 * 2
    assert rl_config.check_buffer_memory(space, 1000, optimize_memory_usage=True) == 4 * 4 * 1000
    monkeypatch.setattr(rl_config, "total_ram_bytes", lambda: 1_000_000)
    with pytest.raises(
        FieldError,
        match=r"buffer_size = 100000: .*8\.0 GB for observations of shape \(4, 100, 100\).* has 0\.0 GB of RAM",
    ):
        rl_config.check_buffer_memory(Box(0, 255, shape=(4, 100, 100), dtype=np.uint8), 100_000)


def test_total_ram_is_read() -> None:
    from equirl.rl.config import total_ram_bytes

    ram = total_ram_bytes()
    assert ram is None or ram > 100_000_000


def test_json_never_holds_nan(tmp_path: Path) -> None:
    import json

    import numpy as np

    from equirl.utils.io import json_dumps

    text = json_dumps({"mean": np.float64("nan"), "rows": [1.0, float("-inf"), {"x": np.float32(2)}]})
    assert json.loads(text) == {"mean": None, "rows": [1.0, None, {"x": 2.0}]}
    assert "NaN" not in text and "Infinity" not in text


def test_last_resort_messages() -> None:
    import pickle
    import zipfile

    import yaml

    from equirl.cli import last_resort_message

    assert last_resort_message(PermissionError(13, "Permission denied", "/x/m.zip")) == (
        "permission denied: /x/m.zip (unreadable or read-only)"
    )
    assert (
        last_resort_message(IsADirectoryError(21, "Is a directory", "/x")) == "is a directory, not a file: /x"
    )
    assert last_resort_message(NotADirectoryError(20, "n", "/f/x")) == "a folder in this path is a file: /f/x"
    assert "corrupt zip" in str(last_resort_message(zipfile.BadZipFile("File is not a zip file")))
    assert "truncated" in str(last_resort_message(EOFError("Ran out of input")))
    assert "UTF-8" in str(
        last_resort_message(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))
    )
    assert "malformed YAML" in str(last_resort_message(yaml.YAMLError("bad")))
    long = RuntimeError(
        "Weights only load failed. \x1b[1mdo this\x1b[0m\n\tWeightsUnpickler error: Unsupported global: GLOBAL os.system was not allowed\n\nmore"
    )
    msg = last_resort_message(long)
    assert msg is not None and "\n" not in msg and "\x1b" not in msg and "os.system" in msg
    assert "checkpoint" in str(last_resort_message(pickle.UnpicklingError("invalid load key, 'x'.")))
    assert last_resort_message(RuntimeError("a bug")) is None  # bugs keep their traceback
    assert last_resort_message(KeyError("k")) is None


def test_agent_zip_algorithm_is_read_without_unpickling(files: dict[str, str]) -> None:
    from equirl.rl.zipinfo import inspect_agent_zip

    assert inspect_agent_zip(files["cartpole_zip"]).algo == "dqn"
    assert inspect_agent_zip(files["cartpole_zip"]).obs_shape == (4,)
    assert inspect_agent_zip(files["qrdqn_zip"]).algo == "qrdqn"
