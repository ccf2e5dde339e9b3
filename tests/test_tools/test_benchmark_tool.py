"""The benchmark tool runs end to end (tiny settings) and writes its table and plot."""
from helpers import run_tool


def test_benchmark_quick_run_writes_report(tmp_path):
    out = tmp_path / 'benchmark.md'
    run_tool('analysis/benchmark.py', '--models', 'DualToken-ViT-T', 'ResNet-18',
             '--repeats', '1', '--warmup', '0', '--batch', '2', '--threads', '1',
             '--skip-extras', '--out', str(out), cwd=str(tmp_path), timeout=900)
    text = out.read_text()
    for row in ('| DualToken-ViT-T |', '| ResNet-18 |', '| DualToken-ViT-T (budget) |'):
        assert row in text
    assert 'fp32 GEMM peak' in text and 'blas' in text and 'onednn' in text
    assert '## Targets (issue 7)' in text
    assert '- T at 800x1333 over pixel scaling' in text  # with and without the token budget
    assert (tmp_path / 'benchmark.png').stat().st_size > 10000
