"""tools/analysis/collect_ablations.py on two real (tiny) runs: the S baseline and the model
without global tokens, trained by tools/train.py for one epoch on the tiny ImageNet layout."""
import os
import re
import subprocess
import sys

import pytest
from helpers import REPO_ROOT, config, run_tool, scalars

pytestmark = pytest.mark.slow  # runs the ablation tool as a process

SHORT = [
    'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'train_dataloader.dataset.indices=4',
    'train_dataloader.batch_size=2', 'val_dataloader.dataset.indices=4'
]
RUNS = {  # ablation config name -> backbone override of the tiny S config
    'dualtoken_s_baseline_in1k': [],
    'dualtoken_s_no-tokens_in1k': ['model.backbone.global_tokens=none'],
}


@pytest.fixture(scope='module')
def ablation_runs(tiny_workdir):
    """work_dirs/<ablation name> of the two runs, as dist_train.sh would name them."""
    work_dirs = tiny_workdir / 'ablation_work_dirs'
    for name, override in RUNS.items():
        run_tool(
            'train.py',
            config('tiny/dualtoken_s_in1k_tiny.py'),
            '--work-dir',
            str(work_dirs / name),
            '--cfg-options',
            *SHORT,
            *override,
            cwd=str(tiny_workdir))
    return work_dirs


def logged_top1(work_dir) -> float:
    values = [
        entry['accuracy/top1'] for entry in scalars(str(work_dir)) if 'accuracy/top1' in entry
    ]
    assert values
    return values[-1]


def table_row(text: str, label: str) -> list:
    rows = [line for line in text.splitlines() if line.startswith(f'| {label} |')]
    assert rows, f'no row {label!r} in\n{text}'
    return [cell.strip() for cell in rows[0].strip('|').split('|')]


def test_collects_the_runs_top1_beside_the_papers(ablation_runs, tmp_path):
    out = tmp_path / 'ablations.md'
    proc = run_tool(
        'analysis/collect_ablations.py', str(ablation_runs), '--out', str(out), cwd=str(tmp_path))
    text = out.read_text()
    assert text in proc.stdout
    base = logged_top1(ablation_runs / 'dualtoken_s_baseline_in1k')
    none = logged_top1(ablation_runs / 'dualtoken_s_no-tokens_in1k')
    tables = re.split(r'^## ', text, flags=re.M)[1:]
    assert [t.split(':')[0] for t in tables] == [f'Table {n}' for n in (5, 6, 7, 8, 9)]
    # the baseline is a row of Tables 5-8, with the paper's 79.4 beside ours
    for table, label in zip(tables[:4],
                            ('MLP', 'position-aware (weighted sum)', '7x7', 'Conv Encoder')):
        assert table_row(table, label)[2:] == [f'{base:.2f}', '79.40']
    assert table_row(tables[1], 'none (our extra row)')[2:] == [f'{none:.2f}', '-']
    assert table_row(tables[1], 'normal (MHSA-fused, Fig. 3(c))')[2] == 'not run'
    assert table_row(tables[1], 'position-aware (weighted sum) - none (our extra row)')[1] \
        == f'{base - none:+.2f}'
    # a pair with a run missing has no delta of ours, but the paper's
    assert table_row(tables[3], 'Conv Encoder - window self-attention')[1:3] == ['-', '+0.8']
    assert table_row(tables[4], 'step-wise')[2] == 'not run'


def test_a_mislabelled_run_is_refused(ablation_runs, tmp_path):
    """The baseline's run under the 5x5 config's name: its saved config has a 7x7 grid."""
    work_dirs = tmp_path / 'work_dirs'
    work_dirs.mkdir()
    os.symlink(ablation_runs / 'dualtoken_s_baseline_in1k', work_dirs / 'dualtoken_s_grid5_in1k')
    proc = subprocess.run([
        sys.executable,
        os.path.join(REPO_ROOT, 'tools', 'analysis', 'collect_ablations.py'),
        str(work_dirs)
    ],
                          capture_output=True,
                          text=True,
                          cwd=str(tmp_path))
    assert proc.returncode == 1
    assert re.search(r"error: .*dualtoken_s_grid5_in1k trained grid_size=\(7, 7\) "
                     r"\(configs/ablations/dualtoken_s_grid5_in1k.py: \(5, 5\)\)", proc.stderr), \
        proc.stderr[-2000:]
